"""``gatekeeper sbom ...``: validate and inspect SBOM documents without a server.

Mounted by the main CLI with ``app.add_typer(sbom_app, name="sbom")``.

``gatekeeper sbom validate FILE`` exits 0 when the document is valid, 1 when it is not (the
reason and the JSON path of the first problem on stderr), 2 when the file cannot be read.
A file that is not JSON at all is *invalid* (1): it was read, and it is not an SBOM.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gatekeeper.cli.common import EXIT_ERROR, EXIT_FAILED, EXIT_OK, command_group, fail
from gatekeeper.cli.output import OutputFormat, OutputOption, emit
from gatekeeper.errors import InvalidInputError

__all__ = ["EXIT_INVALID", "EXIT_UNREADABLE", "EXIT_VALID", "sbom_app"]

EXIT_VALID, EXIT_INVALID, EXIT_UNREADABLE = EXIT_OK, EXIT_FAILED, EXIT_ERROR

# The limits of gatekeeper.sbom.parsing (DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH), repeated here so
# that ``gatekeeper --help`` does not import the SBOM stack; tests/unit/sbom check they agree.
DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH = 32 * 1024 * 1024, 64

sbom_app = command_group("Validate and inspect CycloneDX / SPDX SBOM documents.")


def _read(path: str, max_bytes: int) -> bytes:
    """Read at most ``max_bytes + 1`` bytes (enough to tell "too large"); exit 2 on failure."""
    try:
        if path == "-":
            return sys.stdin.buffer.read(max_bytes + 1)
        with Path(path).open("rb") as handle:
            return handle.read(max_bytes + 1)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", EXIT_UNREADABLE)


MaxBytes = Annotated[
    int, typer.Option(metavar="BYTES", help="Largest accepted document, in bytes.", min=1)
]
MaxDepth = Annotated[int, typer.Option(metavar="N", help="Deepest accepted JSON nesting.", min=1)]


@sbom_app.command("validate")
def validate_command(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="SBOM file (CycloneDX or SPDX 2.3 JSON), or -")
    ],
    max_bytes: MaxBytes = DEFAULT_MAX_BYTES,
    max_depth: MaxDepth = DEFAULT_MAX_DEPTH,
) -> None:
    """Validate FILE: exit 0 valid, 1 invalid (with the reason), 2 unreadable."""
    from gatekeeper.tool_wiring import validate_sbom

    data = _read(file, max_bytes)
    if len(data) > max_bytes:
        typer.echo(f"invalid: {file}: document is larger than the limit of {max_bytes} bytes",
                   err=True)
        raise typer.Exit(EXIT_INVALID)
    try:
        parsed = validate_sbom(data, max_bytes=max_bytes, max_depth=max_depth)
    except InvalidInputError as exc:  # the verdict on the document, not an error of the command
        typer.echo(f"invalid: {file}: {exc.message}", err=True)
        raise typer.Exit(EXIT_INVALID) from exc
    typer.echo(f"valid: {file}: {parsed.format} {parsed.spec_version}, sha256 {parsed.sha256}")


@sbom_app.command("evidence")
def evidence_command(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="SBOM file (CycloneDX or SPDX 2.3 JSON), or -")
    ],
    digest: Annotated[
        str,
        typer.Option(metavar="DIGEST", help="Image digest the SBOM is uploaded for (sha256:...)."),
    ] = "",
    max_bytes: MaxBytes = DEFAULT_MAX_BYTES,
    max_depth: MaxDepth = DEFAULT_MAX_DEPTH,
    output: OutputOption = OutputFormat.JSON,
) -> None:
    """Print the ``evidence.sbom.documents`` entry FILE would give an image (policy view)."""
    from gatekeeper.domain.reference import parse_digest
    from gatekeeper.tool_wiring import sbom_file_evidence

    data = _read(file, max_bytes)
    image_digest = parse_digest(digest, field="--digest") if digest else None
    evidence = sbom_file_evidence(
        data, image_digest, f"file {file}", max_bytes=max_bytes, max_depth=max_depth
    )
    emit(evidence, output)
    if evidence["state"] == "invalid":
        raise typer.Exit(EXIT_INVALID)

