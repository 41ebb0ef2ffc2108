"""Exceptions: time-boxed, approved waivers of named policies for named images.

An exception waives what actually runs. Its ``images`` are digests (``sha256:...``), digest-pinned
references (``registry/repository[:tag]@sha256:...``), or tagged references
(``registry/repository:tag``) that are resolved to their digest when the exception is approved
and stored with it (``digests``): a reference whose digest differs never matches. A glob over
repositories, or a repository without a tag, waives any digest and must say so with
``any_digest: true``; every decision that uses such an exception says so too.

Four eyes, two people: an exception is created *pending* and waives nothing until a second
authenticated principal approves it (``POST /v1/exceptions/{id}/approve``); the approver's token
subject, compared after :func:`normalise_subject`, must differ from the creator's.

An exception is validated here (parse at the edge), stored by
:class:`~gatekeeper.policy.store.SqlPolicyStore`, and handed to Rego as data under
``data.gatekeeper.exceptions``. Python never decides whether an exception applies:
``policies/main.rego`` does, with ``input.evaluated_at`` as "now", so an exception stops
applying at its expiry instant without anyone acting, and a replay of a past decision sees the
exceptions as they were then (each carries ``created_at`` and, once revoked, ``revoked_at``).

Two ways to hand them to OPA:

* :class:`ExceptionFilePublisher` writes ``{"gatekeeper": {"exceptions": [...]}}`` atomically into
  a directory the embedded OPA loads and watches beside the policy directory (outside it, so the
  policy revision hash does not change with every exception);
* :class:`DataApiExceptionPublisher` ``PUT``s the list to ``/v1/data/gatekeeper/exceptions`` of an
  OPA sidecar (the bundle's manifest roots leave that path to the Data API).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import httpx

from gatekeeper.domain.policy_exceptions import (
    MAX_EXCEPTION_LIFETIME,
    ExceptionRequest,
    PolicyException,
    as_utc,
    exceptions_document,
    format_instant,
    normalise_subject,
    parse_instant,
    pattern_kind,
)
from gatekeeper.errors import PolicyEngineError

__all__ = [
    "EXCEPTIONS_DATA_PATH",
    "MAX_EXCEPTION_LIFETIME",
    "DataApiExceptionPublisher",
    "ExceptionFilePublisher",
    "ExceptionPublisher",
    "ExceptionRequest",
    "PolicyException",
    "as_utc",
    "exceptions_document",
    "format_instant",
    "normalise_subject",
    "parse_instant",
    "pattern_kind",
]

#: Where Rego finds the exceptions.
EXCEPTIONS_DATA_PATH = "/v1/data/gatekeeper/exceptions"


class ExceptionPublisher(Protocol):
    def publish(self, document: list[dict[str, Any]]) -> None:
        """Make ``document`` the value of ``data.gatekeeper.exceptions``."""
        ...


class ExceptionFilePublisher:
    """Writes ``data.json`` atomically into a directory an OPA loads (and watches)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    @property
    def directory(self) -> Path:
        return self._directory

    def ensure(self) -> None:
        """Before OPA starts: the directory must exist and hold a data document (kept if there)."""
        if not (self._directory / "data.json").is_file():
            self.publish([])

    def publish(self, document: list[dict[str, Any]]) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(
            {"gatekeeper": {"exceptions": document}}, sort_keys=True, separators=(",", ":")
        )
        target = self._directory / "data.json"
        if target.is_file() and target.read_text() == payload:
            return
        # Write beside, then rename: OPA's watcher never sees a half-written file. The
        # temporary name is hidden, so OPA's loader skips it.
        handle, temporary = tempfile.mkstemp(prefix=".exceptions-", dir=self._directory)
        with os.fdopen(handle, "w") as stream:
            stream.write(payload)
        os.replace(temporary, target)


class DataApiExceptionPublisher:
    """``PUT /v1/data/gatekeeper/exceptions`` on an OPA server (a sidecar)."""

    def __init__(self, client: httpx.Client, *, describe: str) -> None:
        self._client = client
        self._describe = describe

    def publish(self, document: list[dict[str, Any]]) -> None:
        try:
            response = self._client.put(EXCEPTIONS_DATA_PATH, json=document)
        except httpx.HTTPError as exc:
            raise PolicyEngineError(
                f"{self._describe}: cannot publish exceptions: {exc}"
            ) from exc
        if response.status_code not in (200, 204):
            raise PolicyEngineError(
                f"{self._describe} refused the exceptions (HTTP {response.status_code}): "
                f"{response.text[:300]}"
            )
