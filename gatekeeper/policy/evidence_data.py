"""Large evidence reaches OPA once: ``PUT /v1/data/gatekeeper/evidence/<sha256>``.

The input of a decision carries a large SBOM component list by its sha256 (see
:mod:`gatekeeper.domain.evidence_documents`); this adapter puts the document's index into the
OPA data store the first time a decision references it, and remembers what it put there.
OPA may lose it (a restart of the embedded child or of the sidecar, a reload of the data
files): the decision then lists the hash in ``missing_evidence``, and the engine puts it again
and asks once more, failing closed if it is still missing (:class:`OpaPolicyEngine`).

Both the embedded OPA and a sidecar accept the write: ``gatekeeper/evidence`` is outside the
roots of the bundles the gatekeeper builds (:func:`gatekeeper.policy.bundle.bundle_roots`).
At most ``max_documents`` documents stay loaded; the least recently used is deleted.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from gatekeeper.domain.evidence_documents import build_data_document
from gatekeeper.errors import GatekeeperError, PolicyEngineError

__all__ = ["EVIDENCE_DATA_PATH", "OpaEvidenceData"]

log = logging.getLogger(__name__)

EVIDENCE_DATA_PATH = "/v1/data/gatekeeper/evidence"


class OpaEvidenceData:
    """What this process loaded into one OPA's ``data.gatekeeper.evidence``."""

    def __init__(self, client: httpx.Client, *, describe: str, max_documents: int = 256) -> None:
        if max_documents < 1:
            raise PolicyEngineError("the OPA evidence cache must hold at least one document")
        self._client = client
        self._describe = describe
        self._max = max_documents
        self._loaded: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def ensure(self, documents: Mapping[str, Any]) -> None:
        """Load every document of ``documents`` (sha256 -> document) not loaded yet."""
        with self._lock:
            wanted = [digest for digest in documents if digest not in self._loaded]
            for digest in documents:
                if digest in self._loaded:
                    self._loaded.move_to_end(digest)
        self.load(documents, wanted)

    def load(self, documents: Mapping[str, Any], digests: Iterable[str]) -> None:
        """Put ``digests`` (again), whatever this process believes is loaded."""
        for digest in digests:
            try:
                index = build_data_document(documents[digest])
            except GatekeeperError as exc:
                raise PolicyEngineError(
                    f"evidence document {digest} cannot be indexed: {exc.message}"
                ) from exc
            self._request("PUT", digest, json.dumps(index, separators=(",", ":")))
            with self._lock:
                self._loaded[digest] = None
                self._loaded.move_to_end(digest)
                evicted = []
                while len(self._loaded) > self._max:
                    evicted.append(self._loaded.popitem(last=False)[0])
            for old in evicted:
                try:
                    self._request("DELETE", old, None)
                except PolicyEngineError as exc:  # a leftover costs memory, never a decision
                    log.warning("cannot unload evidence document %s: %s", old, exc.message)

    def forget(self) -> None:
        """Assume nothing is loaded (e.g. after OPA was replaced)."""
        with self._lock:
            self._loaded.clear()

    def _request(self, method: str, digest: str, body: str | None) -> None:
        try:
            response = self._client.request(
                method, f"{EVIDENCE_DATA_PATH}/{digest}", content=body,
                headers={"Content-Type": "application/json"} if body is not None else None,
            )
        except httpx.TimeoutException as exc:
            raise PolicyEngineError(
                f"{self._describe} timed out loading evidence document {digest}"
            ) from exc
        except httpx.HTTPError as exc:
            raise PolicyEngineError(f"{self._describe} unreachable: {exc}") from exc
        if response.status_code not in (200, 204) and not (
            method == "DELETE" and response.status_code == 404
        ):
            raise PolicyEngineError(
                f"{self._describe} refused evidence document {digest} ({method} HTTP "
                f"{response.status_code}): {response.text[:300]}"
            )
