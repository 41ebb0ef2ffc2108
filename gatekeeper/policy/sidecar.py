"""What a running OPA serves, asked over its HTTP API: the loaded revision and data."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from gatekeeper.errors import PolicyEngineError
from gatekeeper.policy.bundle import PolicyFiles

__all__ = ["SidecarBundleRevision", "opa_serves"]


def _expected_data(files: PolicyFiles) -> dict[str, Any]:
    """Data paths (``gatekeeper/config``) and the values the revision's JSON files put there."""
    expected: dict[str, Any] = {}
    for name, content in files.policies.items():
        if not name.endswith(".json"):
            continue  # YAML data documents are served too, but not compared here
        prefix = list(Path(name).parent.parts)
        document = json.loads(content)
        if not isinstance(document, dict):
            continue
        for key, value in document.items():
            path = [*prefix, key]
            if path == ["gatekeeper"] and isinstance(value, dict):
                # data.gatekeeper also holds the exceptions: compare one level down
                expected.update({f"gatekeeper/{sub}": item for sub, item in value.items()})
            else:
                expected["/".join(path)] = value
    return expected


def opa_serves(client: httpx.Client, files: PolicyFiles, exceptions: list[dict[str, Any]]) -> bool:
    """True when the OPA behind ``client`` serves exactly these modules, data and exceptions."""
    try:
        modules = client.get("/v1/policies").json().get("result", [])
        served = client.get("/v1/data/gatekeeper/exceptions").json().get("result", [])
        wanted = sorted(c.decode() for n, c in files.policies.items() if n.endswith(".rego"))
        loaded = sorted(str(m.get("raw", "")) for m in modules if isinstance(m, dict))
        if loaded != wanted or served != exceptions:
            return False
        for path, value in _expected_data(files).items():
            if client.get(f"/v1/data/{path}").json().get("result") != value:
                return False
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
    return True


class SidecarBundleRevision:
    """The revision an OPA sidecar really serves: its bundle manifest's ``revision``.

    For ``OpaPolicyEngine(local_revision=SidecarBundleRevision(client).current)``: decisions then
    record the same revision id as the store (the sidecar loads ``GET /v1/policies/bundle``,
    whose manifest revision is the revision id). Cached for ``ttl`` seconds.
    """

    def __init__(
        self, client: httpx.Client, *, bundle: str = "gatekeeper", ttl: float = 2.0,
        describe: str = "OPA sidecar",
    ) -> None:
        self._client = client
        self._describe = describe
        self._path = f"/v1/data/system/bundles/{bundle}/manifest/revision"
        self._ttl = ttl
        self._cached: tuple[float, str] | None = None
        self._lock = threading.Lock()

    def current(self) -> str:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self._ttl:
                return self._cached[1]
            try:
                revision = self._client.get(self._path).json().get("result")
            except httpx.HTTPError as exc:
                raise PolicyEngineError(f"{self._describe} unreachable: {exc}") from exc
            except (ValueError, AttributeError) as exc:
                raise PolicyEngineError(
                    f"{self._describe}: cannot read its bundle revision: {exc}"
                ) from exc
            if not isinstance(revision, str) or not revision:
                raise PolicyEngineError(
                    f"{self._describe} has not loaded the gatekeeper bundle yet"
                )
            self._cached = (now, revision)
            return revision
