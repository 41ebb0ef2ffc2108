"""``gatekeeper audit ...``: export, verify, checkpoint, prune, keygen.

Mounted by the main CLI with ``app.add_typer(audit_app, name="audit")``.

Exit codes: **0** done (verify: the trail or file verifies), **1** verification failed (the
message names the first record changed, removed or inserted), **2** error (configuration,
database unreachable, unreadable file).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from gatekeeper.cli.common import (
    EXIT_FAILED,
    ServerOption,
    command_group,
    fail,
    load_settings,
    parse_time,
    remote,
    remote_download,
    waiting,
)
from gatekeeper.cli.stores import open_audit, write_signing_key

__all__ = ["audit_app"]

audit_app = command_group(
    "The audit trail: export it, verify it (online or an exported file), prune it."
)

TimeOption = Annotated[
    str | None, typer.Option(metavar="TIME", help="7d, 12h, a date or an RFC 3339 instant")
]


@audit_app.command("export")
def export(
    file: Annotated[Path, typer.Option("--file", metavar="FILE", help="File to write")],
    file_format: Annotated[
        str, typer.Option("--format", metavar="[jsonl|csv|opa]",
                          help="File format (opa: OPA decision-log events)")
    ] = "jsonl",
    since: TimeOption = None,
    until: TimeOption = None,
    ticket_id: Annotated[str | None, typer.Option("--ticket-id", metavar="ID")] = None,
    plan_id: Annotated[str | None, typer.Option("--plan-id", metavar="ID")] = None,
    intent_id: Annotated[str | None, typer.Option("--intent-id", metavar="ID")] = None,
    deploy_id: Annotated[str | None, typer.Option("--deploy-id", metavar="ID")] = None,
    namespace: Annotated[str | None, typer.Option()] = None,
    verdict: Annotated[
        str | None, typer.Option(metavar="[allow|warn|deny]", help="Only this verdict")
    ] = None,
    image_digest: Annotated[str | None, typer.Option("--image-digest", metavar="DIGEST")] = None,
    server: ServerOption = None,
) -> None:
    """Export decisions, ending with the signed checkpoint that covers them."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from gatekeeper.domain import DecisionQuery, Verdict, parse_digest
    from gatekeeper.domain.wording import counted

    if file_format not in ("jsonl", "csv", "opa"):
        fail(f"--format must be jsonl, csv or opa, not {file_format!r}")
    if verdict is not None and verdict not in {v.value for v in Verdict}:
        fail(f"--verdict must be allow, warn or deny, not {verdict!r}")
    now = datetime.now(UTC)
    query = DecisionQuery(
        since=parse_time(since, option="--since", now=now) if since else None,
        until=parse_time(until, option="--until", now=now) if until else None,
        ticket_id=ticket_id, plan_id=plan_id, intent_id=intent_id, deploy_id=deploy_id,
        namespace=namespace, verdict=Verdict(verdict) if verdict else None,
        image_digest=str(parse_digest(image_digest, field="--image-digest"))
        if image_digest else None,
    )
    if server:
        _export_remote(server, query, file, file_format)
        return
    trail = open_audit(load_settings(), signing=True)
    temporary = file.with_name(file.name + ".partial")
    try:
        plan = trail.plan_export(query)
        with Progress(
            TextColumn("exporting"), BarColumn(), MofNCompleteColumn(),
            console=_stderr_console(), transient=True,
        ) as progress, temporary.open("w", encoding="utf-8", newline="") as handle:
            task = progress.add_task("export", total=plan.entries)
            for chunk in trail.export(plan, file_format,
                                      progress=lambda n: progress.advance(task, n)):
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(file)
    except OSError as exc:
        fail(f"cannot write {file}: {exc.strerror}")
    finally:
        temporary.unlink(missing_ok=True)
        trail.close()
    if plan.first_seq is None:
        typer.echo(
            f"exported 0 records to {file}; it ends with the checkpoint at record "
            f"{plan.checkpoint.seq} (key {plan.checkpoint.key_id})"
        )
        return
    if file_format == "opa":
        typer.echo(
            f"exported the matching records of {plan.first_seq}..{plan.end_seq} to {file} as "
            "OPA decision-log events (chain fields in each; the jsonl export is the one "
            "verified offline)"
        )
        return
    typer.echo(
        f"exported records {plan.first_seq}..{plan.end_seq} "
        f"({counted(plan.entries, 'chain entry', 'chain entries')}) to "
        f"{file}; it ends with the checkpoint at record {plan.checkpoint.seq} "
        f"(key {plan.checkpoint.key_id}); verify offline with: "
        f"gatekeeper audit verify --file {file} --public-key PUBLIC_KEY"
    )


