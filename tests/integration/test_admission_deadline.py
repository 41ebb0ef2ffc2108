"""The deadline holds under a hanging registry: a loopback server that accepts connections and
never answers, the real ``OciRegistryClient`` as digest resolver, the admission webhook on HTTPS.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatekeeper.registry import OciRegistryClient, RegistryClientSettings
from gatekeeper.registry.settings import RegistryHostSettings
from gatekeeper.service import EvaluationService
from gatekeeper.webhook import AdmissionHandler, AdmissionSettings
from gatekeeper.webhook.tls import ReloadingServerContext
from tests.integration.test_admission_https import client_for, serve_https
from tests.integration.test_admission_signatures import deployment_review
from tests.unit.webhook.certificates import CertificateAuthority
from tests.unit.webhook.fakes import MemoryAuditLog, RulePolicyEngine


@pytest.fixture
def hanging_registry() -> Iterator[str]:
    """Accepts TCP connections, reads nothing, answers nothing; closes them after 20 s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=2)
        for connection in held:
            connection.close()
        listener.close()


@pytest.mark.parametrize("fail_open", [False, True], ids=["fail-closed", "fail-open"])
def test_hanging_registry_is_answered_within_budget_naming_the_step(
    hanging_registry: str, tmp_path: Path, fail_open: bool
) -> None:
    registry = OciRegistryClient(RegistryClientSettings(
        hosts=(RegistryHostSettings(hanging_registry, plain_http=True),),
        connect_timeout=2.0, read_timeout=30.0, max_retries=0))
    audit = MemoryAuditLog()
    service = EvaluationService(policy_engine=RulePolicyEngine(), audit_log=audit,
                                digest_resolver=registry)
    settings = AdmissionSettings(
        budget_seconds=2.0, webhook_timeout_seconds=3.0,
        fail_open_namespaces=frozenset({"shop"}) if fail_open else frozenset())
    ca = CertificateAuthority(tmp_path)
    leaf = ca.issue("gatekeeper", ip_addresses=("127.0.0.1",))
    images = [f"{hanging_registry}/acme/web:1.0", f"{hanging_registry}/acme/api:1.4"]
    try:
        with serve_https(AdmissionHandler(service, settings),
                         ReloadingServerContext(leaf.cert_file, leaf.key_file)) as url, \
                client_for(ca) as client:
            started = time.monotonic()
            response = client.post(url + "/admission/validate",
                                   json=deployment_review("uid-hang", images))
            elapsed = time.monotonic() - started
    finally:
        registry.close()
    assert response.status_code == 200
    answer = response.json()["response"]
    assert elapsed < 2.5, f"answered after {elapsed:.2f}s"
    # The registry client's timeouts are capped by the evidence deadline (budget - 0.4 s), so
    # the service itself records a deny naming the step that did not finish.
    (decision,) = audit.records
    assert decision.verdict.value == "deny"
    assert decision.context["admission"]["fail_open"] is fail_open
    lines = (
        f"spec.template.spec.containers[0].image ({images[0]}): digest not resolved: registry "
        f"{hanging_registry}",
        f"spec.template.spec.containers[1].image ({images[1]}): digest not resolved: registry "
        f"{hanging_registry}",
    )
    message = answer["status"]["message"]
    if fail_open:
        # A failure of the gate, not a fact about the image: the fail-open namespace admits.
        assert answer["allowed"] is True
        assert message.startswith(
            "admitted without a complete decision (fail-open namespace): " + lines[0])
        assert message.endswith(f"(decision {decision.decision_id}, recorded as deny)")
        assert answer["warnings"] == [message]
        assert answer["auditAnnotations"]["fail-open"] == "true"
    else:
        assert answer["allowed"] is False
        assert answer["status"]["code"] == 403
        assert message.startswith(lines[0])
        assert lines[1] in message
        assert message.endswith(f"(decision {decision.decision_id})")
