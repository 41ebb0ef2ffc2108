"""``gatekeeper audit ...``: export, verify, checkpoint, prune, keygen.

Mounted by the main CLI with ``app.add_typer(audit_app, name="audit")``.

Exit codes: **0** done (verify: the trail or file verifies), **1** verification failed (the
message names the first record changed, removed or inserted), **2** error (configuration,
database unreachable, unreadable file).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from gatekeeper.errors import GatekeeperError

__all__ = ["audit_app"]

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2

audit_app = typer.Typer(
    help="The audit trail: export it, verify it (online or an exported file), prune it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings() -> Any:
    from gatekeeper.config import load_settings

    try:
        return load_settings()
    except GatekeeperError as exc:
        _fail(exc.render())


def _setting(settings: Any, name: str, default: Any = None) -> Any:
    # Audit settings are read by name so this command works before and after the
    # composition root learns them (see the integration notes of issue 6).
    value = getattr(settings, name, None)
    return default if value is None else value


def _open(settings: Any, *, signing: bool) -> Any:
    from gatekeeper.audit import open_audit_log

    key_file = _setting(settings, "audit_signing_key_file") if signing else None
    try:
        audit = open_audit_log(
            settings.database_url,
            signing_key_file=Path(key_file) if key_file else None,
            checkpoint_every=_setting(settings, "audit_checkpoint_every", 1000),
        )
        audit.migrate()
    except GatekeeperError as exc:
        _fail(exc.render())
    return audit


def _public_key(settings: Any, option: Path | None) -> Any:
    from gatekeeper.audit.chain import load_public_key

    candidates = [option, _setting(settings, "audit_public_key_file"),
                  _setting(settings, "audit_signing_key_file")]
    for candidate in candidates:
        if candidate:
            try:
                return load_public_key(Path(candidate))
            except GatekeeperError as exc:
                _fail(exc.render())
    return None


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"{option}: {value!r} is not an ISO 8601 time (2026-11-24 or 2026-11-24T12:00:00Z)")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@audit_app.command("export")
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write")],
    output_format: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    since: Annotated[str | None, typer.Option(help="Records at or after this time")] = None,
    until: Annotated[str | None, typer.Option(help="Records before this time")] = None,
    ticket_id: Annotated[str | None, typer.Option("--ticket-id")] = None,
    plan_id: Annotated[str | None, typer.Option("--plan-id")] = None,
    intent_id: Annotated[str | None, typer.Option("--intent-id")] = None,
    deploy_id: Annotated[str | None, typer.Option("--deploy-id")] = None,
    namespace: Annotated[str | None, typer.Option()] = None,
    verdict: Annotated[str | None, typer.Option(help="allow, warn or deny")] = None,
    image_digest: Annotated[str | None, typer.Option("--image-digest")] = None,
) -> None:
    """Export decisions, ending with the signed checkpoint that covers them."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from gatekeeper.audit.export import iter_export, plan_export
    from gatekeeper.domain import DecisionQuery, Verdict, parse_digest

    if output_format not in ("jsonl", "csv"):
        _fail(f"--format must be jsonl or csv, not {output_format!r}")
    try:
        query = DecisionQuery(
            since=_parse_time(since, "--since"), until=_parse_time(until, "--until"),
            ticket_id=ticket_id, plan_id=plan_id, intent_id=intent_id, deploy_id=deploy_id,
            namespace=namespace, verdict=Verdict(verdict) if verdict else None,
            image_digest=str(parse_digest(image_digest, field="--image-digest"))
            if image_digest else None,
        )
    except ValueError:
        _fail(f"--verdict must be allow, warn or deny, not {verdict!r}")
    except GatekeeperError as exc:
        _fail(exc.render())
    settings = _settings()
    audit = _open(settings, signing=True)
    temporary = output.with_name(output.name + ".partial")
    try:
        plan = plan_export(audit, query)
        with Progress(
            TextColumn("exporting"), BarColumn(), MofNCompleteColumn(),
            console=_stderr_console(), transient=True,
        ) as progress, temporary.open("w", encoding="utf-8", newline="") as handle:
            task = progress.add_task("export", total=plan.entries)
            for chunk in iter_export(
                audit, plan, output_format,  # type: ignore[arg-type]
                progress=lambda n: progress.advance(task, n),
            ):
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(output)
    except GatekeeperError as exc:
        temporary.unlink(missing_ok=True)
        _fail(exc.render())
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        _fail(f"cannot write {output}: {exc.strerror}")
    finally:
        audit.close()
    if plan.first_seq is None:
        typer.echo(
            f"exported 0 records to {output}; it ends with the checkpoint at record "
            f"{plan.checkpoint.seq} (key {plan.checkpoint.key_id})"
        )
        return
    typer.echo(
        f"exported records {plan.first_seq}..{plan.end_seq} ({plan.entries} chain entries) to "
        f"{output}; it ends with the checkpoint at record {plan.checkpoint.seq} "
        f"(key {plan.checkpoint.key_id}); verify offline with: "
        f"gatekeeper audit verify --file {output} --public-key PUBLIC_KEY"
    )


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@audit_app.command("verify")
def verify(
    since: Annotated[str | None, typer.Option(help="Start at the checkpoint before it")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Verify an export, offline")] = None,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="Ed25519 public key (PEM) of checkpoints")
    ] = None,
    witness: Annotated[str | None, typer.Option(
        "--witness", help="Check against the witness too: s3://bucket/prefix/ or file:///path "
        "(default: GATEKEEPER_AUDIT_WITNESS)",
    )] = None,
) -> None:
    """Recompute the hash chain and check the signed checkpoints. Exit 0 ok, 1 broken."""
    from gatekeeper.audit.verify import ChainBrokenError

    if file is not None:
        from gatekeeper.audit.chain import load_public_key
        from gatekeeper.audit.export import verify_export_file

        if public_key is None:
            _fail("verifying an export needs the public key of its checkpoints: --public-key FILE")
        try:
            key = load_public_key(public_key)
            report = verify_export_file(file, key)
        except ChainBrokenError as exc:
            _fail(f"export verification FAILED: {exc.message}", EXIT_FAILED)
        except GatekeeperError as exc:
            _fail(exc.render())
        except OSError as exc:
            _fail(f"cannot read {file}: {exc.strerror}")
        typer.echo(report.summary())
        return
    from gatekeeper.audit.verify import verify_database

    settings = _settings()
    key = _public_key(settings, public_key)
    started = _parse_time(since, "--since")
    audit = _open(settings, signing=False)
    try:
        witnessed = None
        witness_uri = witness or _setting(settings, "audit_witness")
        if witness_uri:
            from gatekeeper.audit.witness import open_witness

            opened = open_witness(
                witness_uri, endpoint_url=_setting(settings, "audit_witness_endpoint_url"),
                retention_days=_setting(settings, "audit_witness_retention_days", 400),
            )
            witnessed = opened.read()
        result = verify_database(
            audit.engine, key, since=started, witnessed=witnessed,
            witness_name=witness_uri or "the witness",
            checkpoint_every=_setting(settings, "audit_checkpoint_every", 1000),
            checkpoint_interval=_setting(settings, "audit_checkpoint_interval_seconds", 60.0),
        )
    except ChainBrokenError as exc:
        _fail(f"audit verification FAILED: {exc.message}", EXIT_FAILED)
    except GatekeeperError as exc:
        _fail(exc.render())
    except Exception as exc:  # a database error: say which, never a traceback
        _fail(f"cannot read the audit store: {type(exc).__name__}: {exc}")
    finally:
        audit.close()
    for note in result.notes:
        typer.echo(f"warning: {note}", err=True)
    typer.echo(result.summary())
    from gatekeeper.audit.spool import DurableSpool, count_quarantined

    quarantined = count_quarantined(settings.audit_spool_dir)
    if quarantined:
        # decisions that were answered but the store refused: the trail is not complete
        _fail(
            f"audit verification FAILED: {quarantined} spooled decisions were refused by the "
            f"audit store and are kept in "
            f"{settings.audit_spool_dir / DurableSpool.QUARANTINE_NAME}",
            EXIT_FAILED,
        )


