"""The blocking OPA queries (prefilter and decision of ``POST /v1/evaluations``, pipelines, the
CLI) over the lean kept-alive pool, against the real ``opa``: the httpx client's answers, one
connection for many queries, one retry when the server closed an idle connection, one timeout
for the whole exchange, bounded answers, several threads at once, and the same fail-closed
decision when OPA is gone."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from gatekeeper.domain import PolicyResult, Violation
from gatekeeper.errors import PolicyEngineError
from gatekeeper.policy import EmbeddedOpa, OpaPolicyEngine
from gatekeeper.policy.http_framing import OpaHttpError
from gatekeeper.policy.opa_blocking import OpaConnectionPool
from tests.helpers.app import container_of
from tests.helpers.net import free_port
from tests.helpers.opa import GOLDEN, running_opa
from tests.helpers.opa import golden_input as _golden
from tests.helpers.opa import opa_healthy as _healthy
from tests.helpers.types import MakeSettings

GOLDEN_NAMES = sorted(path.name for path in GOLDEN.iterdir() if (path / "data.json").is_file())
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def opa(opa_binary: str, policy_dir: Path) -> Iterator[EmbeddedOpa]:
    with running_opa(opa_binary, policy_dir) as engine:
        yield engine


@pytest.fixture
def sidecar_port(opa_binary: str, policy_dir: Path, tmp_path: Path) -> Iterator[int]:
    """A real OPA serving the shipped policies on a loopback TCP port (as a sidecar does)."""
    port = free_port()
    with (tmp_path / "sidecar.log").open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed argv
            [opa_binary, "run", "--server", "--addr", f"127.0.0.1:{port}",
             "--skip-version-check", str(policy_dir)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the OPA sidecar did not start"
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _httpx_engine(opa: EmbeddedOpa) -> OpaPolicyEngine:
    """The same OPA asked through the ``httpx.Client`` (the path before the lean pool)."""
    return OpaPolicyEngine(opa.engine._client, describe="embedded OPA",
                           local_revision=opa.served_revision.current)


def _pool(engine: OpaPolicyEngine) -> OpaConnectionPool:
    pool = engine._pool
    assert pool is not None, "the engine has no lean query pool"
    return pool


def test_every_golden_input_gets_the_httpx_answer_over_one_connection(opa: EmbeddedOpa) -> None:
    reference = _httpx_engine(opa)
    for name in GOLDEN_NAMES:
        policy_input = _golden(name)
        assert opa.engine.evaluate(policy_input) == reference.evaluate(policy_input), name
        assert opa.engine.prefilter(policy_input) == reference.prefilter(policy_input), name
    assert _pool(opa.engine).connections_opened == 1
    assert len(GOLDEN_NAMES) >= 8


def test_the_queries_do_not_go_through_httpx(
    opa: EmbeddedOpa, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    original = httpx.Client.send

    def counted(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        sent.append(request.url.path)
        return original(self, request, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", counted)
    policy_input = _golden("pipeline_production_unpinned")
    for _ in range(5):
        opa.engine.prefilter(policy_input)
        opa.engine.evaluate(policy_input)
    assert sent == []


def _accept_in_thread(listener: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    """Hand each connection ``listener`` accepts to ``handle`` (in one daemon thread, until the
    listener is closed)."""

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            handle(connection)

    threading.Thread(target=accept, daemon=True).start()


class _IdleClosingProxy:
    """A loopback TCP relay to OPA that closes a client connection idle for ``idle`` seconds
    (as a server or load balancer with an idle timeout does), counting the connections."""

    def __init__(self, upstream: int, idle: float) -> None:
        self._upstream = upstream
        self._idle = idle
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.accepted = 0
        _accept_in_thread(self._listener, self._accept)

    def _accept(self, client: socket.socket) -> None:
        self.accepted += 1
        threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self._upstream))
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], self._idle)
                if not ready:
                    return  # idle: closed under the client's feet
                for side in ready:
                    data = side.recv(65536)
                    if not data:
                        return
                    (upstream if side is client else client).sendall(data)
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self._listener.close()


def test_a_connection_the_server_closed_while_idle_costs_one_retry(sidecar_port: int) -> None:
    proxy = _IdleClosingProxy(sidecar_port, idle=0.3)
    engine = OpaPolicyEngine.for_url(f"http://127.0.0.1:{proxy.port}", local_revision=lambda: "r")
    try:
        policy_input = _golden("admission_production_deployment")
        first = [engine.evaluate(policy_input) for _ in range(3)]
        assert proxy.accepted == 1  # kept alive over TCP
        time.sleep(1.0)  # the proxy closes the idle connection
        again = engine.evaluate(policy_input)
        assert again == first[0] and first == [again] * 3
        assert proxy.accepted == 2 and _pool(engine).connections_opened == 2
    finally:
        engine.close()
        proxy.close()


def test_a_killed_and_restarted_opa_is_asked_again_on_a_new_connection(opa: EmbeddedOpa) -> None:
    policy_input = _golden("pipeline_production_pinned")
    before = opa.engine.evaluate(policy_input)  # leaves an idle connection to the first OPA
    first = opa.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while opa.pid == first or not _healthy(opa):
        assert time.monotonic() < deadline, "OPA was not restarted"
        time.sleep(0.1)
    assert opa.engine.evaluate(policy_input) == before
    assert _pool(opa.engine).connections_opened == 2


def test_the_retry_is_one_new_connection_and_its_failure_is_reported() -> None:
    """The first connection answers once and is closed while idle; every later one is closed
    without an answer: the query after the idle close costs one new connection, not a loop."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    answer = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n'
    answer += b'{"result":[]}'

    def serve(connection: socket.socket) -> None:
        accepted.append(connection)
        with connection:
            connection.recv(65536)
            if len(accepted) == 1:
                connection.sendall(answer)
                time.sleep(0.2)  # then closed while idle

    _accept_in_thread(listener, serve)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    engine = OpaPolicyEngine.for_url(url, local_revision=lambda: "r")
    try:
        assert engine.prefilter(_golden("admission_production_deployment")) == ()
        time.sleep(0.5)
        with pytest.raises(PolicyEngineError) as caught:
            engine.prefilter(_golden("admission_production_deployment"))
    finally:
        listener.close()
    assert caught.value.message == (
        f"OPA at {url} unreachable: Server disconnected without sending a response.")
    assert len(accepted) == 2


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """Accepts connections, reads the request, never answers (a hung OPA)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    _accept_in_thread(listener, held.append)
    try:
        yield listener.getsockname()[1], held
    finally:
        listener.close()
        for connection in held:
            connection.close()


def test_a_hung_opa_times_out_with_the_engines_message(
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    port, _held = silent_server
    url = f"http://127.0.0.1:{port}"
    engine = OpaPolicyEngine.for_url(url, timeout=0.3, local_revision=lambda: "r")
    started = time.monotonic()
    with pytest.raises(PolicyEngineError) as caught:
        engine.evaluate(_golden("admission_production_deployment"))
    assert caught.value.message == f"OPA at {url} timed out"
    assert 0.25 < time.monotonic() - started < 1.5
    with pytest.raises(PolicyEngineError, match=rf"^OPA at {url} timed out$"):
        engine.prefilter(_golden("admission_production_deployment"))


def test_one_timeout_bounds_an_answer_dripped_byte_by_byte() -> None:
    """A server sending its head one byte every 50 ms never lets a per-read timeout expire;
    the exchange's deadline does (httpx waited for as long as the server dripped)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 200:
                if stop.wait(0.05):
                    return
                connection.sendall(bytes([byte]))

    threading.Thread(target=drip, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    engine = OpaPolicyEngine.for_url(url, timeout=0.5, local_revision=lambda: "r")
    started = time.monotonic()
    try:
        with pytest.raises(PolicyEngineError) as caught:
            engine.evaluate(_golden("admission_production_deployment"))
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        listener.close()
    assert caught.value.message == f"OPA at {url} timed out"
    assert elapsed < 1.5


def test_an_answer_over_the_limit_fails_closed_and_the_connection_is_dropped(
    opa: EmbeddedOpa,
) -> None:
    policy_input = _golden("pipeline_production_unpinned")
    expected = opa.engine.evaluate(policy_input)
    pool = OpaConnectionPool(unix_socket=str(opa.socket_path), max_body=64)
    engine = OpaPolicyEngine(opa.engine._client, describe="embedded OPA", query_pool=pool,
                             local_revision=opa.served_revision.current)
    # a small decision comes with Content-Length: refused before its body is read
    with pytest.raises(PolicyEngineError,
                       match=r"^embedded OPA unreachable: answer of \d+ bytes is over the limit$"):
        engine.evaluate(policy_input)
    assert pool._idle == []
    # a large answer (all of data) comes chunked: refused once the chunks pass the limit
    large = OpaConnectionPool(unix_socket=str(opa.socket_path), max_body=4096)
    with pytest.raises(OpaHttpError, match=r"^answer is over the limit of 4096 bytes$"):
        large.post("/v1/data", b"{}")
    assert large._idle == []
    assert len(opa.engine._client.post("/v1/data", content=b"{}").content) > 4096
    assert opa.engine.evaluate(policy_input) == expected  # the engine's own pool is untouched


def test_several_threads_query_at_once(opa: EmbeddedOpa) -> None:
    reference = _httpx_engine(opa)
    expected = {name: (reference.evaluate(_golden(name)), reference.prefilter(_golden(name)))
                for name in GOLDEN_NAMES}
    small = OpaConnectionPool(unix_socket=str(opa.socket_path), max_idle=2)
    capped = OpaPolicyEngine(opa.engine._client, describe="embedded OPA", query_pool=small,
                             local_revision=opa.served_revision.current)

    def ask(engine: OpaPolicyEngine, index: int) -> tuple[str, PolicyResult, tuple[Violation, ...]]:
        name = GOLDEN_NAMES[index % len(GOLDEN_NAMES)]
        return name, engine.evaluate(_golden(name)), engine.prefilter(_golden(name))

    for engine in (opa.engine, capped):
        with ThreadPoolExecutor(max_workers=8) as threads:
            answers = list(threads.map(lambda i, e=engine: ask(e, i), range(160)))
        assert all((result, found) == expected[name] for name, result, found in answers)
    assert _pool(opa.engine).connections_opened <= 8  # never more than the threads at once
    assert len(_pool(opa.engine)._idle) <= 8
    assert len(small._idle) <= 2  # the others were closed once answered


def test_a_killed_opa_fails_the_evaluation_closed_with_the_same_message(
    make_settings: MakeSettings,
) -> None:
    with TestClient(create_app(make_settings())) as client:
        opa = container_of(client).embedded_opa
        assert opa is not None
        body = {"images": [f"registry.example.com/payments/api:1.4@{DIGEST}"],
                "environment": "production"}
        assert client.post("/v1/evaluations", json=body).json()["error"] is None  # OPA decided
        opa._stopping.set()  # no restart: OPA stays dead for this test
        assert opa._process is not None
        opa._process.kill()
        opa._process.wait(timeout=10)
        decision = client.post("/v1/evaluations", json=body).json()
    message = "embedded OPA unreachable: [Errno 111] Connection refused"
    assert decision["verdict"] == "deny"
    assert decision["error"] == f"policy engine unavailable: {message}"
    assert decision["violations"] == [{"policy": "gatekeeper.engine", "image": None,
                                       "message": f"policy engine unavailable: {message}"}]


def test_an_unreachable_sidecar_fails_closed_with_the_os_message() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    engine = OpaPolicyEngine.for_url(url, local_revision=lambda: "r")
    with pytest.raises(PolicyEngineError) as caught:
        engine.evaluate(_golden("admission_production_deployment"))
    assert caught.value.message == f"OPA at {url} unreachable: [Errno 111] Connection refused"


@pytest.mark.parametrize(("url", "lean"), [
    ("http://127.0.0.1:8181", True), ("http://localhost", True), ("http://127.0.0.1:8181/", True),
    ("https://127.0.0.1:8181", False), ("http://127.0.0.1:8181/opa", False),
    ("http://user:secret@127.0.0.1:8181", False),
])
def test_a_sidecar_url_the_lean_client_cannot_serve_stays_on_httpx(url: str, lean: bool) -> None:
    engine = OpaPolicyEngine.for_url(url)
    assert (engine._pool is not None) is lean
