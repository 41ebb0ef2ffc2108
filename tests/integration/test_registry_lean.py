"""The registry client's lean HTTP/1.1 path (``gatekeeper/registry/_lean.py``) against loopback
HTTP/1.1 servers started by the test: kept-alive connections are reused, a connection the
server closed meanwhile is replaced, a redirect to another origin is followed without the
credentials, and a body over the limit is refused."""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gatekeeper.domain.reference import Digest, parse_image_reference
from gatekeeper.errors import VerificationError
from gatekeeper.registry import DockerConfigCredentials, OciRegistryClient, RegistryClientSettings

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
BLOB = b"the blob's bytes"
BLOB_DIGEST = Digest("sha256", hashlib.sha256(BLOB).hexdigest())

Handler = Callable[[BaseHTTPRequestHandler], None]


class KeepAliveServer:
    """HTTP/1.1 on a loopback port; counts TCP connections and requests."""

    def __init__(self, handle: Handler) -> None:
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with owner.lock:
                    owner.connections += 1

            def finish(self) -> None:
                super().finish()
                with owner.lock:
                    owner.connections_closed += 1

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                with owner.lock:
                    owner.requests.append((self.command, self.path, dict(self.headers)))
                handle(self)

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.lock = threading.Lock()
        self.connections = 0
        self.connections_closed = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], KeepAliveServer]]:
    servers: list[KeepAliveServer] = []

    def start(handle: Handler) -> KeepAliveServer:
        servers.append(KeepAliveServer(handle))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def answer(request: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
    request.send_response(status)
    for name, value in headers.items():
        request.send_header(name.replace("_", "-"), value)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(body)


def client_for(*servers: KeepAliveServer, **options: object) -> OciRegistryClient:
    hosts = [{"host": server.host, "plain_http": True} for server in servers]
    return OciRegistryClient(RegistryClientSettings.from_mapping({"hosts": hosts}), **options)  # type: ignore[arg-type]


def manifest(request: BaseHTTPRequestHandler) -> None:
    answer(request, 200, MANIFEST, Content_Type=OCI_MANIFEST,
           Docker_Content_Digest=MANIFEST_DIGEST)  # fmt: skip


def test_kept_alive_connections_are_reused(serve: Callable[[Handler], KeepAliveServer]) -> None:
    server = serve(manifest)
    client = client_for(server)
    reference = parse_image_reference(f"{server.host}/app:1.2")

    digests = {str(client.resolve_digest(reference)) for _ in range(5)}
    client.get_manifest(reference, "1.2")

    assert digests == {MANIFEST_DIGEST}
    assert len(server.requests) == 6
    assert server.connections == 1
    assert server.requests[0][2]["User-Agent"].startswith("forge-gatekeeper")


def test_a_plain_http_registry_creates_no_tls_context(
    serve: Callable[[Handler], KeepAliveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain-HTTP registry never builds an ``SSLContext`` nor loads a CA bundle (about
    20 ms of a ``gatekeeper verify``); its round trips go over the lean path."""
    created: list[str] = []
    original_new = ssl.SSLContext.__new__

    def counting_new(cls: type[ssl.SSLContext], *args: Any, **kwargs: Any) -> ssl.SSLContext:
        created.append(cls.__name__)
        context: ssl.SSLContext = original_new(cls, *args, **kwargs)
        return context

    monkeypatch.setattr(ssl.SSLContext, "__new__", staticmethod(counting_new))
    server = serve(manifest)
    client = client_for(server)
    reference = parse_image_reference(f"{server.host}/app:1.2")

    digest = client.resolve_digest(reference)
    client.get_manifest(reference, "1.2")

    assert str(digest) == MANIFEST_DIGEST
    assert len(server.requests) == 2
    assert created == []


def test_a_connection_the_registry_closed_is_replaced(
    serve: Callable[[Handler], KeepAliveServer],
) -> None:
    def answer_then_hang_up(request: BaseHTTPRequestHandler) -> None:
        manifest(request)
        request.wfile.flush()
        request.close_connection = True  # without saying so: the client's copy goes stale

    server = serve(answer_then_hang_up)
    client = client_for(server)
    reference = parse_image_reference(f"{server.host}/app:1.2")

    digests = [str(client.resolve_digest(reference)) for _ in range(3)]

    assert digests == [MANIFEST_DIGEST] * 3
    assert len(server.requests) == 3
    assert server.connections == 3


def test_a_redirect_to_another_origin_is_followed_without_the_credentials(
    serve: Callable[[Handler], KeepAliveServer],
) -> None:
    storage = serve(lambda request: answer(request, 200, BLOB))
    expected = "Basic " + base64.b64encode(b"robot:s3cret").decode()

    def registry(request: BaseHTTPRequestHandler) -> None:
        if request.headers.get("Authorization") != expected:
            answer(request, 401, WWW_Authenticate='Basic realm="registry"')
        else:
            answer(request, 307, Location=f"http://{storage.host}/blobs/{BLOB_DIGEST.hex}")

    server = serve(registry)
    config = {"auths": {server.host: {"auth": base64.b64encode(b"robot:s3cret").decode()}}}
    client = client_for(server, storage,
                        credentials=DockerConfigCredentials.from_json(json.dumps(config)))  # fmt: skip

    content = client.get_blob(parse_image_reference(f"{server.host}/app:1.2"), BLOB_DIGEST,
                              size=len(BLOB))  # fmt: skip

    assert content == BLOB
    assert server.requests[-1][2].get("Authorization") == expected
    assert [r[1] for r in storage.requests] == [f"/blobs/{BLOB_DIGEST.hex}"]
    assert "Authorization" not in storage.requests[0][2]


def test_a_body_over_the_limit_is_refused_naming_the_limit(
    serve: Callable[[Handler], KeepAliveServer],
) -> None:
    server = serve(lambda request: answer(request, 200, b"x" * 2048))
    client = client_for(server)

    with pytest.raises(VerificationError) as caught:
        client.get_blob(parse_image_reference(f"{server.host}/app:1.2"), BLOB_DIGEST,
                        max_bytes=1024)  # fmt: skip

    assert caught.value.message == (
        f"registry {server.host}: fetching blob app@{BLOB_DIGEST} refused: 2048 bytes, "
        "more than the limit of 1024 bytes"
    )


def test_a_request_after_the_registry_closed_the_idle_connection_succeeds(
    serve: Callable[[Handler], KeepAliveServer],
) -> None:
    def answer_then_close(request: BaseHTTPRequestHandler) -> None:
        manifest(request)
        request.wfile.flush()
        request.close_connection = True

    server = serve(answer_then_close)
    client = client_for(server)
    reference = parse_image_reference(f"{server.host}/app:1.2")
    client.resolve_digest(reference)
    deadline = time.monotonic() + 5
    while server.connections_closed < 1 and time.monotonic() < deadline:
        time.sleep(0.01)  # the server has closed its side of the kept-alive connection

    assert str(client.resolve_digest(reference)) == MANIFEST_DIGEST
    assert len(server.requests) == 2  # no request was sent on the closed connection