@audit_app.command("checkpoint")
def checkpoint() -> None:
    """Sign a checkpoint of the current head now."""
    audit = _open(_settings(), signing=True)
    try:
        written = audit.write_checkpoint()
    except GatekeeperError as exc:
        _fail(exc.render())
    finally:
        audit.close()
    if written is None:
        typer.echo("the trail is empty: nothing to sign")
        return
    typer.echo(f"checkpoint at record {written.seq} signed (key {written.key_id})")


@audit_app.command("prune")
def prune(
    older_than_days: Annotated[
        int | None, typer.Option("--older-than-days", min=1, help="Default: audit_retention_days")
    ] = None,
) -> None:
    """Delete records older than the retention age, up to a signed checkpoint."""
    settings = _settings()
    days = older_than_days or _setting(settings, "audit_retention_days")
    if not days:
        _fail("no retention age: pass --older-than-days N or set GATEKEEPER_AUDIT_RETENTION_DAYS")
    audit = _open(settings, signing=True)
    try:
        deleted = audit.prune(timedelta(days=int(days)))
    except GatekeeperError as exc:
        _fail(exc.render())
    finally:
        audit.close()
    typer.echo(f"pruned {deleted} records older than {days} days (behind a signed checkpoint)")


@audit_app.command("keygen")
def keygen(
    output: Annotated[Path, typer.Option("--output", "-o", help="Private key file (PEM)")],
) -> None:
    """Create an Ed25519 checkpoint signing key (and OUTPUT.pub with its public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gatekeeper.audit.chain import key_id_of

    if output.exists():
        _fail(f"{output} exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private)
        output.with_name(output.name + ".pub").write_bytes(public)
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror}")
    typer.echo(
        f"signing key {output} (key id {key_id_of(key.public_key())}); public key "
        f"{output.name}.pub"
    )
