"""``gatekeeper policy ...``: the policy authoring kit and lifecycle commands.

Mounted by the main CLI with ``app.add_typer(policy_app, name="policy")``. Exit codes: 0 success,
1 the thing checked failed (a failing test, a refused candidate, new denials with
``--fail-on-new-denials``, an unknown exception), 2 error (bad input, configuration, store).
"""

from __future__ import annotations

import getpass
import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from gatekeeper.config import Settings, load_settings
from gatekeeper.errors import GatekeeperError, InvalidInputError

__all__ = ["parse_since", "policy_app"]

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2

policy_app = typer.Typer(
    help="Write, test, replay and activate policies; manage exceptions.",
    no_args_is_help=True,
)
exceptions_app = typer.Typer(help="Time-boxed exceptions (waivers).", no_args_is_help=True)
policy_app.add_typer(exceptions_app, name="exceptions")

_DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except GatekeeperError as exc:
        _fail(exc.render())


def _opa_binary(settings: Settings) -> str:
    from gatekeeper.wiring import find_opa_binary

    return find_opa_binary(settings)


def parse_since(text: str, *, now: datetime, field: str = "since") -> datetime:
    """``7d``, ``12h``, ``30m`` (before ``now``) or an RFC 3339 instant."""
    match = _DURATION_RE.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInputError(
            f"{field}: {text!r} is neither a duration (7d, 12h) nor an RFC 3339 instant",
            field=field,
        ) from exc
    if parsed.tzinfo is None:
        raise InvalidInputError(f"{field}: {text!r} has no time zone", field=field)
    return parsed.astimezone(UTC)


def _store(settings: Settings) -> Any:
    from gatekeeper.audit import create_database_engine
    from gatekeeper.policy.store import SqlPolicyStore

    store = SqlPolicyStore(create_database_engine(settings.database_url))
    store.migrate()
    return store


def _actor(actor: str | None) -> str:
    return actor or f"cli:{getpass.getuser()}"


@policy_app.command("test")
def test_policies(
    policies: Annotated[Path, typer.Option(help="Policy directory")] = Path("policies"),
    tests: Annotated[Path, typer.Option(help="Test directory")] = Path("rego-tests"),
    min_coverage: Annotated[float, typer.Option(help="Fail below this coverage %")] = 0.0,
) -> None:
    """Run opa test (with coverage) over the policies and their tests. Exit 1 on a failure."""
    settings = _settings()
    try:
        binary = _opa_binary(settings)
    except GatekeeperError as exc:
        _fail(exc.render())
    roots = [str(policies), str(tests)]
    for root in (policies, tests):
        if not root.is_dir():
            _fail(f"{root} is not a directory")

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - fixed argv, no shell
            [binary, "test", *arguments, *roots], capture_output=True, text=True, check=False,
            timeout=300,
        )

    verbose = run("--format", "json")
    try:
        outcomes = json.loads(verbose.stdout) if verbose.stdout.strip() else []
    except ValueError:
        _fail(f"opa test failed: {(verbose.stderr or verbose.stdout).strip()[:2000]}")
    if not isinstance(outcomes, list):
        _fail(f"opa test failed: {verbose.stdout.strip()[:2000]}")
    if verbose.returncode != 0 and not any(o.get("fail") or o.get("error") for o in outcomes):
        # Nothing ran or nothing failed, yet opa failed: parse or compile errors. Say them.
        from gatekeeper.policy.checks import parse_check_errors

        problems = parse_check_errors(verbose.stdout, verbose.stderr, "test")
        for problem in problems:
            typer.echo(problem.render(), err=True)
        _fail(f"opa test failed: {len(problems)} error(s) before any test ran", EXIT_FAILED)
    if not outcomes:
        _fail(f"opa test found no tests in {policies} and {tests}", EXIT_FAILED)
    failed = 0
    for outcome in outcomes:
        name = f"{outcome.get('package')}.{outcome.get('name')}"
        location = outcome.get("location") or {}
        if outcome.get("fail") or outcome.get("error"):
            failed += 1
            error = outcome.get("error")
            detail = f": {error.get('message')}" if isinstance(error, dict) else ""
            typer.echo(f"FAIL {name} ({location.get('file')}:{location.get('row')}){detail}")
    coverage_run = run("--coverage", "--format", "json")
    try:
        coverage = float(json.loads(coverage_run.stdout).get("coverage", 0.0))
    except (ValueError, AttributeError):
        coverage = 0.0
    typer.echo(f"PASS: {len(outcomes) - failed}/{len(outcomes)}")
    typer.echo(f"coverage: {coverage:.2f}%")
    if failed or verbose.returncode != 0:
        raise typer.Exit(EXIT_FAILED)
    if coverage < min_coverage:
        _fail(f"coverage {coverage:.2f}% is below --min-coverage {min_coverage:.2f}%", EXIT_FAILED)


