"""A broken rule package is named, not blamed on the engine.

The whole application with the real embedded OPA and the shipped ``policies/`` plus one package
whose ``deny`` returns ``{"msg": ...}`` (the shape of another tool). Through the REST API and an
AdmissionReview the decision still denies, names that package, and keeps every other violation.
Then the CLI: ``policy check`` refuses packages that can never take effect and ``policy test``
prints OPA's parse errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatekeeper.cli.policy import policy_app
from gatekeeper.domain import EvaluationRequest, Verdict
from gatekeeper.domain.decision import Source
from gatekeeper.domain.reference import parse_image_reference
from gatekeeper.policy import EmbeddedOpa
from gatekeeper.service import EvaluationService
from tests.fakes import FakeAuditLog
from tests.integration.test_policy_lifecycle_api import shipped, write_candidate

pytestmark = pytest.mark.integration

BROKEN = """# Written for another tool: its deny items carry "msg", not "message".
package gatekeeper.rules.mirror

deny contains {"msg": "images must come from the mirror"} if {
\tinput.environment == "development"
}
"""
IMAGE = "evil.example.com/shop/api:1.0"
REGISTRY_VIOLATION = 'registry "evil.example.com" is not allowed in environment "development"'
BROKEN_MESSAGE = (
    "rule package gatekeeper.rules.mirror is broken: its deny returned an object with keys "
    '[msg], not a string or {"image": ..., "message": ...}; the decision denies until the '
    "package is fixed"
)


@pytest.fixture
def broken_engine(policy_dir: Path, opa_binary: str) -> Iterator[EvaluationService]:
    # The gatekeeper's own activation checks now refuse this package before it can go live
    # (`policy check`: {"msg": ...} items are no findings; tests/integration/
    # test_policy_check_inert.py). It can still reach an OPA that loads policies nobody
    # checked (a sidecar fed by another bundle server): the real OPA loads it here, and the
    # evaluation path both doors share (EvaluationService over OpaPolicyEngine) decides.
    (policy_dir / "mirror.rego").write_text(BROKEN)
    opa = EmbeddedOpa(opa_binary=opa_binary, policy_dir=policy_dir)
    opa.start()
    try:
        yield EvaluationService(policy_engine=opa.engine, audit_log=FakeAuditLog(),
                                collectors=[])
    finally:
        opa.stop()


def test_a_malformed_deny_is_that_packages_error_and_other_violations_stay(
    broken_engine: EvaluationService,
) -> None:
    decision = broken_engine.evaluate(EvaluationRequest(
        images=(parse_image_reference(IMAGE),), source=Source.PIPELINE,
        environment="development",
    ))
    assert decision.verdict is Verdict.DENY
    assert decision.error is None
    assert [(v.policy, v.image, v.message) for v in decision.violations] == [
        ("mirror", None, BROKEN_MESSAGE),
        ("registries", IMAGE, REGISTRY_VIOLATION),
    ]


VIOLATION_PACKAGE = """package gatekeeper.rules.teams

violation contains "kube-system is reserved" if input.namespace == "kube-system"
"""
OUTSIDE_PACKAGE = """package gatekeeper.custom

deny contains "kube-system is reserved" if input.namespace == "kube-system"
"""


@pytest.mark.parametrize(
    ("name", "source", "message"),
    [
        # (the Gatekeeper-template check explains both: tests/integration/
        # test_policy_check_inert.py; it says more than the general rule did)
        ("teams.rego", VIOLATION_PACKAGE,
         "[structure] teams.rego: package gatekeeper.rules.teams is inert: it defines "
         "violation (OPA Gatekeeper style) but the gatekeeper reads deny and warn of "
         "gatekeeper.rules.*; move the template's Rego to package "
         "gatekeeper.templates.<template> and add a constraint naming it to data "
         "gatekeeper.config.constraints"),
        ("custom.rego", OUTSIDE_PACKAGE,
         "[structure] custom.rego: package gatekeeper.custom is inert: it defines deny, but "
         "the gatekeeper reads only deny/warn of gatekeeper.rules.<name> and violation of "
         "gatekeeper.templates.<template>; rename it package gatekeeper.rules.<name>"),
    ],
)
def test_policy_check_refuses_a_package_that_can_never_take_effect(
    tmp_path: Path, opa_binary: str, monkeypatch: pytest.MonkeyPatch,
    name: str, source: str, message: str,
) -> None:
    monkeypatch.setenv("GATEKEEPER_OPA_BINARY", opa_binary)
    root = write_candidate(tmp_path / "candidate", shipped())
    (root / "policies" / name).write_text(source)

    result = CliRunner().invoke(policy_app, ["check", str(root)])

    assert result.exit_code == 1, result.output
    assert message in result.output.splitlines()
    assert result.output.splitlines()[-1].startswith("refused: ")


def test_policy_test_prints_opa_parse_errors_not_pass_0_of_0(
    tmp_path: Path, opa_binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEKEEPER_OPA_BINARY", opa_binary)
    root = write_candidate(tmp_path / "candidate", shipped())
    (root / "policies" / "typo.rego").write_text(
        "package gatekeeper.rules.typo\n\ndeny contains msg if {\n\tmsg := \"x\"\n"
    )

    result = CliRunner().invoke(
        policy_app, ["test", "--policies", str(root / "policies"), "--tests", str(root / "tests")]
    )

    assert result.exit_code == 1
    assert "PASS: 0/0" not in result.output
    assert "typo.rego:" in result.output
    assert "rego_parse_error" in result.output
    assert "opa test failed: 1 error(s) before any test ran" in result.output
