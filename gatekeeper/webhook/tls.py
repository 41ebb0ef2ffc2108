"""Serving TLS for the webhooks: certificate and key from files, reloaded when they change.

The API server only talks HTTPS to webhooks, and the certificate is rotated under a running
pod (cert-manager renews it, the kubelet updates the mounted Secret). Restarting on every
rotation would drop in-flight reviews, so the server context checks the files' modification
times at most every ``check_interval`` seconds, on the TLS ClientHello of a new connection
(``SSLContext.sni_callback``), and hands that connection a freshly loaded context when they
changed. A rotation that leaves the files unreadable or mismatched keeps the previous
certificate and logs the error (the pod stays serving until the next good rotation).

Optional client-certificate verification: with ``client_ca_file`` the server requires the API
server to present a certificate signed by that CA (kube-apiserver's
``--admission-control-config-file`` with a ``kubeConfigFile`` naming the client certificate).

Use with uvicorn: ``uvicorn.run(app, ssl_context_factory=lambda _config, _default:
reloading.context, ...)`` (``ssl_context_factory`` exists since uvicorn 0.47).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gatekeeper.errors import ConfigurationError

__all__ = ["ReloadingServerContext"]

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
                context.load_verify_locations(cafile=self._client_ca_file)
                context.verify_mode = ssl.CERT_REQUIRED
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