@policy_app.command("input")
def print_input(
    images: Annotated[list[str], typer.Argument(help="Image references")],
    environment: Annotated[str | None, typer.Option(help="Target environment")] = None,
    namespace: Annotated[str | None, typer.Option(help="Target namespace")] = None,
    ticket_id: Annotated[str | None, typer.Option("--ticket-id")] = None,
    plan_id: Annotated[str | None, typer.Option("--plan-id")] = None,
    intent_id: Annotated[str | None, typer.Option("--intent-id")] = None,
    deploy_id: Annotated[str | None, typer.Option("--deploy-id")] = None,
    evaluated_at: Annotated[
        str | None, typer.Option(help="RFC 3339 instant used as 'now' (default: now)")
    ] = None,
) -> None:
    """Print the exact input document the gate would build for IMAGES (for writing tests)."""
    from pydantic import ValidationError

    from gatekeeper.api.models import EvaluationBody
    from gatekeeper.api.routes import parse_evaluation_body
    from gatekeeper.domain import EvidenceContext, build_policy_input
    from gatekeeper.wiring import build_container

    settings = _settings()
    body = {
        "images": images, "environment": environment, "namespace": namespace,
        "ticket": {"intent_id": intent_id, "plan_id": plan_id, "ticket_id": ticket_id,
                   "deploy_id": deploy_id},
    }
    try:
        parsed = EvaluationBody.model_validate(body)
    except ValidationError as exc:
        _fail(str(exc.errors()[0]["msg"]))
    try:
        now = (
            parse_since(evaluated_at, now=datetime.now(UTC), field="evaluated_at")
            if evaluated_at else datetime.now(UTC)
        )
        request = parse_evaluation_body(
            parsed, default_environment=settings.default_environment,
            max_images=settings.max_images_per_request, mode=settings.pipeline_mode,
        )
        container = build_container(settings)
        context = EvidenceContext(environment=request.environment, namespace=request.namespace)
        resolver = getattr(container, "digest_resolver", None)
        if resolver is None and settings.resolve_digests:
            resolver = getattr(container, "registry", None)
        gathered = []
        # The same steps as EvaluationService._gather: a failure becomes the section the policy
        # sees ({"status": "error", "reason": ...}), never an exception.
        for reference in request.images:
            digest = reference.digest
            if digest is None and resolver is not None:
                try:
                    digest = resolver.resolve(reference, context)
                except GatekeeperError as exc:
                    typer.echo(f"warning: digest not resolved: {exc.message}", err=True)
            evidence: dict[str, Any] = {}
            for collector in container.collectors:
                try:
                    evidence[collector.name] = dict(collector.collect(reference, digest, context))
                except GatekeeperError as exc:
                    evidence[collector.name] = {"status": "error", "reason": exc.message}
            gathered.append((reference, digest, evidence))
        container.stop()
        document = build_policy_input(request, gathered, now)
    except GatekeeperError as exc:
        field = getattr(exc, "field", None)
        _fail(f"{field}: {exc.message}" if field else exc.render())
    typer.echo(json.dumps(document, indent=2, sort_keys=True))


def _candidate(directory: Path, tests: Path | None) -> Any:
    from gatekeeper.policy.bundle import PolicyFiles
    from gatekeeper.policy.lifecycle import load_candidate_path

    if tests is not None:
        return PolicyFiles.from_directory(directory, tests)
    return load_candidate_path(directory)


@policy_app.command("check")
def check_candidate(
    directory: Annotated[Path, typer.Argument(help="Candidate: policy dir, dir with policies/ "
                                              "and tests/, or a .tar.gz")],
    tests: Annotated[Path | None, typer.Option(help="Tests of a bare policy dir")] = None,
) -> None:
    """Run the activation checks (opa check --strict, opa fmt, opa test). Exit 1 if refused."""
    from gatekeeper.policy.checks import OpaCandidateChecker

    settings = _settings()
    try:
        files = _candidate(directory, tests)
        report = OpaCandidateChecker(_opa_binary(settings)).check(files)
    except GatekeeperError as exc:
        _fail(exc.render())
    typer.echo(f"revision {files.revision_id}")
    for problem in report.problems:
        typer.echo(problem.render())
    typer.echo(("accepted: " if report.passed else "refused: ") + report.summary())
    raise typer.Exit(EXIT_OK if report.passed else EXIT_FAILED)


