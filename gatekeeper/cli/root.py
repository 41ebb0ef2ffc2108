"""The ``gatekeeper`` command: global options (``--version``, ``-v``, completion), the command
groups, and :func:`main`, the console script."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from gatekeeper.cli import audit, commands, policy, sbom
from gatekeeper.cli.common import (
    EXIT_ERROR,
    VERBOSE_KEY,
    GatekeeperGroup,
    exit_code_for,
)
from gatekeeper.errors import GatekeeperError

__all__ = ["app", "main", "plain_help"]


class RootGroup(GatekeeperGroup):
    """The root group; it also gives every command help without type tags (``<str>``)."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            plain_help(command)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        plain_help(self)
        super().format_help(ctx, formatter)


def plain_help(command: Any) -> None:
    """Options show a metavar named after the option (``--server SERVER``), choices their
    values (``[table|json|yaml]``), flags nothing; arguments their name, as click prints them.
    Applied to ``command`` and its subcommands (typer would print ``<str>``, ``<bool>``)."""
    for param in command.params:
        if isinstance(param, TyperOption):
            if param.metavar is None and not param.is_flag and not param.count:
                descriptor = param.type_descriptor
                if descriptor.is_choice and descriptor.choices:
                    values = (getattr(c, "value", c) for c in descriptor.choices)
                    param.metavar = "[" + "|".join(str(v) for v in values) + "]"
                else:
                    param.metavar = (param.name or "value").upper()
        elif isinstance(param, TyperArgument):
            name = param.metavar or (param.name or "arg").upper()
            shown = name + ("..." if param.nargs != 1 and not name.endswith("...") else "")
            usage = shown if param.required else f"[{shown}]"
            # typer renders arguments as "{name} <type>": keep click's plain form instead
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
            param.get_usage_pieces = lambda ctx, usage=usage: [usage]  # type: ignore[method-assign,misc]
    if isinstance(command, TyperGroup):
        for child in command.commands.values():
            plain_help(child)


app = typer.Typer(
    name="gatekeeper",
    cls=RootGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=True,
)


def _show_version(value: bool) -> None:
    if value:
        from gatekeeper import __version__

        typer.echo(f"gatekeeper {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Errors also show their structured context.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Forge Gatekeeper: verify container images, decide with OPA Rego, record decisions.

    Exit codes: 0 done (allow, verified), 1 the thing checked failed (deny, refused, unknown
    id), 2 error (bad input, configuration, unreachable dependency).
    """
    ctx.meta[VERBOSE_KEY] = verbose


commands.register(app)
app.add_typer(commands.decisions_app, name="decisions")
app.add_typer(audit.audit_app, name="audit")
app.add_typer(policy.policy_app, name="policy")
app.add_typer(sbom.sbom_app, name="sbom")


def main(argv: list[str] | None = None) -> Any:
    """The console script: the command's exit code, never a traceback for our errors."""
    try:
        return app(args=argv, prog_name="gatekeeper")
    except GatekeeperError as exc:  # raised outside a command (e.g. while parsing)
        typer.echo(f"error: {exc.diagnostics()}", err=True)
        sys.exit(exit_code_for(exc) or EXIT_ERROR)
