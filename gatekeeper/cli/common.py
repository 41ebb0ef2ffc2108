"""The helpers every command shares, once: exit codes, the error boundary, settings, the client
of a running gatekeeper, the time parser, id prefixes and the progress line.

Import cost matters here (``gatekeeper --help`` must start fast): only the standard library,
``typer`` and :mod:`gatekeeper.errors` at module level; everything else inside the functions.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TextIO

import typer
from typer.core import TyperGroup

from gatekeeper.errors import (
    AmbiguousIdError,
    ConflictError,
    GatekeeperError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    UpstreamUnavailableError,
)

if TYPE_CHECKING:
    from gatekeeper.config import Settings

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_OK",
    "ServerOption",
    "CommandError",
    "GatekeeperGroup",
    "command_group",
    "exit_code_for",
    "fail",
    "finish",
    "load_settings",
    "parse_time",
    "remote",
    "remote_download",
    "resolve_prefix",
    "waiting",
]

#: Exit codes of every command: 0 done (allow, verified, accepted), 1 the thing checked failed
#: (deny, refused, not verified, unknown id, conflicting state, broken chain), 2 error (bad
#: input, configuration, a dependency that cannot be reached).
EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2

VERBOSE_KEY = "gatekeeper.verbose"


class CommandError(GatekeeperError):
    """A command's own verdict or usage error, with the exit code it ends with."""

    kind = "command"

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """End the command: ``error: MESSAGE`` on stderr, exit ``code`` (through the boundary)."""
    raise CommandError(message, code)


#: ``program`` is true when this process is the command itself (the console script, ``python -m
#: gatekeeper``), set by :func:`gatekeeper.cli.root.main`; false when a caller runs a command
#: in its own process (tests, ``main(argv)``).
PROCESS = {"program": False}


def finish(code: int) -> NoReturn:
    """End a read-only one-shot command (``verify``) with exit ``code``.

    As the program, the process leaves at once after flushing stdout and stderr: the
    interpreter's teardown of ~450 modules and ~46,000 objects costs ~40 ms of a 0.35 s
    ``gatekeeper verify``, and such a command has nothing left to write, join or close (its
    output is flushed here; its idle fetch threads hold no work). Called in-process, it raises
    :class:`typer.Exit` as any command ends."""
    if PROCESS["program"]:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be said
                pass
        os._exit(code)
    raise typer.Exit(code)


def exit_code_for(error: GatekeeperError) -> int:
    """1 when the thing asked about is absent, in the wrong state or broken; 2 otherwise."""
    if isinstance(error, CommandError):
        return error.exit_code
    if isinstance(error, NotFoundError | ConflictError | IntegrityError):
        return EXIT_FAILED
    return EXIT_ERROR


