"""Serving TLS for the webhooks: certificate and key from files, reloaded when they change.

The API server only talks HTTPS to webhooks, and the certificate is rotated under a running
pod (cert-manager renews it, the kubelet updates the mounted Secret). Restarting on every
rotation would drop in-flight reviews, so the server context checks the files' modification
times at most every ``check_interval`` seconds, on the TLS ClientHello of a new connection
(``SSLContext.sni_callback``), and hands that connection a freshly loaded context when they
changed. A rotation that leaves the files unreadable or mismatched keeps the previous
certificate and logs the error (the pod stays serving until the next good rotation).

Optional client certificates, for the admission endpoints only: with ``client_ca_file`` the
TLS handshake *asks* for a client certificate and verifies any certificate presented against
that CA (a certificate from another CA fails the handshake), but lets a client without one
connect, so the kubelet's probes (``/healthz``, ``/readyz``) and the REST API (bearer tokens)
keep working. :class:`ClientCertificateProtocol` tells the application, per connection, whether a
verified certificate was presented (``scope["extensions"]["tls"]["client_certificate"]``), and
:class:`AdmissionClientCertificateGate` refuses ``/admission/...`` requests without one (403),
failing closed when the server cannot say (the lean admission path,
:mod:`gatekeeper.webhook.asgi`, applies the same check, :func:`has_client_certificate`). The
API server presents its certificate with ``--admission-control-config-file`` and a
``kubeConfigFile`` naming it.

Use with uvicorn: ``uvicorn.run(app, http=ClientCertificateProtocol,
ssl_context_factory=lambda _config, _default: reloading.context, ...)``
(``ssl_context_factory`` exists since uvicorn 0.47).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gatekeeper.errors import ConfigurationError

__all__ = [
    "ADMISSION_PREFIX",
    "CLIENT_CERTIFICATE_REQUIRED",
    "AdmissionClientCertificateGate",
    "ClientCertificateProtocol",
    "ReloadingServerContext",
    "has_client_certificate",
    "send_client_certificate_required",
]

ADMISSION_PREFIX = "/admission/"

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

log = logging.getLogger(__name__)


class ReloadingServerContext:
    """A server :class:`ssl.SSLContext` whose certificate follows the files on disk."""

    def __init__(
        self,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        *,
        client_ca_file: str | os.PathLike[str] | None = None,
        check_interval: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cert_file = Path(cert_file)
        self._key_file = Path(key_file)
        self._client_ca_file = Path(client_ca_file) if client_ca_file else None
        self._check_interval = check_interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._current = self._load()  # raises ConfigurationError: refuse to start without TLS
        self._next_check = monotonic() + check_interval
        #: Handed to the server; it swaps in ``_current`` on each handshake when newer.
        self.context = self._load()
        self.context.sni_callback = self._on_client_hello
        self.reloads = 0

    def _files(self) -> list[Path]:
        return [p for p in (self._cert_file, self._key_file, self._client_ca_file) if p]

    def _file_stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for path in self._files():
            try:
                stat = path.stat()
            except OSError as exc:
                raise ConfigurationError(
                    f"TLS file {path} cannot be read: {exc.strerror}"
                ) from exc
            stamps.append((stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self._cert_file, self._key_file)
            if self._client_ca_file is not None:
                # Optional at the handshake (probes and the REST API have none); required for
                # the admission endpoints by AdmissionClientCertificateGate.
                context.load_verify_locations(cafile=self._client_ca_file)
                context.verify_mode = ssl.CERT_OPTIONAL
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"TLS certificate {self._cert_file} with key {self._key_file} cannot be "
                f"loaded: {exc}"
            ) from exc
        context.set_alpn_protocols(["http/1.1"])
        return context

    def maybe_reload(self) -> bool:
        """Reload when the files changed (at most every ``check_interval``); True if reloaded."""
        now = self._monotonic()
        if now < self._next_check:
            return False
        with self._lock:
            if now < self._next_check:
                return False
            self._next_check = now + self._check_interval
            try:
                stamp = self._file_stamp()
                if stamp == self._stamp:
                    return False
                fresh = self._load()
            except ConfigurationError as exc:
                log.error("TLS reload failed, keeping the previous certificate: %s", exc.message)
                return False
            self._current, self._stamp = fresh, stamp
            self.reloads += 1
            log.info("TLS certificate reloaded from %s", self._cert_file)
            return True

    def _on_client_hello(
        self, connection: ssl.SSLObject | ssl.SSLSocket, _server_name: str | None,
        _context: ssl.SSLContext,
    ) -> None:
        self.maybe_reload()
        if self.reloads:
            connection.context = self._current


class ClientCertificateProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools) that tells the application whether the
    connection's peer presented a certificate the TLS context verified (uvicorn does not put it
    in the scope): ``scope["extensions"]["tls"]["client_certificate"]`` on every request.
    Works on asyncio's and uvloop's TLS transports (both report ``ssl_object`` once the
    handshake is done, before ``connection_made``)."""

    _client_certificate = False

    def connection_made(self, transport: Any) -> None:  # asyncio calls it after the handshake
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        self._client_certificate = bool(ssl_object is not None and ssl_object.getpeercert())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {"tls": {"client_certificate": self._client_certificate}}


#: The 403 answer of an admission request without a verified client certificate.
CLIENT_CERTIFICATE_REQUIRED = json.dumps({"error": {
    "kind": "unauthenticated", "field": "tls",
    "message": "the admission endpoints require a client certificate signed by "
               "GATEKEEPER_TLS_CLIENT_CA_FILE (the API server's)",
}}).encode()


def has_client_certificate(scope: _Scope) -> bool:
    """Whether the server said the connection presented a verified client certificate (False
    when it did not say: fail closed). Logs a refusal."""
    tls = scope.get("extensions", {}).get("tls") or {}
    if tls.get("client_certificate") is True:
        return True
    log.warning("admission request from %s refused: no client certificate",
                (scope.get("client") or ("?",))[0])
    return False


async def send_client_certificate_required(send: _Send) -> None:
    body = CLIENT_CERTIFICATE_REQUIRED
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class AdmissionClientCertificateGate:
    """ASGI middleware: ``/admission/...`` needs a verified client certificate; other paths
    do not. A server that does not report the certificate (no ``tls`` extension) is refused
    too: the gate fails closed."""

    def __init__(self, app: _App) -> None:
        self.app = app

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope.get("type") != "http" or not str(scope.get("path", "")).startswith(
            ADMISSION_PREFIX
        ):
            await self.app(scope, receive, send)
            return
        if has_client_certificate(scope):
            await self.app(scope, receive, send)
            return
        await send_client_certificate_required(send)