@policy_app.command("replay")
def replay(
    directory: Annotated[Path, typer.Argument(help="Candidate: policy dir, dir with policies/ "
                                              "and tests/, or a .tar.gz")],
    tests: Annotated[Path | None, typer.Option(help="Tests of a bare policy dir")] = None,
    since: Annotated[str, typer.Option(help="7d, 12h or an RFC 3339 instant")] = "7d",
    until: Annotated[str | None, typer.Option(help="RFC 3339 instant (default: now)")] = None,
    output: Annotated[str, typer.Option(help="table or json")] = "table",
    fail_on_new_denials: Annotated[bool, typer.Option("--fail-on-new-denials")] = False,
) -> None:
    """Re-evaluate recorded decisions against a candidate and print the impact."""
    from gatekeeper.audit import create_database_engine
    from gatekeeper.policy.exceptions import exceptions_document
    from gatekeeper.policy.replay import SqlDecisionHistory, replay_decisions

    if output not in ("table", "json"):
        _fail(f"--output must be table or json, not {output!r}")
    settings = _settings()
    now = datetime.now(UTC)
    try:
        start = parse_since(since, now=now)
        end = parse_since(until, now=now, field="until") if until else now
        files = _candidate(directory, tests)
        engine = create_database_engine(settings.database_url)
        store = _store(settings)
        report = replay_decisions(
            files,
            SqlDecisionHistory(engine).decisions(start, end),
            opa_binary=_opa_binary(settings),
            exceptions=exceptions_document(store.list_exceptions()),
            since=start,
            until=end,
        )
    except GatekeeperError as exc:
        _fail(exc.render())
    document = report.as_dict()
    if output == "json":
        typer.echo(json.dumps(document, indent=2, sort_keys=True))
    else:
        typer.echo(f"revision  {report.revision_id}")
        typer.echo(f"window    {document['since']} .. {document['until']}")
        for change in document["changes"]:
            typer.echo(
                f"decision  {change['decision_id']}  {change['old_verdict']} -> "
                f"{change['new_verdict']}  ticket {change['ticket_id'] or '-'}"
            )
            for sign, key in (("+", "violations_added"), ("-", "violations_removed")):
                for item in change[key]:
                    where = f" {item['image']}" if item.get("image") else ""
                    typer.echo(f"  {sign} [{item['policy']}]{where}: {item['message']}")
        typer.echo(report.summary)
    if fail_on_new_denials and report.newly_denied:
        raise typer.Exit(EXIT_FAILED)


# -- exceptions ----------------------------------------------------------------------------


def _print_exception(document: dict[str, Any]) -> None:
    scope = ", ".join(
        f"{key} {document[key]}" for key in ("environment", "namespace") if document.get(key)
    )
    typer.echo(
        f"{document['id']}  {document['status']:<8} {','.join(document['policies'])}  "
        f"{' '.join(document['images'])}  ({scope}; ticket {document['ticket_id']}, "
        f"expires {document['expires_at']})"
    )


@exceptions_app.command("create")
def create_exception(
    image: Annotated[list[str], typer.Option(
        "--image", help="Digest, registry/repo:tag (pinned at approval), or glob with --any-digest"
    )],
    policy: Annotated[list[str], typer.Option("--policy", help="Rule package waived")],
    reason: Annotated[str, typer.Option(help="Why")],
    ticket_id: Annotated[str, typer.Option("--ticket-id", help="Change ticket")],
    expires_at: Annotated[str, typer.Option("--expires-at", help="RFC 3339, or 7d/12h from now")],
    environment: Annotated[str | None, typer.Option(help="Environment scope")] = None,
    namespace: Annotated[str | None, typer.Option(help="Namespace scope")] = None,
    actor: Annotated[str | None, typer.Option(help="Recorded creator (default cli:<user>)")] = None,
    any_digest: Annotated[bool, typer.Option(
        "--any-digest", help="Say that a repository glob waives any digest"
    )] = False,
) -> None:
    """Create a *pending* exception (it waives nothing until someone else approves it)."""
    from gatekeeper.policy.exceptions import ExceptionRequest, format_instant

    settings = _settings()
    now = datetime.now(UTC)
    try:
        expiry = expires_at
        match = _DURATION_RE.match(expires_at.strip())
        if match:
            delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
            expiry = format_instant(now + delta)
        request = ExceptionRequest.parse(
            {
                "images": image, "policies": policy, "environment": environment,
                "namespace": namespace, "reason": reason, "any_digest": any_digest,
                "ticket_id": ticket_id, "expires_at": expiry,
            },
            now=now,
        )
        exception = _store(settings).create_exception(request, actor=_actor(actor))
    except GatekeeperError as exc:
        field = getattr(exc, "field", None)
        _fail(f"{field}: {exc.message}" if field else exc.render())
    _print_exception(exception.as_dict(now))


