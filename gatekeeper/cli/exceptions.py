"""``gatekeeper policy exceptions ...``: time-boxed exceptions (waivers), in-process on the
configured store or, with ``--server``, through a running gatekeeper. Exit 1 for an unknown or
already revoked exception, 2 for bad input."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from gatekeeper.cli.common import (
    ServerOption,
    command_group,
    fail,
    load_settings,
    parse_time,
    remote,
)
from gatekeeper.cli.output import OutputFormat, OutputOption, emit
from gatekeeper.cli.stores import actor_name, open_lifecycle

__all__ = ["exceptions_app"]

exceptions_app = command_group("Time-boxed exceptions (waivers).")


def exception_line(document: dict[str, Any]) -> str:
    scope = ", ".join(
        f"{key} {document[key]}" for key in ("environment", "namespace") if document.get(key)
    )
    return (
        f"{document['id']}  {document['status']:<8} {','.join(document['policies'])}  "
        f"{' '.join(document['images'])}  ({scope}; ticket {document['ticket_id']}, "
        f"expires {document['expires_at']})"
    )


@exceptions_app.command("create")
def create_exception(
    image: Annotated[
        list[str], typer.Option(
            "--image", metavar="IMAGE",
            help="Digest, registry/repo:tag (pinned at approval), or glob with --any-digest",
        )
    ],
    policy: Annotated[
        list[str], typer.Option("--policy", metavar="NAME", help="Rule package waived")
    ],
    reason: Annotated[str, typer.Option(help="Why")],
    ticket_id: Annotated[str, typer.Option("--ticket-id", metavar="ID", help="Change ticket")],
    expires_at: Annotated[
        str, typer.Option("--expires-at", metavar="TIME", help="RFC 3339, or 7d/12h from now")
    ],
    environment: Annotated[str | None, typer.Option(help="Environment scope")] = None,
    namespace: Annotated[str | None, typer.Option(help="Namespace scope")] = None,
    actor: Annotated[str | None, typer.Option(help="Recorded creator (default cli:<user>)")] = None,
    any_digest: Annotated[bool, typer.Option(
        "--any-digest", help="Say that a repository glob waives any digest"
    )] = False,
    output: OutputOption = OutputFormat.TABLE,
    server: ServerOption = None,
) -> None:
    """Create a *pending* exception (it waives nothing until someone else approves it)."""
    from gatekeeper.domain.policy_exceptions import format_instant

    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "images": image, "policies": policy, "environment": environment,
        "namespace": namespace, "reason": reason, "any_digest": any_digest,
        "ticket_id": ticket_id,
        "expires_at": format_instant(
            parse_time(expires_at, option="--expires-at", now=now, ahead=True)
        ),
    }
    if server:
        document = remote("POST", server, "/v1/exceptions", json=body)
    else:
        exceptions = open_lifecycle(load_settings()).exceptions
        document = exceptions.create(body, actor=actor_name(actor)).as_dict(now)
    emit(document, output, lambda item: [exception_line(item)])


@exceptions_app.command("list")
def list_exceptions(
    status: Annotated[
        str | None, typer.Option(metavar="STATUS", help="pending, active, expired or revoked")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
    server: ServerOption = None,
) -> None:
    """List exceptions with their status now."""
    if server:
        params = {"status": status} if status else {}
        items = remote("GET", server, "/v1/exceptions", params=params)["items"]
        if status is not None:
            items = [item for item in items if item["status"] == status]
    else:
        items = open_lifecycle(load_settings()).exceptions.documents(status)
    emit({"items": items}, output, lambda document: map(exception_line, document["items"]))


@exceptions_app.command("approve")
def approve_exception(
    exception_id: Annotated[str, typer.Argument(metavar="ID", help="EXC-n")],
    output: OutputOption = OutputFormat.TABLE,
    server: ServerOption = None,
) -> None:
    """Approve a pending exception as the principal of $GATEKEEPER_TOKEN, through --server
    (never in-process: an approval needs an authenticated second person). Exit 1 if refused."""
    if not server:
        fail(
            "an approval needs an authenticated second person: approve through a running "
            "gatekeeper with --server URL (token in $GATEKEEPER_TOKEN)"
        )
    document = remote("POST", server, f"/v1/exceptions/{exception_id}/approve")
    emit(document, output, lambda item: [exception_line(item)])


@exceptions_app.command("revoke")
def revoke_exception(
    exception_id: Annotated[str, typer.Argument(metavar="ID", help="EXC-n")],
    reason: Annotated[str | None, typer.Option(help="Why")] = None,
    actor: Annotated[str | None, typer.Option(help="Recorded revoker (default cli:<user>)")] = None,
    output: OutputOption = OutputFormat.TABLE,
    server: ServerOption = None,
) -> None:
    """Revoke an exception now (the record is kept). Exit 1 if unknown or already revoked."""
    if server:
        document = remote(
            "POST", server, f"/v1/exceptions/{exception_id}/revoke", json={"reason": reason}
        )
    else:
        exceptions = open_lifecycle(load_settings()).exceptions
        exception = exceptions.revoke(exception_id, actor=actor_name(actor), reason=reason)
        document = exception.as_dict(exceptions.now())
    emit(document, output, lambda item: [exception_line(item)])


@exceptions_app.command("export")
def export_exceptions(
    output: OutputOption = OutputFormat.JSON, server: ServerOption = None
) -> None:
    """Every exception and its create/approve/revoke audit records."""
    if server:
        document = remote("GET", server, "/v1/exceptions/export")
    else:
        document = open_lifecycle(load_settings()).exceptions.export()
    emit(document, output)
