"""``gatekeeper serve --workers 2``: two real worker processes on one listener, over HTTPS.

What must hold across processes: one gap-free hash chain that ``gatekeeper audit verify`` (the
real CLI) accepts, every answered decision stored exactly once, and one evaluation and one
record per admission when the mutating and the validating call land on different workers.

Which worker answers is forced, not hoped for: a worker stopped with SIGSTOP cannot accept, so
every new connection goes to the other one (they share one listen queue).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from gatekeeper.audit.spool import DurableSpool
from tests.helpers.net import free_port
from tests.integration.cosign_fixtures import push_image, registry_host, unique_repository
from tests.integration.served import alive, children
from tests.integration.test_admission_app import serve_gatekeeper
from tests.integration.test_admission_signatures import deployment_review
from tests.unit.webhook.certificates import CertificateAuthority
from tests.unit.webhook.test_reuse_and_evidence_cache import decision

REPO = Path(__file__).resolve().parents[2]


def _command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def _supervisor(port: int) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            line = _command_line(int(entry.name))
            if "serve" in line and str(port) in line and "gatekeeper" in line:
                return int(entry.name)
    raise AssertionError(f"no gatekeeper serve process on port {port}")


def _workers(supervisor: int) -> list[int]:
    """The worker processes: the supervisor's children that run an embedded OPA."""
    return sorted(pid for pid in children(supervisor)
                  if any("opa" in Path(_command_line(c)[0]).name for c in children(pid)))


def _wait_serving(log: Path, count: int) -> None:
    """Until every worker serves (``/readyz`` answers as soon as worker 0 does)."""
    deadline = time.monotonic() + 180
    while f"{count} workers serving" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


@contextmanager
def _only(worker: int, workers: list[int]) -> Iterator[None]:
    """Every other worker stopped: new connections are accepted by ``worker`` alone."""
    stopped = [pid for pid in workers if pid != worker]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)


