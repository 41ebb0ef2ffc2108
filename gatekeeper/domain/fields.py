"""Limits on the free-text fields of an evaluation request, the same for both doors.

Every request field that is stored in its own audit column is checked here, when the
:class:`~gatekeeper.domain.decision.EvaluationRequest` is built, so the REST API (422) and the
admission webhook (400) refuse the same values with the same message naming the field, and
nothing reaches the audit store (or its durable spool) that the store would refuse: no control
character (a NUL byte is refused by PostgreSQL) and nothing longer than its column.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from gatekeeper.errors import InvalidInputError

__all__ = ["FIELD_LIMITS", "check_request_text"]

#: Longest value per field, in characters (the audit columns' sizes).
FIELD_LIMITS: Mapping[str, int] = {
    "environment": 128,
    "namespace": 253,
    "caller": 256,
    "ticket.intent_id": 256,
    "ticket.plan_id": 256,
    "ticket.ticket_id": 256,
    "ticket.deploy_id": 256,
}


def check_request_text(value: str | None, field: str) -> None:
    """Raise :class:`InvalidInputError` naming ``field`` for an over-long or unsafe value.

    Refused: control characters (category Cc: NUL, escape, newline...), lone surrogates (Cs),
    which no JSON encoder or database text column takes, and values over the field's limit.
    """
    if value is None:
        return
    limit = FIELD_LIMITS[field]
    if not isinstance(value, str):
        raise InvalidInputError(f"{field} must be a string", field=field)
    if len(value) > limit:
        raise InvalidInputError(
            f"{field} is {len(value)} characters long; at most {limit} are allowed", field=field
        )
    if value.isascii() and value.isprintable():
        return  # no control character (ASCII's Cc are exactly its unprintables), no surrogate
    for position, character in enumerate(value):
        if unicodedata.category(character) in ("Cc", "Cs"):
            raise InvalidInputError(
                f"{field} contains the control character U+{ord(character):04X} at position "
                f"{position}",
                field=field,
            )