class GatekeeperGroup(TyperGroup):
    """The one error boundary: every :class:`GatekeeperError` a command raises ends here, is
    rendered by the error itself (``-v`` adds its structured context) and sets the exit code.
    Foreign exceptions are translated where they happen (``raise ... from exc``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        for param in self.get_params(ctx):
            # typer's --help and completion flags default to None, and typer coerces a None
            # through pydantic on every run (~0.25 s of imports before any command starts);
            # a False is left alone.
            if getattr(param, "is_flag", False) and param.default is None:
                param.default = False
        result: list[str] = super().parse_args(ctx, args)
        return result

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except GatekeeperError as exc:
            verbose = bool(ctx.meta.get(VERBOSE_KEY))
            typer.echo(f"error: {exc.diagnostics(verbose=verbose)}", err=True)
            raise typer.Exit(exit_code_for(exc)) from None


def command_group(help_text: str) -> typer.Typer:
    """A command group behind the boundary, with plain help (no rich import, no type tags)."""
    return typer.Typer(
        help=help_text,
        cls=GatekeeperGroup,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        add_completion=False,
    )


def load_settings(**overrides: Any) -> Settings:
    """The settings, once per command (``ConfigurationError`` goes to the boundary)."""
    from gatekeeper.config import load_settings as load

    return load(**overrides)


# -- a running gatekeeper ----------------------------------------------------------------------

ServerOption = Annotated[
    str | None,
    typer.Option(
        metavar="URL", help="Use a running gatekeeper at this URL (token: GATEKEEPER_TOKEN)"
    ),
]


def _auth_headers() -> dict[str, str]:
    """The ``token`` setting (``GATEKEEPER_TOKEN``) as a bearer token; never printed."""
    token = load_settings().token
    return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}


def remote(
    method: str, server: str, path: str, *, timeout: float = 30.0, **kwargs: Any
) -> dict[str, Any]:
    """Call ``server`` + ``path``; the answer's JSON, or the error its status means.

    The bearer token is the ``token`` setting (``GATEKEEPER_TOKEN``), never printed. The status
    is mapped to the same error types the in-process path raises, so both exit alike.
    """
    import httpx

    url = f"{server.rstrip('/')}{path}"
    headers = _auth_headers()
    try:
        with waiting(f"waiting for gatekeeper at {server}"):
            response = httpx.request(method, url, headers=headers, timeout=timeout, **kwargs)
    except httpx.HTTPError as exc:
        raise UpstreamUnavailableError(f"cannot reach gatekeeper at {url}: {exc}") from exc
    try:
        body = response.json()
    except ValueError as exc:
        raise UpstreamUnavailableError(
            f"gatekeeper at {url} answered HTTP {response.status_code} without JSON"
        ) from exc
    if not isinstance(body, dict):
        raise UpstreamUnavailableError(f"gatekeeper at {url} answered {type(body).__name__}")
    if 200 <= response.status_code < 300:
        return body
    raise error_from_answer(response.status_code, body)


def remote_download(
    server: str, path: str, target: Path, *, timeout: float = 300.0, **kwargs: Any
) -> dict[str, str]:
    """Stream ``GET server+path`` into ``target`` (written as ``target.partial``, fsynced, then
    renamed, so a broken download leaves no file); the answer's headers. Errors as :func:`remote`.
    """
    import httpx

    url = f"{server.rstrip('/')}{path}"
    headers = _auth_headers()
    temporary = target.with_name(target.name + ".partial")
    try:
        with waiting(f"downloading from gatekeeper at {server}"), httpx.stream(
            "GET", url, headers=headers, timeout=timeout, **kwargs
        ) as response:
            if response.status_code != 200:
                response.read()
                try:
                    body = response.json()
                except ValueError:
                    body = {}
                answer = body if isinstance(body, dict) else {}
                raise error_from_answer(response.status_code, answer)
            with temporary.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(target)
            return dict(response.headers)
    except httpx.HTTPError as exc:
        raise UpstreamUnavailableError(f"cannot reach gatekeeper at {url}: {exc}") from exc
    except OSError as exc:
        raise CommandError(f"cannot write {target}: {exc.strerror}") from exc
    finally:
        temporary.unlink(missing_ok=True)


def error_from_answer(status: int, body: Mapping[str, Any]) -> GatekeeperError:
    """The error an API answer stands for (the API's ``error`` kinds are its contract)."""
    message = str(body.get("message") or f"HTTP {status}")
    if body.get("error") == "policy_refused":
        return CommandError(message, EXIT_FAILED)
    if status == 404:
        return NotFoundError(message)
    if status == 409:
        return ConflictError(message)
    if status in (400, 422):
        return InvalidInputError(message)
    return GatekeeperError(message)


# -- time --------------------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_time(
    text: str, *, option: str, now: datetime | None = None, ahead: bool = False
) -> datetime:
    """Every ``--since``/``--until``/``--expires-at``: ``7d``, ``12h``, ``30m``, ``45s``, ``2w``
    (before ``now``, or after it when ``ahead``), a date (``2026-11-24``, midnight UTC) or an
    RFC 3339 instant with its zone (``2026-11-24T12:00:00Z``). Returned in UTC."""
    value = text.strip()
    moment = now or datetime.now(UTC)
    match = _DURATION.match(value)
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return moment + delta if ahead else moment - delta
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInputError(
            f"{text!r} is neither a duration (7d, 12h) nor an RFC 3339 instant", field=option
        ) from exc
    if parsed.tzinfo is None:
        if not _DATE.match(value):
            raise InvalidInputError(
                f"{text!r} has no time zone (add Z or an offset such as +01:00)", field=option
            )
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# -- abbreviated ids ---------------------------------------------------------------------------


def resolve_prefix(text: str, candidates: Iterable[str], *, what: str, option: str) -> str:
    """The one id among ``candidates`` that is ``text`` or starts with it (``sha256:`` may be
    left out); :class:`NotFoundError` for none, :class:`AmbiguousIdError` listing several."""
    known = list(candidates)
    if text in known:
        return text
    matches = sorted(
        {c for c in known if c.startswith(text) or c.split(":", 1)[-1].startswith(text)}
    )
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise AmbiguousIdError(text, matches, field=option)
    raise NotFoundError(f"{what} {text} not found")


# -- progress ----------------------------------------------------------------------------------


@contextmanager
def waiting(label: str, *, after: float = 1.0, stream: TextIO | None = None) -> Iterator[None]:
    """A progress line on stderr (``LABEL ... 3s``) for waits longer than ``after`` seconds,
    only when stderr is a terminal; erased when the wait ends."""
    out = stream if stream is not None else sys.stderr
    try:
        interactive = out.isatty()
    except (AttributeError, ValueError):
        interactive = False
    if not interactive:
        yield
        return
    done = threading.Event()
    started = time.monotonic()

    def tick() -> None:
        if done.wait(after):
            return
        while True:
            out.write(f"\r{label} ... {time.monotonic() - started:.0f}s")
            out.flush()
            if done.wait(0.5):
                break
        out.write("\r\x1b[K")
        out.flush()

    thread = threading.Thread(target=tick, name="gatekeeper-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
