"""The API server client: JSON over HTTPS with a bearer token re-read on every request
(projected service-account tokens rotate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from gatekeeper.errors import GatekeeperError, UpstreamUnavailableError

__all__ = ["KubeApiError", "KubeClient", "WEBHOOK_PATHS"]

#: The collection path of each webhook configuration kind.
WEBHOOK_PATHS = {
    "ValidatingWebhookConfiguration":
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
    "MutatingWebhookConfiguration":
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
}


class KubeApiError(GatekeeperError):
    """The API server refused a request; the message carries its status and reason."""

    kind = "kube_api"

    def __init__(self, method: str, path: str, status: int, reason: str) -> None:
        super().__init__(f"API server refused {method} {path}: HTTP {status}: {reason}",
                         context={"status": status})
        self.status = status


class KubeClient:
    """``get``/``create``/``replace``/``delete`` of one object by its API path."""

    def __init__(self, server: str, *, token_file: Path, ca_file: Path | None,
                 timeout: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self._token_file = token_file
        verify: Any = str(ca_file) if ca_file is not None else True
        self._http = httpx.Client(base_url=server.rstrip("/"), verify=verify, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _token(self) -> str:
        try:
            token = self._token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise GatekeeperError(
                f"cannot read the service-account token {self._token_file}: {exc.strerror}"
            ) from exc
        if not token:
            raise GatekeeperError(f"the service-account token file {self._token_file} is empty")
        return token

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 *, missing_ok: bool = False) -> dict[str, Any] | None:
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        try:
            response = self._http.request(method, path, headers=headers,
                                          content=None if body is None else json.dumps(body),
                                          )
        except httpx.HTTPError as exc:
            raise UpstreamUnavailableError(
                f"API server {self._http.base_url} unreachable ({method} {path}): {exc}"
            ) from exc
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            reason = response.text.strip()
            try:
                reason = str(response.json().get("message") or reason)
            except ValueError:
                pass
            raise KubeApiError(method, path, response.status_code, reason)
        try:
            answer: dict[str, Any] = response.json()
        except ValueError as exc:
            raise UpstreamUnavailableError(
                f"API server answered {method} {path} with something not JSON") from exc
        return answer

    def get(self, path: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        return self._request("GET", path, missing_ok=True)

    def create(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self._request("POST", collection, body)
        assert answer is not None
        return answer

    def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT ``body`` (carrying the resourceVersion read: a concurrent change is a 409)."""
        answer = self._request("PUT", path, body)
        assert answer is not None
        return answer

    def delete(self, path: str) -> bool:
        """Delete; False when it was already gone."""
        return self._request("DELETE", path, missing_ok=True) is not None
