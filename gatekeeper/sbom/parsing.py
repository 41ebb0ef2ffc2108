"""Bounded JSON parsing for untrusted SBOM documents: size and nesting limits first, then parse.

Both limits are checked *before* the document is turned into Python objects:

* the size limit on the raw bytes (nothing is decoded past it);
* the nesting limit on a structural skeleton of the text: escaped backslashes and quotes are
  removed, every byte that is not a quote or a bracket is deleted with ``bytes.translate``, and
  the string literals left (a quote, the brackets they held, a quote) are removed; then
  innermost ``{}``/``[]`` pairs are stripped one level per pass. Every step runs in C (about
  15 ms for a 3 MB, 10,000 component SBOM), and a hostile ``[[[[...`` document is refused
  without recursion in the parser (CPython's ``json`` would otherwise raise ``RecursionError``
  only at the interpreter's limit, after allocating the whole tree).
"""

from __future__ import annotations

import gc
import json
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from gatekeeper.errors import InvalidInputError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "JsonLimits",
    "SbomDocumentError",
    "format_json_path",
    "load_bounded_json",
    "paused_gc",
]

#: 32 MiB: a 10,000 component SBOM with licences and hashes is about 5 MiB.
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
#: CycloneDX documents nest components inside components; real ones stay well under 40.
DEFAULT_MAX_DEPTH = 64

_INNERMOST_PAIR_RE = re.compile(rb"\{\}|\[\]")
_KEEP_QUOTES_AND_BRACKETS = bytes(range(256)).translate(None, b'{}[]"')
_LITERAL_RE = re.compile(rb'"[^"]*"')


class SbomDocumentError(InvalidInputError):
    """An SBOM document is malformed, too large, too deep or does not match its schema.

    ``path`` is the JSONPath (``$.components[3].hashes[0].alg``) of the first problem, or
    ``$`` when the problem concerns the whole document.
    """

    def __init__(self, message: str, *, path: str = "$") -> None:
        super().__init__(message, field=path)
        self.path = path


@dataclass(frozen=True, slots=True)
class JsonLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_depth <= 0:
            raise ValueError("JSON limits must be positive")


def _nesting_exceeds(data: bytes, max_depth: int) -> bool:
    """True when the bracket nesting of ``data`` is deeper than ``max_depth``.

    Malformed bracket sequences return False: the JSON parser then reports them precisely.
    """
    # Inside a JSON string a backslash always starts a two-byte escape: dropping every escaped
    # backslash, then every escaped quote (left to right), leaves exactly the quotes that open
    # and close string literals. Keeping only quotes and brackets shrinks the text ~10 times;
    # then every literal is a quote, the brackets it contained, and a quote.
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = _LITERAL_RE.sub(b"", unescaped.translate(None, _KEEP_QUOTES_AND_BRACKETS))
    for _ in range(max_depth):
        if not skeleton:
            return False
        stripped = _INNERMOST_PAIR_RE.sub(b"", skeleton)
        if len(stripped) == len(skeleton):
            return False  # unbalanced: not our problem to describe
        skeleton = stripped
    return bool(_INNERMOST_PAIR_RE.search(skeleton))


def _offset_beyond_depth(data: bytes, max_depth: int) -> int:
    """Byte offset of the first bracket opening level ``max_depth + 1`` (error path only)."""
    depth = 0
    in_string = escaped = False
    for offset, byte in enumerate(data):
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):
            depth += 1
            if depth > max_depth:
                return offset
        elif byte in (0x7D, 0x5D):
            depth -= 1
    return -1


def format_json_path(parts: Sequence[str | int]) -> str:
    """``["components", 3, "hashes"]`` -> ``$.components[3].hashes``."""
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isidentifier():
            text += f".{part}"
        else:
            text += "[" + json.dumps(part) + "]"
    return text


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextmanager
def paused_gc() -> Iterator[None]:
    """Defer the cyclic garbage collector while a large, acyclic JSON tree is built.

    Parsing a 10,000 component SBOM allocates ~500,000 containers; the collector's generation
    scans triggered by those allocations cost about a third of the time and most of the jitter,
    yet can free nothing (JSON trees have no cycles). Collection is only deferred: it resumes
    when the last concurrent user leaves, and reference counting frees memory as usual.
    """
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


def load_bounded_json(data: bytes, limits: JsonLimits | None = None) -> Any:
    """Parse ``data`` as UTF-8 JSON within ``limits``; raise :class:`SbomDocumentError`."""
    limits = limits or JsonLimits()
    # (1) size, before anything is decoded.
    if len(data) > limits.max_bytes:
        raise SbomDocumentError(
            f"document is {len(data)} bytes, larger than the limit of {limits.max_bytes} bytes"
        )
    if not data.strip():
        raise SbomDocumentError("document is empty")
    # (2) nesting depth, on the bracket skeleton, before the parser builds a tree.
    if _nesting_exceeds(data, limits.max_depth):
        offset = _offset_beyond_depth(data, limits.max_depth)
        raise SbomDocumentError(
            f"JSON nesting is deeper than {limits.max_depth} levels (at byte {offset})"
        )
    # (3) parse. Only UTF-8 is accepted (RFC 8259 section 8.1); a BOM is tolerated.
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SbomDocumentError(f"document is not UTF-8 (byte {exc.start})") from exc
    try:
        with paused_gc():
            return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise SbomDocumentError(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except (ValueError, RecursionError) as exc:  # int digit limit, NaN, residual depth
        raise SbomDocumentError(f"malformed JSON: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