def _export_remote(server: str, query: Any, file: Path, file_format: str) -> None:
    """``GET /v1/audit/export`` with the same filters, into ``file``."""
    params: dict[str, str] = {"format": file_format}
    for name in ("since", "until"):
        value = getattr(query, name)
        if value is not None:
            params[name] = value.isoformat()
    for name in ("ticket_id", "plan_id", "intent_id", "deploy_id", "namespace", "image_digest"):
        if getattr(query, name) is not None:
            params[name] = str(getattr(query, name))
    if query.verdict is not None:
        params["verdict"] = query.verdict.value
    headers = remote_download(server, "/v1/audit/export", file, params=params)
    typer.echo(
        f"exported to {file}; it ends with the checkpoint at record "
        f"{headers.get('x-gatekeeper-checkpoint-seq', '?')}; verify offline with: "
        f"gatekeeper audit verify --file {file} --public-key PUBLIC_KEY"
    )


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@audit_app.command("verify")
def verify(
    since: Annotated[
        str | None,
        typer.Option(metavar="TIME", help="Start at the checkpoint before it (7d, date, RFC 3339)"),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", metavar="FILE", help="Verify an export, offline")
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", metavar="FILE", help="Ed25519 public key of checkpoints"),
    ] = None,
    witness: Annotated[str | None, typer.Option(
        "--witness", metavar="URI", help="Check against the witness too: s3://bucket/prefix/ or "
        "file:///path (default: GATEKEEPER_AUDIT_WITNESS)",
    )] = None,
    server: ServerOption = None,
) -> None:
    """Recompute the hash chain and check the signed checkpoints. Exit 0 ok, 1 broken."""
    if server and file is None:
        params = {"since": parse_time(since, option="--since").isoformat()} if since else {}
        answer = remote("GET", server, "/v1/audit/verify", params=params, timeout=600)
        for note in answer.get("notes") or []:
            typer.echo(f"warning: {note}", err=True)
        if not answer.get("verified"):
            fail(str(answer.get("message")), EXIT_FAILED)
        typer.echo(str(answer.get("message")))
        return

    settings = load_settings()
    trail = open_audit(settings, signing=False)
    try:
        if file is not None:
            # Without --public-key: the configured key, or the embedded default's generated one.
            chosen = trail.export_public_key(public_key)
            with waiting(f"verifying {file}"):
                report = trail.verify_export_file(file, chosen)
            typer.echo(report.summary())
            return
        started = parse_time(since, option="--since") if since else None
        witness_uri = witness or settings.audit_witness
        with waiting("verifying the audit trail"):
            result = trail.verify(since=started, public_key=public_key, witness=witness_uri)
    finally:
        trail.close()
    for note in result.report.notes:
        typer.echo(f"warning: {note}", err=True)
    typer.echo(result.report.summary())
    if result.quarantined:
        # decisions that were answered but the store refused: the trail is not complete
        fail(
            f"audit verification FAILED: {result.quarantined} spooled decisions were refused "
            f"by the audit store and are kept in {result.quarantine_file}",
            EXIT_FAILED,
        )


@audit_app.command("checkpoint")
def checkpoint() -> None:
    """Sign a checkpoint of the current head now."""
    trail = open_audit(load_settings(), signing=True)
    try:
        written = trail.checkpoint()
    finally:
        trail.close()
    if written is None:
        typer.echo("the trail is empty: nothing to sign")
        return
    typer.echo(f"checkpoint at record {written.seq} signed (key {written.key_id})")


@audit_app.command("prune")
def prune(
    older_than_days: Annotated[
        int | None,
        typer.Option("--older-than-days", metavar="DAYS", min=1,
                     help="Default: audit_retention_days"),
    ] = None,
) -> None:
    """Delete records older than the retention age, up to a signed checkpoint."""
    from gatekeeper.domain.wording import counted

    settings = load_settings()
    days = older_than_days or settings.audit_retention_days
    trail = open_audit(settings, signing=True)
    try:
        deleted = trail.prune(days)
    finally:
        trail.close()
    typer.echo(
        f"pruned {counted(deleted, 'record')} older than {counted(days or 0, 'day')} "
        "(behind a signed checkpoint)"
    )


@audit_app.command("keygen")
def keygen(
    file: Annotated[
        Path, typer.Option("--file", metavar="FILE", help="Private key file (PEM)")
    ],
) -> None:
    """Create an Ed25519 checkpoint signing key (and FILE.pub with its public key)."""
    if file.exists():
        fail(f"{file} exists; refusing to overwrite a signing key")
    key_id = write_signing_key(file)
    typer.echo(f"signing key {file} (key id {key_id}); public key {file.name}.pub")
