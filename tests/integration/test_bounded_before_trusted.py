"""Bounded before trusted: the real ``gatekeeper serve`` (uvicorn, embedded OPA, PostgreSQL).

* the token is checked before the body is read: a 30 MB unauthenticated upload is answered 401
  at once, without the server waiting for (or buffering) the body;
* NUL and control characters in paths and queries are a 400 naming where, never a 503 that
  leaks SQL text;
* request headers and bodies have read deadlines;
* the embedded OPA dies with the gatekeeper, even on ``kill -9``.
(The JWKS ``kid`` rule is in ``tests/integration/test_auth.py``; memory figures for parallel
uploads come from ``benchmarks/bench_unauthenticated_uploads.py``.)
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.tokens import hs256_token
from tests.integration.served import SECRET, Served, alive, children, serve

pytestmark = pytest.mark.integration


def bearer(*roles: str) -> str:
    return hs256_token(SECRET, *roles, subject="tester", ttl=600)


@pytest.fixture
def served(tmp_path: Path, opa_binary: str, postgres_url: str) -> Iterator[Served]:
    with serve(tmp_path, opa_binary=opa_binary,
               GATEKEEPER_DATABASE_URL=postgres_url,
               GATEKEEPER_HTTP_HEADER_TIMEOUT_SECONDS="1",
               GATEKEEPER_HTTP_BODY_TIMEOUT_SECONDS="1") as server:
        yield server


def exchange(port: int, request: bytes, *, wait: float = 8.0) -> bytes:
    """Send ``request`` and read until the server answers and closes, or ``wait`` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(request)
        sock.settimeout(wait)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                head, separator, body = received.partition(b"\r\n\r\n")
                if separator and received.startswith(b"HTTP/1.1 4"):
                    length = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")]
                    if length and len(body) >= length[0]:
                        break
        except TimeoutError:
            pass
        return received


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(served: Served) -> None:
    started = time.monotonic()
    # 30 MB announced, not one byte of it sent: only a server that reads the body first waits
    answer = exchange(served.port, (
        b"POST /v1/sboms?image_digest=sha256:" + b"ab" * 32 + b" HTTP/1.1\r\n"
        b"Host: gatekeeper\r\nContent-Type: application/vnd.cyclonedx+json\r\n"
        b"Content-Length: 31457280\r\n\r\n"
    ), wait=5)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b'"missing bearer token' in answer
    assert time.monotonic() - started < 5


def test_control_characters_in_paths_and_queries_are_400_not_503(served: Served) -> None:
    headers = {"Authorization": f"Bearer {bearer('auditor')}"}
    for path, field in (("/v1/decisions/a%00b", "path"), ("/v1/decisions/a%1bb", "path"),
                        ("/v1/decisions?ticket_id=a%00b", "query"),
                        ("/v1/tickets/CHG%0a1/decisions", "path")):
        response = httpx.get(served.url + path, headers=headers)
        assert response.status_code == 400, (path, response.text)
        body = response.json()
        assert body["error"] == "invalid_input" and body["field"] == field
        assert body["message"].startswith(f"the request {field} contains the control character")
        for leak in ("SQL", "psycopg", "SELECT", "sqlalchemy"):
            assert leak not in response.text


def test_request_headers_must_arrive_in_time(served: Served) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gatekeeper\r\n")  # never finished
        sock.settimeout(10)
        assert sock.recv(1024) == b""  # closed by the server
    assert time.monotonic() - started < 5


def test_a_request_body_must_arrive_in_time(served: Served) -> None:
    token = bearer("pipeline").encode()
    answer = exchange(served.port, (
        b"POST /v1/evaluations HTTP/1.1\r\nHost: gatekeeper\r\n"
        b"Authorization: Bearer " + token + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{\"images\":"
    ), wait=8)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"request body not received within 1 s" in answer


def test_an_admission_body_must_arrive_in_time(served: Served) -> None:
    """The API server's path (the lean one, not FastAPI's middlewares) keeps the deadline."""
    answer = exchange(served.port, (
        b"POST /admission/validate?timeout=10s HTTP/1.1\r\nHost: gatekeeper\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"apiVersion\":"
    ), wait=8)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"request body not received within 1 s" in answer


def test_the_embedded_opa_dies_with_the_gatekeeper(served: Served) -> None:
    opa = [pid for pid in children(served.process.pid)
           if b"opa" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]]
    assert len(opa) == 1, children(served.process.pid)
    os.kill(served.process.pid, signal.SIGKILL)
    served.process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while alive(opa[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    survived = alive(opa[0])
    if survived:
        os.kill(opa[0], signal.SIGKILL)  # do not leave it behind for the next test
    assert not survived, "the embedded OPA outlived kill -9 of its gatekeeper"
