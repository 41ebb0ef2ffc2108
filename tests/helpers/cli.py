"""The gatekeeper CLI as a user runs it: a fresh ``python -m gatekeeper`` process, its environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from gatekeeper.config import Settings

__all__ = [
    "cli_environment",
    "outside_environment",
    "run_gatekeeper",
    "settings_through_environment",
]


def outside_environment(*, keep_test_servers: bool = True) -> dict[str, str]:
    """This process's environment without its ``GATEKEEPER_*`` settings; the test servers'
    addresses (``GATEKEEPER_TEST_*``) are kept unless ``keep_test_servers`` is false."""
    return {
        name: value for name, value in os.environ.items()
        if not name.startswith("GATEKEEPER_")
        or (keep_test_servers and name.startswith("GATEKEEPER_TEST_"))
    }


def cli_environment(opa_binary: str, policy_dir: Path, tmp_path: Path) -> dict[str, str]:
    """Settings through the environment of a fresh process: SQLite under ``tmp_path``, the local
    OPA, no digest resolution, authentication off."""
    env = outside_environment(keep_test_servers=False)
    env.update(
        GATEKEEPER_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}",
        GATEKEEPER_OPA_BINARY=opa_binary,
        GATEKEEPER_POLICY_DIR=str(policy_dir),
        GATEKEEPER_RESOLVE_DIGESTS="false",
        GATEKEEPER_INSECURE_DISABLE_AUTH="true",
        GATEKEEPER_AUDIT_SPOOL_DIR=str(tmp_path / "audit-spool"),
    )
    return env


def run_gatekeeper(
    env: Mapping[str, str], *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m gatekeeper ARGS`` in a fresh process; its exit code and output captured."""
    return subprocess.run(
        [sys.executable, "-m", "gatekeeper", *args],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd,
    )


def run_gatekeeper_listing_modules(
    env: Mapping[str, str], listing: Path, *args: str, timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The command line ``gatekeeper ARGS`` in a fresh process, as :func:`run_gatekeeper`, and
    the modules it had loaded when it ended (written to ``listing`` at exit)."""
    script = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(listing)!r}, 'w').write('\\n'.join(\n"
        "    name for name, module in sys.modules.items() if module is not None)))\n"
        "from gatekeeper.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )
    return completed, listing.read_text().splitlines() if listing.exists() else []


def settings_through_environment(
    settings: Settings, opa_binary: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Hand ``settings``' store and policies to the in-process CLI through the environment, as
    the installed CLI reads them (no registry lookups: digests are not resolved)."""
    monkeypatch.setenv("GATEKEEPER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("GATEKEEPER_OPA_BINARY", opa_binary)
    monkeypatch.setenv("GATEKEEPER_POLICY_DIR", str(settings.policy_dir))
    monkeypatch.setenv("GATEKEEPER_RESOLVE_DIGESTS", "false")  # no registry on the network
    return settings
