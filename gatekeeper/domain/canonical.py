"""RFC 8785 (JCS) canonical JSON: the form every hash of the audit trail and every evidence
document hash is computed over (moved here from gatekeeper/audit/chain.py so that the core can
hash evidence documents the same way the audit trail does)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import rfc8785

from gatekeeper.errors import InvalidInputError

__all__ = ["canonical_json"]


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) canonical JSON; refuses values JSON cannot carry exactly.

    Documents whose every key is ASCII and whose every float prints the same in Python and
    ECMAScript take the C ``json`` encoder (same bytes, a tenth of the time); anything else
    goes through the reference implementation. A unit test compares both on edge cases.
    """
    if _fast_path_safe(value):
        try:
            # orjson writes these documents byte for byte as the ``json`` call below (compact,
            # UTF-8, the same escapes, shortest round-trip floats in the range the check lets
            # through; a unit test compares the two), several times faster. It refuses what
            # it cannot write (nesting deeper than 255, lone surrogates): ``json`` then decides.
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            pass
        try:
            return json.dumps(
                value, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                allow_nan=False,
            ).encode("utf-8")
        except (TypeError, ValueError, UnicodeEncodeError):
            pass  # the reference implementation below says what is wrong
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"document cannot be canonicalised (RFC 8785): {exc}") from exc


_MAX_SAFE_INTEGER = 2**53 - 1


def _fast_path_safe(value: Any) -> bool:
    """True when ``json.dumps`` (sorted, compact) is byte-identical to RFC 8785 for ``value``.

    They differ only on: object keys outside ASCII (RFC 8785 sorts by UTF-16 code units),
    floats that Python prints differently from ECMAScript (integral values ``12.0`` vs ``12``,
    exponents below 1e-4 or from 1e16), integers beyond 2**53 (RFC 8785 refuses them), and
    non-JSON types. Strings are escaped identically (``ensure_ascii=False``).
    """
    stack = [value]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        item = pop()
        kind = type(item)  # exact types first (what parsed JSON is made of), then subclasses
        if kind is str or item is None or kind is bool:
            continue
        if kind is dict:
            try:
                if not "".join(item).isascii():  # every key ASCII (a non-str key: TypeError)
                    return False
            except TypeError:
                return False
            extend(item.values())
            continue
        if kind is list or kind is tuple:
            extend(item)
            continue
        if isinstance(item, str) or isinstance(item, bool):
            continue
        if isinstance(item, int):
            if -_MAX_SAFE_INTEGER <= item <= _MAX_SAFE_INTEGER:
                continue
            return False
        if isinstance(item, float):
            magnitude = abs(item)
            if item.is_integer() or not 1e-4 <= magnitude < 1e16:
                return False
            continue
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str) or not key.isascii():
                    return False
                push(child)
            continue
        if isinstance(item, (list, tuple)):
            extend(item)
            continue
        return False
    return True