@exceptions_app.command("list")
def list_exceptions(
    status: Annotated[str | None, typer.Option(help="pending, active, expired or revoked")] = None,
    output: Annotated[str, typer.Option(help="table or json")] = "table",
) -> None:
    """List exceptions with their status now."""
    settings = _settings()
    now = datetime.now(UTC)
    try:
        items = [e.as_dict(now) for e in _store(settings).list_exceptions()]
    except GatekeeperError as exc:
        _fail(exc.render())
    if status is not None:
        items = [item for item in items if item["status"] == status]
    if output == "json":
        typer.echo(json.dumps({"items": items}, indent=2, sort_keys=True))
        return
    for item in items:
        _print_exception(item)


@exceptions_app.command("approve")
def approve_exception(
    exception_id: Annotated[str, typer.Argument(help="EXC-n")],
    server: Annotated[str, typer.Option(
        help="The running gatekeeper at this URL (token: $GATEKEEPER_TOKEN)"
    )],
) -> None:
    """Approve a pending exception as the principal of $GATEKEEPER_TOKEN (never in-process:
    an approval needs an authenticated second person). Exit 1 if refused."""
    status, document = _remote(
        "POST", f"{server.rstrip('/')}/v1/exceptions/{exception_id}/approve"
    )
    if status != 200:
        _fail(document.get("message") or f"HTTP {status}",
              EXIT_FAILED if status in (401, 403, 404, 409) else EXIT_ERROR)
    _print_exception(document)


@exceptions_app.command("revoke")
def revoke_exception(
    exception_id: Annotated[str, typer.Argument(help="EXC-n")],
    reason: Annotated[str | None, typer.Option(help="Why")] = None,
    actor: Annotated[str | None, typer.Option(help="Recorded revoker (default cli:<user>)")] = None,
) -> None:
    """Revoke an exception now (the record is kept). Exit 1 if unknown."""
    settings = _settings()
    try:
        exception = _store(settings).revoke_exception(
            exception_id, actor=_actor(actor), reason=reason
        )
    except GatekeeperError as exc:
        _fail(exc.render(), EXIT_FAILED if exc.kind in ("not_found", "conflict") else EXIT_ERROR)
    _print_exception(exception.as_dict(datetime.now(UTC)))


@exceptions_app.command("export")
def export_exceptions() -> None:
    """Every exception and its create/revoke audit records, as JSON."""
    from gatekeeper.policy.exceptions import format_instant
    from gatekeeper.policy.store import EXCEPTION_APPROVE, EXCEPTION_CREATE, EXCEPTION_REVOKE

    settings = _settings()
    now = datetime.now(UTC)
    try:
        store = _store(settings)
        document = {
            "exported_at": format_instant(now),
            "exceptions": [e.as_dict(now) for e in store.list_exceptions()],
            "events": [
                e.as_dict()
                for e in reversed(
                    store.events(
                        limit=1000,
                        actions=(EXCEPTION_CREATE, EXCEPTION_APPROVE, EXCEPTION_REVOKE),
                    )
                )
            ],
        }
    except GatekeeperError as exc:
        _fail(exc.render())
    typer.echo(json.dumps(document, indent=2, sort_keys=True))


# -- revisions: submit, activate, roll back, history ------------------------------------------
#
# In-process on the configured store by default (running gatekeepers pick the change up on their
# next sync); with --server, through a running gatekeeper's API (bearer token from the
# GATEKEEPER_TOKEN environment variable, read here because it is a credential of this command's
# caller, not a setting of the gatekeeper).

_SERVER_HELP = "Use a running gatekeeper at this URL (token: $GATEKEEPER_TOKEN)"


