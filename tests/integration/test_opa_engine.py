"""The embedded OPA child: supervised, watched, fail-closed."""

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from gatekeeper.errors import ConfigurationError, PolicyEngineError
from gatekeeper.policy import EmbeddedOpa
from gatekeeper.wiring import build_container
from tests.helpers.opa import opa_healthy as _healthy
from tests.helpers.types import MakeSettings

DROP_IN = '''package gatekeeper.rules.no_nightly

deny contains {"image": image.reference, "message": "nightly builds are not deployable"} if {
\tsome image in input.images
\timage.tag == "nightly"
}
'''


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_dropped_in_policy_takes_effect_at_once_with_its_name(make_settings: MakeSettings, policy_dir: Path) -> None:
    app = create_app(make_settings())
    with TestClient(app) as client:
        body = {"images": ["ghcr.io/acme/api:nightly"], "environment": "development"}
        before = client.post("/v1/evaluations", json=body).json()
        assert before["verdict"] == "allow"
        (policy_dir / "no_nightly.rego").write_text(DROP_IN)

        def denied() -> bool:
            verdict: str = client.post("/v1/evaluations", json=body).json()["verdict"]
            return verdict == "deny"

        assert wait_for(denied), "OPA --watch did not load the new policy"
        after = client.post("/v1/evaluations", json=body).json()
    assert after["violations"] == [
        {"policy": "no_nightly", "image": "ghcr.io/acme/api:nightly", "message": "nightly builds are not deployable"}
    ]
    assert after["policy_revision"] != before["policy_revision"]


def test_killed_opa_is_restarted(opa_binary: str, policy_dir: Path) -> None:
    opa = EmbeddedOpa(opa_binary=opa_binary, policy_dir=policy_dir)
    opa.start()
    try:
        first = opa.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: opa.pid != first and _healthy(opa)), "OPA was not restarted"
    finally:
        opa.stop()


def test_broken_policy_fails_start_with_opas_message(opa_binary: str, policy_dir: Path) -> None:
    (policy_dir / "broken.rego").write_text("package gatekeeper.rules.broken\n\ndeny contains x if {\n")
    opa = EmbeddedOpa(opa_binary=opa_binary, policy_dir=policy_dir)
    with pytest.raises(PolicyEngineError) as caught:
        opa.start()
    opa.stop()
    assert caught.value.message.startswith("embedded OPA exited with code 1 while starting")
    assert "broken.rego" in caught.value.message


def test_empty_policy_directory_is_a_configuration_error(opa_binary: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        EmbeddedOpa(opa_binary=opa_binary, policy_dir=tmp_path)
    assert caught.value.message == f"policy directory {tmp_path} holds no .rego files"


def test_missing_binary_is_a_configuration_error(policy_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="OPA binary '/nope/opa' not found"):
        EmbeddedOpa(opa_binary="/nope/opa", policy_dir=policy_dir)


def test_policy_set_without_rule_packages_denies(make_settings: MakeSettings, policy_dir: Path) -> None:
    for path in policy_dir.glob("*.rego"):
        if path.name != "main.rego":
            path.unlink()
    # The policy lifecycle checks the shipped policies before their first activation: such a
    # set never becomes active, the gatekeeper does not start (fail closed, visibly).
    settings = make_settings(policy_tests_dir=policy_dir / "none")
    with pytest.raises(ConfigurationError) as caught:
        with TestClient(create_app(settings)):
            pass
    assert caught.value.message == (
        "the shipped policies fail their checks: "
        "[structure] no rule package: define package gatekeeper.rules.<name>"
    )


def _evidence_free(
    environment: str, images: list[tuple[str, str]], digests_resolved: bool
) -> dict[str, Any]:
    return {
        "schema_version": "1", "source": "admission", "environment": environment,
        "namespace": "shop", "mode": "enforce", "dry_run": False,
        "ticket": {"intent_id": None, "plan_id": None, "ticket_id": None, "deploy_id": None},
        "evaluated_at": "2026-11-24T12:00:00Z", "context": {},
        "prefilter": {"digests_resolved": digests_resolved},
        "images": [{"reference": ref, "registry": registry, "repository": "acme/app",
                    "tag": "1.0", "digest": None, "evidence": {}} for ref, registry in images],
    }


def test_prefilter_of_the_shipped_policies_answers_network_free_denials(opa_binary: str, policy_dir: Path) -> None:
    opa = EmbeddedOpa(opa_binary=opa_binary, policy_dir=policy_dir)
    opa.start()
    try:
        images = [("gcr.io/acme/app:1.0", "gcr.io"),
                  ("registry.example.com/acme/app:1.0", "registry.example.com")]
        found = opa.engine.prefilter(_evidence_free("production", images, True))
        assert [v.as_dict() for v in found] == [{
            "policy": "registries", "image": "gcr.io/acme/app:1.0",
            "message": 'registry "gcr.io" is not allowed in environment "production"'}]
        unresolved = opa.engine.prefilter(_evidence_free("production", images, False))
        assert {(v.policy, v.image) for v in unresolved} == {
            ("registries", "gcr.io/acme/app:1.0"), ("digests", "gcr.io/acme/app:1.0"),
            ("digests", "registry.example.com/acme/app:1.0")}
    finally:
        opa.stop()


def test_policy_set_without_a_prefilter_prefilters_nothing(opa_binary: str, tmp_path: Path) -> None:
    (tmp_path / "main.rego").write_text(
        "package gatekeeper.main\n\ndecision := {\"packages\": [\"x\"], \"deny\": [], \"warn\": []}\n")
    opa = EmbeddedOpa(opa_binary=opa_binary, policy_dir=tmp_path)
    opa.start()
    try:
        assert opa.engine.prefilter(_evidence_free("production", [("gcr.io/a:1", "gcr.io")], True)) == ()
    finally:
        opa.stop()


def _environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().partition("=")[::2] for entry in raw if entry)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc/<pid>/environ")
def test_the_embedded_opa_runs_with_the_configured_go_runtime(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the settings win over what the gatekeeper itself inherited
    monkeypatch.setenv("GOGC", "100")
    monkeypatch.setenv("GOMAXPROCS", "8")
    default = build_container(make_settings())
    tuned = build_container(make_settings(opa_gogc=250, opa_gomaxprocs=0))
    for container in (default, tuned):
        container.start()
    try:
        assert default.embedded_opa is not None and tuned.embedded_opa is not None
        assert default.embedded_opa.pid is not None and tuned.embedded_opa.pid is not None
        shipped = _environment_of(default.embedded_opa.pid)
        assert (shipped["GOGC"], shipped["GOMAXPROCS"]) == ("400", "1")
        chosen = _environment_of(tuned.embedded_opa.pid)
        # 0 cores: GOMAXPROCS is left as inherited (Go's default when unset)
        assert (chosen["GOGC"], chosen["GOMAXPROCS"]) == ("250", "8")
    finally:
        for container in (default, tuned):
            container.stop()


def test_go_runtime_settings_out_of_range_are_refused(make_settings: MakeSettings) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_settings(opa_gogc=5)
    assert "opa_gogc" in caught.value.message
    assert "greater than or equal to 25" in caught.value.message
