"""Every setting is documented in the README, and misspelled variables are reported."""

import logging
import re
from pathlib import Path

import pytest

from gatekeeper.config import Settings, load_settings, unknown_environment_variables

README = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")


def _documented(env_name: str) -> bool:
    bare = env_name.removeprefix("GATEKEEPER_")
    # Full name anywhere, or the bare name in backticks in a table headed `GATEKEEPER_...`.
    return env_name in README or re.search(rf"`{bare}`", README) is not None


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme(field: str) -> None:
    env_name = f"GATEKEEPER_{field.upper()}"
    assert _documented(env_name), f"{env_name} is not documented in README.md"


def test_unknown_variable_names_the_closest_setting() -> None:
    environ = {
        "GATEKEEPER_DATABSE_URL": "sqlite:///x.db",
        "GATEKEEPER_ADMISION_MAX_WORKERS": "4",
        "GATEKEEPER_NOTHING_LIKE_IT_AT_ALL": "1",
        "GATEKEEPER_LOG_LEVEL": "INFO",  # known
        "GATEKEEPER_TEST_POSTGRES_URL": "x",  # the test scripts' own
        "GATEKEEPER_CONFIG": "x.yaml",  # names the file, not a setting
        "HOME": "/root",
    }
    assert unknown_environment_variables(environ) == [
        ("GATEKEEPER_ADMISION_MAX_WORKERS", "GATEKEEPER_ADMISSION_MAX_WORKERS"),
        ("GATEKEEPER_DATABSE_URL", "GATEKEEPER_DATABASE_URL"),
        ("GATEKEEPER_NOTHING_LIKE_IT_AT_ALL", None),
    ]


def test_load_settings_warns_about_a_misspelled_variable(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("GATEKEEPER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GATEKEEPER_SCAN_MAX_FINDING", "10")
    with caplog.at_level(logging.WARNING, logger="gatekeeper.config"):
        settings = load_settings()
    assert settings.scan_max_findings == 2000  # ignored, and said so
    assert caplog.messages == [
        "unknown environment variable GATEKEEPER_SCAN_MAX_FINDING is ignored "
        "(did you mean GATEKEEPER_SCAN_MAX_FINDINGS?)"
    ]


def test_copy_paste_curl_bodies_are_valid_json() -> None:
    import json

    blocks = re.findall(r"```(?:sh|bash)\n(.*?)```", README, re.S)
    bodies = [
        body for block in blocks
        for body in re.findall(r"curl [^\n]*?-d '(\{.*?\})'", block, re.S)
    ]
    assert len(bodies) >= 3  # evaluations, exceptions (create), and the walkthrough's evaluation
    for body in bodies:
        # shell splices ('"$VAR"') become a sample value, as the shell would
        text = re.sub(r"'\"\$\(date[^\n]*?\)\"'", "X", body)
        text = re.sub(r"'\"\$\w+\"'", "X", text)
        document = json.loads(text)
        assert isinstance(document, dict) and document, body