def _remote(method: str, url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    import os

    import httpx

    token = os.environ.get("GATEKEEPER_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(method, url, headers=headers, timeout=300, **kwargs)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach gatekeeper at {url}: {exc}")
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        _fail(f"gatekeeper at {url} answered HTTP {response.status_code} without JSON")
    return response.status_code, body


def _lifecycle(settings: Settings) -> Any:
    from gatekeeper.audit import create_database_engine
    from gatekeeper.policy.lifecycle import create_policy_lifecycle

    lifecycle = create_policy_lifecycle(
        database=create_database_engine(settings.database_url),
        opa_binary=_opa_binary(settings),
        state=None,
    )
    lifecycle.store.migrate()
    return lifecycle


def _print_event(event: dict[str, Any]) -> None:
    typer.echo(
        f"{event['occurred_at']}  {event['action']:<8} {event['from_revision'] or '-'} -> "
        f"{event['to_revision'] or '-'}  by {event['actor']}"
    )


@policy_app.command("submit")
def submit(
    directory: Annotated[Path, typer.Argument(help="Candidate: policy dir, dir with policies/ "
                                              "and tests/, or a .tar.gz")],
    tests: Annotated[Path | None, typer.Option(help="Tests of a bare policy dir")] = None,
    description: Annotated[str | None, typer.Option(help="What changes")] = None,
    actor: Annotated[str | None, typer.Option(help="Recorded uploader (in-process)")] = None,
    server: Annotated[str | None, typer.Option(help=_SERVER_HELP)] = None,
) -> None:
    """Upload a candidate revision; it is checked (opa check/fmt/test). Exit 1 if refused."""
    try:
        files = _candidate(directory, tests)
    except GatekeeperError as exc:
        _fail(exc.render())
    if server:
        body: dict[str, Any] = dict(files.as_text())
        if description:
            body["description"] = description
        status, document = _remote("POST", f"{server.rstrip('/')}/v1/policies/revisions", json=body)
        if status == 422 and document.get("error") == "policy_refused":
            _fail(document["message"], EXIT_FAILED)
        if status not in (200, 201):
            _fail(document.get("message") or f"HTTP {status}")
        typer.echo(f"accepted {document['revision_id']}")
        return
    settings = _settings()
    try:
        record, _created = _lifecycle(settings).submit(
            files, actor=_actor(actor), source="cli", description=description
        )
    except GatekeeperError as exc:
        _fail(exc.render())
    if not record.accepted:
        _fail(f"candidate {record.revision_id} refused: {record.report.summary()}", EXIT_FAILED)
    typer.echo(f"accepted {record.revision_id}")


@policy_app.command("activate")
def activate(
    revision_id: Annotated[str, typer.Argument(help="sha256:... of an accepted revision")],
    reason: Annotated[str | None, typer.Option(help="Why (recorded)")] = None,
    actor: Annotated[str | None, typer.Option(help="Recorded activator (in-process)")] = None,
    server: Annotated[str | None, typer.Option(help=_SERVER_HELP)] = None,
) -> None:
    """Make a revision active (recorded: who, when, from which revision). Exit 1 if refused."""
    if server:
        status, document = _remote(
            "POST", f"{server.rstrip('/')}/v1/policies/revisions/{revision_id}/activate",
            json={"reason": reason},
        )
        if status != 200:
            _fail(document.get("message") or f"HTTP {status}",
                  EXIT_FAILED if status in (404, 409) else EXIT_ERROR)
        _print_event(document["event"])
        return
    settings = _settings()
    try:
        event = _lifecycle(settings).store.activate(revision_id, actor=_actor(actor), reason=reason)
    except GatekeeperError as exc:
        _fail(exc.render(), EXIT_FAILED if exc.kind in ("conflict", "not_found") else EXIT_ERROR)
    _print_event(event.as_dict())


@policy_app.command("rollback")
def rollback(
    reason: Annotated[str | None, typer.Option(help="Why (recorded)")] = None,
    actor: Annotated[str | None, typer.Option(help="Recorded actor (in-process)")] = None,
    server: Annotated[str | None, typer.Option(help=_SERVER_HELP)] = None,
) -> None:
    """Return to the revision active before the current one. Exit 1 if there is none."""
    if server:
        status, document = _remote(
            "POST", f"{server.rstrip('/')}/v1/policies/rollback", json={"reason": reason}
        )
        if status != 200:
            _fail(document.get("message") or f"HTTP {status}",
                  EXIT_FAILED if status == 409 else EXIT_ERROR)
        _print_event(document["event"])
        return
    settings = _settings()
    try:
        event = _lifecycle(settings).store.rollback(actor=_actor(actor), reason=reason)
    except GatekeeperError as exc:
        _fail(exc.render(), EXIT_FAILED if exc.kind == "conflict" else EXIT_ERROR)
    _print_event(event.as_dict())


@policy_app.command("history")
def history(limit: Annotated[int, typer.Option(help="Most events shown")] = 50) -> None:
    """Activations and rollbacks, oldest first, after verifying their hash chain."""
    settings = _settings()
    try:
        store = _lifecycle(settings).store
        store.verify_chain()
        events = store.events(limit=limit, actions=("activate", "rollback"))
        active = store.active_revision_id()
    except GatekeeperError as exc:
        _fail(exc.render())
    for event in reversed(events):
        _print_event(event.as_dict())
    typer.echo(f"active {active or '-'}")
