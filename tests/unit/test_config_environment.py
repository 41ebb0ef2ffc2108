"""Settings from the environment and the file, as ``load_settings`` reads them: JSON for lists
and mappings, the environment over the file (mappings merged key by key), and a clear error
naming the variable that holds no JSON where JSON is needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from gatekeeper.config import load_settings
from gatekeeper.domain import EnforcementMode
from gatekeeper.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("GATEKEEPER_") and not name.startswith("GATEKEEPER_TEST_"):
            monkeypatch.delenv(name)


def test_lists_and_mappings_are_json_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEKEEPER_AUTH_PUBLIC_KEY_FILES", '["/keys/rsa.pem", "/keys/ec.pem"]')
    monkeypatch.setenv("GATEKEEPER_ADMISSION_NAMESPACE_MODES", '{"shop": "warn"}')
    monkeypatch.setenv("GATEKEEPER_ADMISSION_EXCLUDED_NAMESPACES", '["kube-system", "infra"]')
    monkeypatch.setenv("GATEKEEPER_PORT", "8443")
    monkeypatch.setenv("GATEKEEPER_OPA_URL", "http://127.0.0.1:8181")
    settings = load_settings()
    assert settings.auth_public_key_files == [Path("/keys/rsa.pem"), Path("/keys/ec.pem")]
    assert settings.admission_namespace_modes == {"shop": EnforcementMode.WARN}
    assert settings.admission_excluded_namespaces == ["kube-system", "infra"]
    assert settings.port == 8443
    assert settings.opa_url == "http://127.0.0.1:8181"


def test_a_variable_that_is_not_json_where_json_is_needed_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEKEEPER_REGISTRY", "hosts=a.io")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.message == (
        "invalid configuration: registry: GATEKEEPER_REGISTRY is not JSON "
        "(Expecting value: line 1 column 1 (char 0))"
    )
    monkeypatch.delenv("GATEKEEPER_REGISTRY")
    monkeypatch.setenv("GATEKEEPER_SIGNATURES", '{"authorities": [}')
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.message.startswith(
        "invalid configuration: signatures: GATEKEEPER_SIGNATURES is not JSON ("
    )
    monkeypatch.setenv("GATEKEEPER_SIGNATURES", "[1]")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.message == (
        "invalid configuration: signatures: Input should be a valid dictionary"
    )


def test_the_environment_wins_over_the_file_and_mappings_merge(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "gatekeeper.yaml"
    config.write_text(yaml.safe_dump({
        "port": 7000,
        "metrics_port": 7001,
        "admission_namespace_modes": {"shop": "warn", "lab": "audit"},
        "admission_excluded_namespaces": ["kube-system", "lab"],
    }))
    monkeypatch.setenv("GATEKEEPER_CONFIG", str(config))
    monkeypatch.setenv("GATEKEEPER_PORT", "7100")
    monkeypatch.setenv("GATEKEEPER_ADMISSION_NAMESPACE_MODES", '{"shop": "enforce"}')
    monkeypatch.setenv("GATEKEEPER_ADMISSION_EXCLUDED_NAMESPACES", '["infra"]')
    settings = load_settings()
    assert settings.port == 7100
    assert settings.metrics_port == 7001
    assert settings.admission_namespace_modes == {
        "shop": EnforcementMode.ENFORCE, "lab": EnforcementMode.AUDIT,
    }
    assert settings.admission_excluded_namespaces == ["infra"]  # lists are replaced


def test_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("gatekeeper_metrics_port", "9300")
    assert load_settings().metrics_port == 9300


def test_a_file_key_that_names_no_setting_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "gatekeeper.yaml"
    config.write_text("prot: 1\n")
    monkeypatch.setenv("GATEKEEPER_CONFIG", str(config))
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.message == "invalid configuration: prot: Extra inputs are not permitted"
