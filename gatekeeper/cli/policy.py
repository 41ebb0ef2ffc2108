"""``gatekeeper policy ...``: the policy authoring kit and lifecycle commands.

Mounted by the main CLI with ``app.add_typer(policy_app, name="policy")``. Exit codes: 0 success,
1 the thing checked failed (a failing test, a refused candidate, new denials with
``--fail-on-new-denials``, an unknown or conflicting revision), 2 error (bad input,
configuration, store). Lifecycle commands run in-process on the configured store (running
gatekeepers pick the change up on their next sync) or, with ``--server``, through a running
gatekeeper's API; both end with the same exit codes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gatekeeper.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    ServerOption,
    command_group,
    fail,
    load_settings,
    parse_time,
    remote,
    resolve_prefix,
    waiting,
)
from gatekeeper.cli.exceptions import exceptions_app
from gatekeeper.cli.output import (
    Finding,
    OutputFormat,
    OutputOption,
    ReportOption,
    emit,
    render_report,
)
from gatekeeper.cli.stores import actor_name, open_authoring, open_lifecycle

if TYPE_CHECKING:
    from gatekeeper.domain.policy_lifecycle import PolicyCandidate

__all__ = ["policy_app"]

policy_app = command_group("Write, test, replay and activate policies; manage exceptions.")
policy_app.add_typer(exceptions_app, name="exceptions")

CandidateArgument = Annotated[
    Path,
    typer.Argument(
        metavar="DIR", help="Candidate: policy dir, dir with policies/ and tests/, or a .tar.gz"
    ),
]
TestsOption = Annotated[
    Path | None, typer.Option(metavar="DIR", help="Tests of a bare policy dir")
]


@policy_app.command("test")
def test_policies(
    policies: Annotated[Path, typer.Option(metavar="DIR", help="Policy directory")] = Path(
        "policies"
    ),
    tests: Annotated[Path, typer.Option(metavar="DIR", help="Test directory")] = Path(
        "rego-tests"
    ),
    min_coverage: Annotated[
        float, typer.Option(metavar="PERCENT", help="Fail below this coverage")
    ] = 0.0,
    report: ReportOption = None,
) -> None:
    """Run opa test (with coverage) over the policies and their tests. Exit 1 on a failure."""
    for root in (policies, tests):
        if not root.is_dir():
            fail(f"{root} is not a directory")
    authoring = open_authoring(load_settings())
    with waiting("running opa test"):
        run = authoring.run_tests([policies, tests], cwd=Path.cwd())
    if not run.succeeded and not run.failed:
        # nothing failed, yet opa did: parse or compile errors (never "PASS: 0/0")
        for problem in run.problems:
            typer.echo(problem.render(), err=True)
        fail(f"opa test failed: {len(run.problems)} error(s) before any test ran", EXIT_FAILED)
    if not run.outcomes:
        fail(f"opa test found no tests in {policies} and {tests}", EXIT_FAILED)
    if report is not None:
        from gatekeeper import __version__

        findings = [
            Finding(o.package, o.name, "pass" if o.passed else "error",
                    o.message or ("" if o.passed else "test failed"), o.file, o.line,
                    rule=o.qualified_name)
            for o in run.outcomes
        ]
        typer.echo(render_report(report, findings, title="gatekeeper policy test",
                                 version=__version__))
    else:
        for outcome in run.failed:
            detail = f": {outcome.message}" if outcome.message else ""
            typer.echo(f"FAIL {outcome.qualified_name} ({outcome.file}:{outcome.line}){detail}")
        typer.echo(f"PASS: {len(run.outcomes) - len(run.failed)}/{len(run.outcomes)}")
        typer.echo(f"coverage: {run.coverage:.2f}%")
    if run.failed or not run.succeeded:
        raise typer.Exit(EXIT_FAILED)
    if run.coverage < min_coverage:
        fail(f"coverage {run.coverage:.2f}% is below --min-coverage {min_coverage:.2f}%",
             EXIT_FAILED)


@policy_app.command("input")
def print_input(
    images: Annotated[list[str], typer.Argument(metavar="IMAGE...", help="Image references")],
    environment: Annotated[str | None, typer.Option(help="Target environment")] = None,
    namespace: Annotated[str | None, typer.Option(help="Target namespace")] = None,
    ticket_id: Annotated[str | None, typer.Option("--ticket-id", metavar="ID")] = None,
    plan_id: Annotated[str | None, typer.Option("--plan-id", metavar="ID")] = None,
    intent_id: Annotated[str | None, typer.Option("--intent-id", metavar="ID")] = None,
    deploy_id: Annotated[str | None, typer.Option("--deploy-id", metavar="ID")] = None,
    evaluated_at: Annotated[
        str | None,
        typer.Option(metavar="TIME", help="RFC 3339 instant used as 'now' (default: now)"),
    ] = None,
    by_reference: Annotated[bool, typer.Option(
        "--by-reference",
        help="Print what OPA receives: the input with large evidence by sha256 and the "
             "documents it loads into data.gatekeeper.evidence ({\"input\", \"data\"})",
    )] = False,
    output: OutputOption = OutputFormat.JSON,
) -> None:
    """Print the exact input document the gate would build for IMAGES (for writing tests).

    Large evidence (SBOM component lists, attestation predicates) is shown inline, as the
    policy reads it; OPA receives it by sha256 in data.gatekeeper.evidence (--by-reference).
    """
    from pydantic import ValidationError

    from gatekeeper.api.models import EvaluationBody
    from gatekeeper.api.routes import parse_evaluation_body
    from gatekeeper.app import format_location
    from gatekeeper.wiring import build_container

    settings = load_settings()
    body = {
        "images": images, "environment": environment, "namespace": namespace,
        "ticket": {"intent_id": intent_id, "plan_id": plan_id, "ticket_id": ticket_id,
                   "deploy_id": deploy_id},
    }
    try:
        parsed = EvaluationBody.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"{format_location(first['loc'])}: {first['msg']}")
    now = parse_time(evaluated_at, option="--evaluated-at") if evaluated_at else datetime.now(UTC)
    request = parse_evaluation_body(
        parsed, default_environment=settings.default_environment,
        max_images=settings.max_images_per_request, mode=settings.pipeline_mode,
    )
    container = build_container(settings)
    try:
        with waiting("gathering evidence"):
            document, failures = container.service.policy_input(request, now=now)
    finally:
        container.stop()
    for failure in failures:
        typer.echo(f"warning: {failure}", err=True)
    from gatekeeper.domain.evidence_documents import EvidenceExternaliser, build_data_document

    sent = EvidenceExternaliser(settings.evidence_inline_max_bytes).externalise(document)
    if by_reference:
        evidence = {digest: build_data_document(value)
                    for digest, value in sent.documents.items()}
        emit({"input": sent.policy_input, "data": {"gatekeeper": {"evidence": evidence}}},
             output)
        return
    if sent.documents:
        typer.echo(
            f"note: {len(sent.documents)} evidence document(s) shown inline reach OPA by sha256 "
            "(data.gatekeeper.evidence); --by-reference prints that form", err=True,
        )
    emit(document, output)


def _candidate(directory: Path, tests: Path | None) -> PolicyCandidate:
    return open_authoring(load_settings()).load(directory, tests)


@policy_app.command("check")
def check_candidate(directory: CandidateArgument, tests: TestsOption = None) -> None:
    """Run the activation checks (opa check --strict, opa fmt, opa test). Exit 1 if refused."""
    authoring = open_authoring(load_settings())
    files = authoring.load(directory, tests)
    with waiting("checking the candidate"):
        report = authoring.check(files)
    typer.echo(f"revision {files.revision_id}")
    for problem in report.problems:
        typer.echo(problem.render())
    typer.echo(("accepted: " if report.passed else "refused: ") + report.summary())
    raise typer.Exit(EXIT_OK if report.passed else EXIT_FAILED)


def replay_table(document: dict[str, Any], summary: str) -> list[str]:
    lines = [
        f"revision  {document['revision_id']}",
        f"window    {document['since']} .. {document['until']}",
    ]
    for change in document["changes"]:
        lines.append(
            f"decision  {change['decision_id']}  {change['old_verdict']} -> "
            f"{change['new_verdict']}  ticket {change['ticket_id'] or '-'}"
        )
        for sign, key in (("+", "violations_added"), ("-", "violations_removed")):
            for item in change[key]:
                where = f" {item['image']}" if item.get("image") else ""
                lines.append(f"  {sign} [{item['policy']}]{where}: {item['message']}")
    lines.append(summary)
    return lines


@policy_app.command("replay")
def replay(
    directory: CandidateArgument,
    tests: TestsOption = None,
    since: Annotated[
        str, typer.Option(metavar="TIME", help="7d, 12h, a date or an RFC 3339 instant")
    ] = "7d",
    until: Annotated[
        str | None, typer.Option(metavar="TIME", help="Like --since (default: now)")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
    fail_on_new_denials: Annotated[bool, typer.Option("--fail-on-new-denials")] = False,
) -> None:
    """Re-evaluate recorded decisions against a candidate and print the impact."""
    now = datetime.now(UTC)
    start = parse_time(since, option="--since", now=now)
    end = parse_time(until, option="--until", now=now) if until else now
    files = _candidate(directory, tests)
    lifecycle = open_lifecycle(load_settings())
    with waiting("replaying recorded decisions"):
        report = lifecycle.replay_files(files, since=start, until=end)
    emit(report.as_dict(), output, lambda document: replay_table(document, report.summary))
    if fail_on_new_denials and report.newly_denied:
        raise typer.Exit(EXIT_FAILED)


# -- revisions: submit, activate, roll back, history ------------------------------------------


def event_line(event: dict[str, Any]) -> str:
    return (
        f"{event['occurred_at']}  {event['action']:<8} {event['from_revision'] or '-'} -> "
        f"{event['to_revision'] or '-'}  by {event['actor']}"
    )


@policy_app.command("submit")
def submit(
    directory: CandidateArgument,
    tests: TestsOption = None,
    description: Annotated[str | None, typer.Option(help="What changes")] = None,
    actor: Annotated[str | None, typer.Option(help="Recorded uploader (in-process)")] = None,
    server: ServerOption = None,
) -> None:
    """Upload a candidate revision; it is checked (opa check/fmt/test). Exit 1 if refused."""
    files = _candidate(directory, tests)
    if server:
        body: dict[str, Any] = dict(files.as_text())
        if description:
            body["description"] = description
        document = remote("POST", server, "/v1/policies/revisions", json=body, timeout=300)
        typer.echo(f"accepted {document['revision_id']}")
        return
    with waiting("checking the candidate"):
        record, _created = open_lifecycle(load_settings()).submit(
            files, actor=actor_name(actor), source="cli", description=description
        )
    if not record.accepted:
        fail(f"candidate {record.revision_id} refused: {record.report.summary()}", EXIT_FAILED)
    typer.echo(f"accepted {record.revision_id}")


@policy_app.command("activate")
def activate(
    revision_id: Annotated[
        str, typer.Argument(metavar="REVISION", help="Revision id (sha256:...) or a unique prefix")
    ],
    reason: Annotated[str | None, typer.Option(help="Why (recorded)")] = None,
    actor: Annotated[str | None, typer.Option(help="Recorded activator (in-process)")] = None,
    server: ServerOption = None,
) -> None:
    """Make a revision active (recorded: who, when, from which revision). Exit 1 if refused."""
    if server:
        known = [r["revision_id"] for r in remote("GET", server, "/v1/policies")["revisions"]]
        full = resolve_prefix(revision_id, known, what="policy revision", option="REVISION")
        document = remote(
            "POST", server, f"/v1/policies/revisions/{full}/activate", json={"reason": reason}
        )
        typer.echo(event_line(document["event"]))
        return
    lifecycle = open_lifecycle(load_settings())
    known = [r["revision_id"] for r in lifecycle.revisions(500)]
    full = resolve_prefix(revision_id, known, what="policy revision", option="REVISION")
    event = lifecycle.activate(full, actor=actor_name(actor), reason=reason)
    typer.echo(event_line(event.as_dict()))


@policy_app.command("rollback")
def rollback(
    reason: Annotated[str | None, typer.Option(help="Why (recorded)")] = None,
    actor: Annotated[str | None, typer.Option(help="Recorded actor (in-process)")] = None,
    server: ServerOption = None,
) -> None:
    """Return to the revision active before the current one. Exit 1 if there is none."""
    if server:
        document = remote("POST", server, "/v1/policies/rollback", json={"reason": reason})
        typer.echo(event_line(document["event"]))
        return
    event = open_lifecycle(load_settings()).rollback(actor=actor_name(actor), reason=reason)
    typer.echo(event_line(event.as_dict()))


def history_table(document: dict[str, Any]) -> list[str]:
    return [*(event_line(e) for e in document["events"]),
            f"active {document['active_revision'] or '-'}"]


@policy_app.command("history")
def history(
    limit: Annotated[int, typer.Option(metavar="N", help="Most events shown")] = 50,
    output: OutputOption = OutputFormat.TABLE,
    server: ServerOption = None,
) -> None:
    """Activations and rollbacks, oldest first, after verifying their hash chain."""
    actions = ("activate", "rollback")
    if server:
        # the events route verifies the chain before it answers
        answer = remote("GET", server, "/v1/policies/events", params={"limit": 1000})
        events = [e for e in answer["items"] if e["action"] in actions][:limit]
        active_document = remote("GET", server, "/v1/policies")["active_revision"]
        active = active_document["revision_id"] if active_document else None
        document = {"events": list(reversed(events)), "active_revision": active}
    else:
        document = open_lifecycle(load_settings()).history(limit)
    emit(document, output, history_table)
