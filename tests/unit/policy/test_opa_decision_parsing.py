import pytest

from gatekeeper.domain import Violation
from gatekeeper.errors import PolicyEngineError
from gatekeeper.policy.opa import parse_decision


def test_objects_and_bare_strings() -> None:
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
            {"result": {"packages": ["p"], "deny": [{"item": {"msg": "x"}}]}},
            "policy returned a malformed deny entry: {'item': {'msg': 'x'}}",
        ),
    ],
)
def test_malformed_answers_fail_closed(body: object, message: str) -> None:
    with pytest.raises(PolicyEngineError) as caught:
        parse_decision(body, "r")
    assert caught.value.message == message


def broken(policy: str, kind: str, shape: str, image: str | None = None) -> Violation:
    return Violation(
        policy,
        f"rule package gatekeeper.rules.{policy} is broken: its {kind} returned {shape}, not a "
        'string or {"image": ..., "message": ...}; the decision denies until the package is fixed',
        image,
    )


def test_a_malformed_item_is_its_packages_violation_and_the_others_stay() -> None:
    body = {"result": {"packages": ["p", "q"], "deny": [
        {"policy": "p", "item": {"msg": "x"}},
        {"policy": "q", "item": {"image": "a", "message": "real"}},
    ], "warn": [
        {"policy": "p", "item": {"message": "x", "image": 3}},
        {"policy": "q", "item": 7},
        {"policy": "q", "item": {"image": "a", "message": "w"}},
    ]}}
    result = parse_decision(body, "r")
    assert set(result.violations) == {
        broken("p", "deny", "an object with keys [msg]"),
        broken("p", "warn", "an object with keys [image, message]"),
        broken("q", "warn", "a value of type int"),
        Violation("q", "real", "a"),
    }
    assert result.warnings == (Violation("q", "w", "a"),)
