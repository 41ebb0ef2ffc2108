"""The embedded OPA asked on the event loop: the same answers, kept-alive connections that
survive an OPA restart, and a revision known without walking the policy directory."""

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from gatekeeper.domain import PolicyResult
from gatekeeper.errors import PolicyEngineError
from gatekeeper.policy import EmbeddedOpa
from gatekeeper.policy import revision as revision_module
from gatekeeper.policy.bundle import PolicyFiles
from gatekeeper.policy.opa_http import AsyncOpaConnectionPool, OpaResponse
from tests.helpers.opa import golden_input as _golden
from tests.helpers.opa import opa_healthy as _healthy
from tests.helpers.opa import running_opa
from tests.helpers.types import MakeSettings

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "rego-tests" / "golden"
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def opa(opa_binary: str, policy_dir: Path) -> Iterator[EmbeddedOpa]:
    with running_opa(opa_binary, policy_dir) as engine:
        yield engine


@pytest.mark.parametrize("name", ["admission_production_deployment", "pipeline_production_unpinned",
                                  "pipeline_development_hub"])
def test_the_async_decision_is_the_blocking_one(opa: EmbeddedOpa, name: str) -> None:
    policy_input = _golden(name)
    blocking = opa.engine.evaluate(policy_input)

    async def both() -> tuple[PolicyResult, PolicyResult]:
        first = await opa.engine.evaluate_async(policy_input)
        second = await opa.engine.evaluate_async(policy_input)  # on the kept-alive connection
        return first, second

    first, second = asyncio.run(both())
    assert first == blocking and second == blocking


def test_the_client_reads_a_large_chunked_answer_over_one_connection(opa: EmbeddedOpa) -> None:
    pool = AsyncOpaConnectionPool(unix_socket=str(opa.socket_path))

    async def twice() -> tuple[list[OpaResponse], int]:
        answers = [await pool.post("/v1/data", b"{}") for _ in range(2)]
        return answers, len(pool._idle)

    answers, idle = asyncio.run(twice())
    expected = opa.engine._client.post("/v1/data", content=b"{}").json()
    assert [a.status for a in answers] == [200, 200] and idle == 1
    assert len(answers[0].body) > 4096  # over Go's buffer: sent chunked, no Content-Length
    assert [orjson.loads(a.body) for a in answers] == [expected, expected]


def test_an_opa_answer_that_is_not_200_fails_closed_naming_it(opa: EmbeddedOpa) -> None:
    pool = AsyncOpaConnectionPool(unix_socket=str(opa.socket_path))
    answer = asyncio.run(pool.post("/v1/data/gatekeeper/main/decision", b"{not json"))
    assert answer.status == 400
    with pytest.raises(PolicyEngineError, match=r"^embedded OPA answered HTTP 400: "):
        opa.engine._parse(answer.status, answer.body)


def test_the_kept_alive_connection_survives_an_opa_restart(opa: EmbeddedOpa) -> None:
    policy_input = _golden("admission_production_deployment")

    async def scenario() -> tuple[PolicyResult, PolicyResult]:
        before = await opa.engine.evaluate_async(policy_input)  # leaves an idle connection
        first = opa.pid
        assert first is not None, "OPA is running"
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while opa.pid == first or not _healthy(opa):
            assert time.monotonic() < deadline, "OPA was not restarted"
            await asyncio.sleep(0.1)
        after = await opa.engine.evaluate_async(policy_input)  # the idle one is dead: a new one
        return before, after

    before, after = asyncio.run(scenario())
    assert after == before


def test_a_stopped_opa_fails_the_async_evaluation_closed(opa_binary: str, policy_dir: Path) -> None:
    engine = EmbeddedOpa(opa_binary=opa_binary, policy_dir=policy_dir)
    engine.start()
    engine.stop()
    with pytest.raises(PolicyEngineError, match=r"^embedded OPA unreachable: cannot connect: "):
        asyncio.run(engine.engine.evaluate_async(_golden("admission_production_deployment")))


def test_the_revision_comes_from_the_lifecycle_not_from_the_directory(
    opa: EmbeddedOpa, policy_dir: Path
) -> None:
    walked = opa.engine.revision()  # nothing said yet: hashed from the directory
    assert walked == PolicyFiles.from_directory(policy_dir).revision_id
    opa.served_revision.set("sha256:" + "0" * 64)
    (policy_dir / "extra.rego").write_text("package gatekeeper.rules.extra\n")
    assert opa.engine.revision() == "sha256:" + "0" * 64


def test_decisions_walk_no_policy_directory(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(make_settings())
    with TestClient(app) as client:
        walks: list[tuple[Any, ...]] = []
        original = revision_module._stamp_files

        def counted(*args: Any) -> list[tuple[str, int, int]]:
            walks.append(args)
            return original(*args)

        monkeypatch.setattr(revision_module, "_stamp_files", counted)
        body = {"images": [f"registry.example.com/payments/api:1.4@{DIGEST}"],
                "environment": "production"}
        decisions = [client.post("/v1/evaluations", json=body).json() for _ in range(3)]
        active = client.get("/v1/policies").json()["active_revision"]["revision_id"]
    assert walks == []
    assert {d["policy_revision"] for d in decisions} == {active}
