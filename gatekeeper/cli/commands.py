"""``gatekeeper evaluate|verify|verify-bundle`` and ``gatekeeper decisions show``.

Exit codes of ``evaluate``: 0 allow or warn (1 for warn with ``--fail-on-warn``), 1 deny,
2 error (bad input, engine unavailable).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from gatekeeper.cli.common import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_OK,
    ServerOption,
    command_group,
    fail,
    finish,
    load_settings,
    remote,
    waiting,
)
from gatekeeper.cli.output import (
    Finding,
    OutputFormat,
    OutputOption,
    ReportOption,
    emit,
    render_report,
)
from gatekeeper.cli.stores import open_audit

__all__ = ["decisions_app", "evaluate", "verify_bundle_command", "verify_image"]

EXIT_ALLOWED, EXIT_DENIED = EXIT_OK, EXIT_FAILED

decisions_app = command_group("Read recorded decisions.")


@decisions_app.callback()
def decisions() -> None:
    """Read recorded decisions."""



def decision_table(document: dict[str, Any]) -> list[str]:
    lines = [
        f"decision  {document['decision_id']}",
        f"verdict   {document['verdict'].upper()}  (environment {document['environment']}, "
        f"policy {document.get('policy_revision') or '-'})",
    ]
    for image in document.get("images", []):
        lines.append(f"image     {image['reference']}  digest {image.get('digest') or '-'}")
    for kind in ("violations", "warnings"):
        for item in document.get(kind, []):
            where = f" {item['image']}" if item.get("image") else ""
            lines.append(f"{kind[:-1]:<9} [{item['policy']}]{where}: {item['message']}")
    return lines


def decision_findings(document: dict[str, Any]) -> list[Finding]:
    """One finding per violation and warning, and a pass for each image without either."""
    suite = f"gatekeeper evaluate ({document.get('environment')})"
    findings: list[Finding] = []
    named: set[str] = set()
    for kind, level in (("violations", "error"), ("warnings", "warning")):
        for item in document.get(kind, []):
            image = item.get("image") or "request"
            named.add(image)
            findings.append(
                Finding(suite, f"{image} [{item['policy']}]", level, item["message"],
                        rule=item["policy"])
            )
    for image in document.get("images", []):
        if image["reference"] not in named:
            findings.append(Finding(suite, image["reference"], "pass"))
    return findings


def _exit_for(document: dict[str, Any], *, fail_on_warn: bool) -> int:
    if document.get("error") or any(
        w["decision"].get("error") for w in document.get("workloads", [])
    ):
        return EXIT_ERROR
    if document["verdict"] == "deny":
        return EXIT_DENIED
    if fail_on_warn and (document["verdict"] == "warn" or document.get("warnings")):
        return EXIT_DENIED
    return EXIT_ALLOWED


def evaluate(
    images: Annotated[
        list[str] | None,
        typer.Argument(metavar="IMAGE...", help="Image references to decide on",
                       show_default=False),
    ] = None,
    filename: Annotated[
        Path | None,
        typer.Option("-f", "--filename", metavar="FILE",
                     help="Kubernetes manifests (YAML/JSON, helm template or kustomize "
                     "output; - for stdin): each workload decided as admission would."),
    ] = None,
    environment: Annotated[str | None, typer.Option(help="Target environment")] = None,
    namespace: Annotated[str | None, typer.Option(help="Target namespace")] = None,
    ticket_id: Annotated[str | None, typer.Option("--ticket-id", metavar="ID")] = None,
    plan_id: Annotated[str | None, typer.Option("--plan-id", metavar="ID")] = None,
    intent_id: Annotated[str | None, typer.Option("--intent-id", metavar="ID")] = None,
    deploy_id: Annotated[str | None, typer.Option("--deploy-id", metavar="ID")] = None,
    output: OutputOption = OutputFormat.TABLE,
    report: ReportOption = None,
    fail_on_warn: Annotated[
        bool, typer.Option("--fail-on-warn", help="Exit 1 on a warn verdict too.")
    ] = False,
    server: ServerOption = None,
) -> None:
    """Decide whether IMAGES may be deployed (or the workloads of -f FILE). Exit 0 allow/warn,
    1 deny (any workload), 2 error."""
    if (filename is None) == (not images):
        fail("give IMAGE... or -f FILE (one of the two)")
    body: dict[str, Any] = {
        "images": images or [],
        "environment": environment,
        "namespace": namespace,
        "ticket": {
            "intent_id": intent_id, "plan_id": plan_id,
            "ticket_id": ticket_id, "deploy_id": deploy_id,
        },
    }
    if filename is not None:
        from gatekeeper.cli.manifests import (
            evaluate_manifest_file,
            manifest_findings,
            manifest_table,
            read_manifests,
        )

        body["manifests"] = read_manifests(filename)
        del body["images"]
        document = evaluate_manifest_file(body, server)
        if report is not None:
            from gatekeeper import __version__

            typer.echo(render_report(report, manifest_findings(document),
                                     title="gatekeeper evaluate", version=__version__))
        else:
            emit(document, output, manifest_table)
        raise typer.Exit(_exit_for(document, fail_on_warn=fail_on_warn))
    if server:
        document = remote("POST", server, "/v1/evaluations", json=body)
    else:
        document = _evaluate_in_process(body)
    if report is not None:
        from gatekeeper import __version__

        typer.echo(render_report(report, decision_findings(document),
                                 title="gatekeeper evaluate", version=__version__))
    else:
        emit(document, output, decision_table)
    raise typer.Exit(_exit_for(document, fail_on_warn=fail_on_warn))


def _evaluate_in_process(body: dict[str, Any]) -> dict[str, Any]:
    from pydantic import ValidationError

    from gatekeeper.api.models import EvaluationBody
    from gatekeeper.api.routes import parse_evaluation_body
    from gatekeeper.app import format_location
    from gatekeeper.wiring import build_container

    settings = load_settings()
    try:
        parsed = EvaluationBody.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"{format_location(first['loc'])}: {first['msg']}")
    request = parse_evaluation_body(
        parsed,
        default_environment=settings.default_environment,
        max_images=settings.max_images_per_request,
        mode=settings.pipeline_mode,
    )
    container = build_container(settings)
    with waiting("evaluating"):
        container.start()
        try:
            deadline = time.monotonic() + settings.evidence_budget_seconds
            return container.service.evaluate(request, deadline=deadline).as_dict()
        finally:
            container.stop()


@decisions_app.command("show")
def show_decision(
    decision_id: Annotated[
        str, typer.Argument(metavar="ID", help="Decision id, or a unique prefix of it")
    ],
    output: OutputOption = OutputFormat.JSON,
    server: ServerOption = None,
) -> None:
    """Print a recorded decision. Exit 1 if no decision has this id (or prefix)."""
    if server:
        document = remote("GET", server, f"/v1/decisions/{decision_id}")
    else:
        audit = open_audit(load_settings(), signing=False)
        try:
            document = audit.get(decision_id).as_dict()
        finally:
            audit.close()
    emit(document, output, decision_table)


def verify_bundle_command(
    artifact: Annotated[
        str,
        typer.Argument(
            metavar="FILE_OR_DIGEST",
            help="sha256:<hex> or a file; for DSSE bundles the in-toto subject",
        ),
    ],
    bundle: Annotated[
        Path, typer.Option("--bundle", metavar="FILE", help="Sigstore bundle (JSON)")
    ],
    certificate_identity: Annotated[
        str | None,
        typer.Option("--certificate-identity", metavar="SAN", help="Expected certificate SAN"),
    ] = None,
    certificate_oidc_issuer: Annotated[
        str | None,
        typer.Option("--certificate-oidc-issuer", metavar="URL", help="Expected OIDC issuer"),
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", metavar="FILE", help="PEM public key")
    ] = None,
    trusted_root: Annotated[
        Path | None, typer.Option("--trusted-root", metavar="FILE", help="trusted_root.json")
    ] = None,
    staging: Annotated[bool, typer.Option("--staging", help="Sigstore staging root")] = False,
) -> None:
    """Verify a Sigstore bundle offline (the sigstore-conformance CLI protocol).

    Exit 0 verified, 1 rejected (reason on stderr), 2 usage error.
    """
    from gatekeeper.evidence_wiring import verify_bundle_for_cli

    ok, reason = verify_bundle_for_cli(
        bundle_path=bundle,
        artifact=artifact,
        certificate_identity=certificate_identity,
        certificate_oidc_issuer=certificate_oidc_issuer,
        key_path=key,
        trusted_root_path=trusted_root,
        staging=staging,
    )
    if not ok:
        typer.echo(f"rejected: {reason}", err=True)
        raise typer.Exit(EXIT_DENIED)
    typer.echo("verified")


def verify_image(
    image: Annotated[str, typer.Argument(metavar="IMAGE", help="Image reference (tag or digest)")],
    authority: Annotated[
        list[str] | None,
        typer.Option("--authority", metavar="NAME", help="Only this authority (repeatable)"),
    ] = None,
    environment: Annotated[str | None, typer.Option(help="Environment for the context")] = None,
    output: OutputOption = OutputFormat.JSON,
) -> None:
    """Print the signature evidence of one image. Exit 0 verified, 1 not verified, 2 error."""
    # Only the registry and verification adapters: not gatekeeper.wiring (the server's stack)
    from gatekeeper.domain import EvidenceContext, parse_image_reference
    from gatekeeper.evidence_wiring import build_registry_client, build_signature_collector

    settings = load_settings()
    reference = parse_image_reference(image, field="IMAGE")
    registry = build_registry_client(settings)
    collector = build_signature_collector(settings, registry)
    if collector is None:
        fail("no signature authorities configured (setting: signatures)")
    context = EvidenceContext(
        environment or settings.default_environment,
        None,
        time.monotonic() + settings.evidence_budget_seconds,
    )
    with waiting(f"verifying {image}"):
        digest = reference.digest or registry.resolve(reference, context)
        evidence = dict(collector.collect(reference, digest, context))
    verified = bool(evidence.get("verified"))
    if authority:
        applying = evidence.get("authorities", {})
        unknown = sorted(set(authority) - set(applying))
        if unknown:
            fail(
                f"authority {', '.join(unknown)} does not apply to {image} "
                f"(applies: {', '.join(sorted(applying)) or 'none'})"
            )
        evidence["authorities"] = {name: applying[name] for name in authority}
        verified = all(applying[name]["verified"] for name in authority)
    emit(evidence, output)
    if not verified:
        typer.echo(evidence.get("message", "not verified"), err=True)
    finish(EXIT_ALLOWED if verified else EXIT_DENIED)
