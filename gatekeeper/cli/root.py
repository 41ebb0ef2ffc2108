"""The ``gatekeeper`` command: global options (``--version``, ``-v``, completion), the command
groups, loaded only when named, and :func:`main`, the console script."""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from gatekeeper.cli.common import (
    EXIT_ERROR,
    PROCESS,
    VERBOSE_KEY,
    GatekeeperGroup,
    exit_code_for,
)
from gatekeeper.errors import GatekeeperError

__all__ = ["COMMANDS", "app", "main", "plain_help"]

#: name -> (module, attribute, one line of help). A command's module is imported only when the
#: command runs (or completes), so ``gatekeeper --help`` does not pay for the others.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("gatekeeper.cli.serve", "serve",
              "Run the API (and the embedded OPA, unless GATEKEEPER_OPA_URL is set)."),
    "evaluate": ("gatekeeper.cli.commands", "evaluate",
                 "Decide whether IMAGES may be deployed."),
    "verify": ("gatekeeper.cli.commands", "verify_image",
               "Print the signature evidence of one image."),
    "verify-bundle": ("gatekeeper.cli.commands", "verify_bundle_command",
                      "Verify a Sigstore bundle offline (the sigstore-conformance CLI protocol)."),
    "decisions": ("gatekeeper.cli.commands", "decisions_app", "Read recorded decisions."),
    "policy": ("gatekeeper.cli.policy", "policy_app",
               "Write, test, replay and activate policies; manage exceptions."),
    "audit": ("gatekeeper.cli.audit", "audit_app",
              "The audit trail: export it, verify it (online or an exported file), prune it."),
    "sbom": ("gatekeeper.cli.sbom", "sbom_app",
             "Validate and inspect CycloneDX / SPDX SBOM documents."),
    "webhooks": ("gatekeeper.cli.kube", "webhooks_app",
                 "Register, remove or probe the webhook configurations "
                 "(chart hook Jobs, helm test)."),
    "certs": ("gatekeeper.cli.kube", "certs_app",
              "Create or renew the generated serving certificate (chart hook Job)."),
}


def load_command(name: str) -> Any:
    """The click command for ``name`` (a typer group, or a function made a command)."""
    module_name, attribute, _help = COMMANDS[name]
    target = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(target, typer.Typer):
        single = typer.Typer(rich_markup_mode=None, add_completion=False)
        single.command(name)(target)
        target = single
    command = typer.main.get_command(target)
    command.name = name
    plain_help(command)
    return command


class RootGroup(GatekeeperGroup):
    """The root group: commands loaded by name, help without type tags (``<str>``)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self.commands:
            self.commands[cmd_name] = load_command(cmd_name)
        return self.commands[cmd_name]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, entry[2]) for name, entry in COMMANDS.items()])

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




def main(argv: list[str] | None = None) -> Any:
    """The console script: the command's exit code, never a traceback for our errors.

    Without ``argv`` the process's own arguments are used and this process is the command, so
    a read-only command may leave without the interpreter's teardown (:func:`finish`)."""
    PROCESS["program"] = argv is None
    try:
        return app(args=argv, prog_name="gatekeeper")
    except GatekeeperError as exc:  # raised outside a command (e.g. while parsing)
        typer.echo(f"error: {exc.diagnostics()}", err=True)
        sys.exit(exit_code_for(exc) or EXIT_ERROR)
