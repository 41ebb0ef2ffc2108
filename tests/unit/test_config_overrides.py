"""Overrides (command-line flags, tests) are validated like every other source and win over the
environment; decision ids are RFC 9562 UUIDv7."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from gatekeeper.config import load_settings
from gatekeeper.errors import ConfigurationError
from gatekeeper.service import new_decision_id


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("GATEKEEPER_") and not name.startswith("GATEKEEPER_TEST_"):
            monkeypatch.delenv(name)


def test_an_invalid_override_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(port=70000)
    assert caught.value.message == (
        "invalid configuration: port: Input should be less than or equal to 65535"
    )
    with pytest.raises(ConfigurationError) as caught:
        load_settings(default_environment="  ")
    assert caught.value.message == (
        "invalid configuration: default_environment: Value error, must not be empty"
    )


def test_an_override_is_typed_and_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEKEEPER_PORT", "1234")
    monkeypatch.setenv("GATEKEEPER_METRICS_PORT", "9191")
    settings = load_settings(port="8080", auth_hs256_secret="s" * 32)
    assert settings.port == 8080
    assert settings.metrics_port == 9191  # not overridden: the environment still counts
    assert isinstance(settings.auth_hs256_secret, SecretStr)
    assert settings.auth_hs256_secret.get_secret_value() == "s" * 32


def test_with_overrides_refuses_unknown_keys_and_keeps_the_original() -> None:
    settings = load_settings()
    with pytest.raises(ConfigurationError) as caught:
        settings.with_overrides(prot=1)
    assert caught.value.message == "invalid configuration: unknown settings prot"
    assert settings.with_overrides(port=1).port == 1 and settings.port == 8000


def test_decision_ids_are_uuid7_in_creation_order() -> None:
    ids = [new_decision_id() for _ in range(50)]
    parsed = [uuid.UUID(value) for value in ids]
    assert {value.version for value in parsed} == {7}
    assert {value.variant for value in parsed} == {uuid.RFC_4122}
    assert ids == sorted(ids) and len(set(ids)) == 50


def test_registry_settings_are_validated_when_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEKEEPER_REGISTRY", '{"hosts": [{"host": "a.io"}, {"host": "A.io"}]}')
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.message == (
        "invalid configuration: registry: Value error, registry.hosts names a host twice"
    )
    monkeypatch.delenv("GATEKEEPER_REGISTRY")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(registry={"timeout": 1})
    assert caught.value.message == (
        "invalid configuration: registry: Value error, registry: unknown keys ['timeout']"
    )
    plain = {"hosts": [{"host": "127.0.0.1:5000", "plain_http": True}]}
    assert load_settings(registry=plain).registry == plain
