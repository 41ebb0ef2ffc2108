import pytest

from gatekeeper.domain import Violation
from gatekeeper.errors import PolicyEngineError
from gatekeeper.policy.opa import parse_decision


def test_objects_and_bare_strings():
    body = {
        "result": {
            "packages": ["registries"],
            "deny": [
                {"policy": "registries", "item": {"image": "b", "message": "m2"}},
                {"policy": "registries", "item": "whole request"},
            ],
            "warn": [{"policy": "tags", "item": {"image": "a", "message": "w"}}],
        }
    }
    result = parse_decision(body, "sha256:r")
    assert result.violations == (
        Violation("registries", "whole request", None),
        Violation("registries", "m2", "b"),
    )
    assert result.warnings == (Violation("tags", "w", "a"),)
    assert result.revision == "sha256:r"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "policy bundle defines no data.gatekeeper.main.decision (is policies/main.rego missing?)"),
        ({"result": []}, "data.gatekeeper.main.decision is not an object"),
        ({"result": {"packages": []}}, "no rule packages loaded: define at least one package gatekeeper.rules.<name>"),
        (
            {"result": {"packages": ["p"], "deny": [{"policy": "p", "item": {"msg": "x"}}]}},
            "policy 'p' returned a deny that is neither a string nor {\"image\": ..., \"message\": ...}: {'msg': 'x'}",
        ),
        (
            {"result": {"packages": ["p"], "warn": [{"policy": "p", "item": {"message": "x", "image": 3}}]}},
            "policy 'p' returned a warn whose image is not a string: 3",
        ),
    ],
)
def test_malformed_answers_fail_closed(body, message):
    with pytest.raises(PolicyEngineError) as caught:
        parse_decision(body, "r")
    assert caught.value.message == message