class Gatekeeper:
    def __init__(self, url: str, ca: CertificateAuthority, directory: Path,
                 metrics_port: int = 0) -> None:
        self.url = url
        self.ca = ca
        self.directory = directory
        self.metrics_port = metrics_port
        self.supervisor = _supervisor(int(url.rsplit(":", 1)[1]))
        self.workers = _workers(self.supervisor)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
        }

    def decide(self, uid: str, image: str) -> str:
        answer = self.post("/admission/validate", deployment_review(uid, [image]))
        assert answer["allowed"] is True, answer["status"]
        return str(answer["auditAnnotations"]["decision-id"])

    def post(self, path: str, document: dict[str, Any]) -> dict[str, Any]:
        """One call on a connection of its own (so the listener picks the worker)."""
        context = ssl.create_default_context(cafile=str(self.ca.cert_file))
        with httpx.Client(verify=context, timeout=30) as client:
            response = client.post(self.url + path, content=json.dumps(document),
                                   headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()["response"]
        return answer


@pytest.fixture(scope="module")
def gatekeeper(tmp_path_factory: pytest.TempPathFactory, opa_binary: str) -> Iterator[Gatekeeper]:
    directory = tmp_path_factory.mktemp("workers")
    ca = CertificateAuthority(directory)
    metrics_port = free_port()
    with serve_gatekeeper(directory, opa_binary, REPO / "policies", ca, GATEKEEPER_WORKERS="2",
                          GATEKEEPER_AUDIT_CHECKPOINT_EVERY="7",
                          # checkpoints by count only, inside the appends: a worker is never
                          # frozen (SIGSTOP, below) while its maintenance holds the chain head
                          GATEKEEPER_AUDIT_CHECKPOINT_INTERVAL_SECONDS="3600",
                          GATEKEEPER_METRICS_PORT=str(metrics_port)) as (url, _client):
        _wait_serving(directory / "serve.log", 2)
        served = Gatekeeper(url, ca, directory, metrics_port)
        assert len(served.workers) == 2, (directory / "serve.log").read_text()[-3000:]
        yield served


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A tag in the loopback registry and the digest it points at."""
    host = registry_host()
    repository = unique_repository()
    digest = push_image(host, f"{repository}:1.0", "app",
                        tmp_path_factory.mktemp("image"))
    return f"{host}/{repository}:1.0", str(digest)


def _stored(database: Path | str) -> list[tuple[int, str]]:
    """(seq, decision id) of every stored record, in chain order (SQLite file or URL)."""
    url = database if isinstance(database, str) else f"sqlite:///{database}"
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            return [(int(seq), str(decision_id)) for seq, decision_id in connection.execute(
                sa.text("SELECT seq, decision_id FROM gatekeeper_decisions ORDER BY seq"))]
    finally:
        engine.dispose()


def _prove_one_chain(gatekeeper: Gatekeeper, pinned: str, database: Path | str,
                     *verify_options: str, **verify_env: str) -> None:
    """Each worker alone, in turn, then all at once: every append after the first finds a
    head another process moved. Then: one gap-free chain holding each answer exactly once,
    which ``gatekeeper audit verify`` accepts."""
    answered: list[str] = []
    counter = iter(range(10_000))

    def decide(_: int) -> str:
        return gatekeeper.decide(f"uid-chain-{next(counter)}", pinned)

    with ThreadPoolExecutor(max_workers=6) as pool:
        for worker in gatekeeper.workers:
            with _only(worker, gatekeeper.workers):
                answered += pool.map(decide, range(15))
        answered += pool.map(decide, range(60))

    stored = _stored(database)
    assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))
    assert sorted(decision_id for _, decision_id in stored) == sorted(answered)
    assert len(set(answered)) == len(answered) == 15 * len(gatekeeper.workers) + 60

    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")
           or k.startswith("GATEKEEPER_TEST_")}
    url = database if isinstance(database, str) else f"sqlite:///{database}"
    env.update(PYTHONPATH=str(REPO), GATEKEEPER_SKIP_VENV="1", GATEKEEPER_DATABASE_URL=url,
               GATEKEEPER_AUDIT_CHECKPOINT_EVERY="7", **verify_env)
    verified = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "audit", "verify", *verify_options],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"audit trail verified: {len(stored)} records "
                                      f"(1..{len(stored)}), "), verified.stdout
    assert "signed checkpoint" in verified.stdout and verified.stderr == ""


def test_two_workers_extend_one_gap_free_chain(gatekeeper: Gatekeeper,
                                              image: tuple[str, str]) -> None:
    _prove_one_chain(gatekeeper, "@".join(image), gatekeeper.directory / "audit.db")


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """A database of its own on the test PostgreSQL server."""
    admin = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1),
                             isolation_level="AUTOCOMMIT")
    name = f"gk_workers_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield sa.engine.make_url(postgres_url).set(database=name).render_as_string(
        hide_password=False)
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_three_workers_on_postgresql_extend_one_gap_free_chain(
    tmp_path: Path, opa_binary: str, database_url: str, image: tuple[str, str]
) -> None:
    key = Ed25519PrivateKey.generate()
    private, public = tmp_path / "audit-signing.pem", tmp_path / "audit-signing.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    ca = CertificateAuthority(tmp_path)
    with serve_gatekeeper(tmp_path, opa_binary, REPO / "policies", ca, GATEKEEPER_WORKERS="3",
                          GATEKEEPER_DATABASE_URL=database_url,
                          GATEKEEPER_AUDIT_SIGNING_KEY_FILE=str(private),
                          GATEKEEPER_AUDIT_CHECKPOINT_EVERY="7",
                          GATEKEEPER_AUDIT_CHECKPOINT_INTERVAL_SECONDS="3600") as (url, _client):
        _wait_serving(tmp_path / "serve.log", 3)
        served = Gatekeeper(url, ca, tmp_path)
        assert len(served.workers) == 3
        _prove_one_chain(served, "@".join(image), database_url, "--public-key", str(public))


def test_the_validating_call_on_the_other_worker_reuses_the_decision(
    gatekeeper: Gatekeeper, image: tuple[str, str]
) -> None:
    tag, digest = image
    first, second = gatekeeper.workers
    for index, (mutating, validating) in enumerate(((first, second), (second, first))):
        review = deployment_review(f"uid-reuse-{index}", [tag])
        review["request"]["object"]["metadata"]["name"] = f"shop-{index}"
        review["request"]["name"] = f"shop-{index}"
        before = len(_stored(gatekeeper.directory / "audit.db"))
        with _only(mutating, gatekeeper.workers):
            mutated = gatekeeper.post("/admission/mutate", review)
        assert mutated["allowed"] is True, mutated["status"]
        [op] = json.loads(base64.b64decode(mutated["patch"]))
        assert op["value"] == f"{tag}@{digest}"
        containers = review["request"]["object"]["spec"]["template"]["spec"]["containers"]
        containers[0]["image"] = op["value"]
        review["request"]["uid"] = f"uid-reuse-{index}-validate"  # one uid per call
        with _only(validating, gatekeeper.workers):
            validated = gatekeeper.post("/admission/validate", review)

        decision_id = mutated["auditAnnotations"]["decision-id"]
        assert validated["allowed"] is True
        assert validated["auditAnnotations"]["decision-id"] == decision_id
        assert validated["status"]["message"] == (
            f"admitted: 1 image(s) evaluated (decision {decision_id}, made by the mutating "
            "webhook)")
        after = _stored(gatekeeper.directory / "audit.db")
        assert [d for _, d in after[before:]] == [decision_id]  # one record per admission


ALLOWED = ("forge_gatekeeper_decisions_total",
           (("source", "admission"), ("verdict", "allow")))


def test_metrics_count_the_decisions_of_every_worker(gatekeeper: Gatekeeper,
                                                     image: tuple[str, str]) -> None:
    pinned = "@".join(image)
    before = gatekeeper.metrics()
    for index, worker in enumerate(gatekeeper.workers):
        with _only(worker, gatekeeper.workers):
            for call in range(3 + index):
                gatekeeper.decide(f"uid-metrics-{index}-{call}", pinned)
    after = gatekeeper.metrics()
    assert after[ALLOWED] - before.get(ALLOWED, 0.0) == 7  # 3 by one worker, 4 by the other
    assert after[("forge_gatekeeper_workers", (("state", "answering"),))] == 2
    assert after[("forge_gatekeeper_workers", (("state", "configured"),))] == 2
    assert after[("forge_gatekeeper_audit_spool_depth", ())] == 0


def test_a_worker_that_dies_is_replaced(gatekeeper: Gatekeeper, image: tuple[str, str]) -> None:
    survivor, victim = gatekeeper.workers
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:
        workers = _workers(gatekeeper.supervisor)
        if len(workers) == 2 and victim not in workers and (
            "gatekeeper ready" in gatekeeper.directory.joinpath("serve.log").read_text()
            .rsplit("exited with code -9; restarting it", 1)[-1]
        ):
            break
        assert time.monotonic() < deadline, gatekeeper.directory.joinpath(
            "serve.log").read_text()[-3000:]
        time.sleep(0.2)
    gatekeeper.workers = workers
    [replacement] = [pid for pid in workers if pid != survivor]
    with _only(replacement, workers):
        decision_id = gatekeeper.decide("uid-after-restart", "@".join(image))
    assert decision_id in {d for _, d in _stored(gatekeeper.directory / "audit.db")}


def test_sigterm_answers_and_records_what_is_in_flight(
    tmp_path: Path, opa_binary: str, image: tuple[str, str]
) -> None:
    """SIGTERM to the supervisor (what Kubernetes sends after the preStop sleep): every
    answered decision is stored, the chain verifies, every process is gone."""
    ca = CertificateAuthority(tmp_path)
    pinned = "@".join(image)
    with serve_gatekeeper(tmp_path, opa_binary, REPO / "policies", ca,
                          GATEKEEPER_WORKERS="2") as (url, readiness):
        readiness.close()  # its idle keep-alive would wait for the graceful-shutdown timeout
        log = tmp_path / "serve.log"
        _wait_serving(log, 2)
        served = Gatekeeper(url, ca, tmp_path)
        family = [served.supervisor, *served.workers,
                  *(c for w in served.workers for c in children(w))]
        answered: list[str] = []
        refused = 0

        def client(number: int) -> None:
            nonlocal refused
            for call in range(200):
                try:
                    answered.append(served.decide(f"uid-term-{number}-{call}", pinned))
                except (httpx.HTTPError, AssertionError):
                    refused += 1  # after the listener closed: not answered, not recorded
                    return

        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(client, number) for number in range(4)]
            while len(answered) < 20:
                time.sleep(0.05)
            os.kill(served.supervisor, signal.SIGTERM)
            for future in futures:
                future.result(timeout=60)
        deadline = time.monotonic() + 40
        while any(alive(pid) for pid in family):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
    text = log.read_text()
    assert "received SIGTERM: stopping the workers" in text
    assert "killing it" not in text and "Traceback" not in text, text[-3000:]
    stored = _stored(tmp_path / "audit.db")
    assert {d for _, d in stored} == set(answered)
    assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))


def test_the_spool_of_a_worker_the_new_run_does_not_have_is_replayed(
    tmp_path: Path, opa_binary: str
) -> None:
    """A previous run had 3 workers and worker 2 spooled a decision (its database was down);
    this run has 2: the supervisor moves that spool into the chain before serving."""
    spooled = replace(decision("0193a1b2-0000-7000-8000-0000000000a2"),
                      created_at=datetime.now(UTC))
    DurableSpool(tmp_path / "audit-spool" / "worker-2").append([(spooled.as_dict(), None)])
    ca = CertificateAuthority(tmp_path)
    with serve_gatekeeper(tmp_path, opa_binary, REPO / "policies", ca,
                          GATEKEEPER_WORKERS="2") as (_url, _client):
        _wait_serving(tmp_path / "serve.log", 2)
        assert [d for _, d in _stored(tmp_path / "audit.db")] == [spooled.decision_id]
    assert DurableSpool(tmp_path / "audit-spool" / "worker-2").depth == 0
