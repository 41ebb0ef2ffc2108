"""Shared fixtures: real OPA, real databases, the app built the way production builds it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gatekeeper.app import create_app
from gatekeeper.config import Settings, load_settings
from tests.helpers.postgres import PGBIN, ThrowawayPostgres
from tests.helpers.types import AssetPath, MakeSettings

REPO = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "assets"


def _opa_binary() -> str:
    candidate = os.environ.get("GATEKEEPER_OPA_BINARY") or str(REPO / ".tools/bin/opa")
    if not Path(candidate).is_file():
        pytest.fail(f"the real opa binary is required ({candidate}); run scripts/install-tools")
    return candidate


@pytest.fixture(scope="session")
def opa_binary() -> str:
    return _opa_binary()


@pytest.fixture
def asset() -> AssetPath:
    def _asset(name: str) -> Path:
        path = ASSETS / name
        assert path.exists(), f"missing test asset {path}"
        return path

    return _asset


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped policies (tests may add or break files in it)."""
    target = tmp_path / "policies"
    shutil.copytree(REPO / "policies", target)
    return target


@pytest.fixture
def make_settings(
    tmp_path: Path, opa_binary: str, policy_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> MakeSettings:
    for name in list(os.environ):
        if name.startswith("GATEKEEPER_") and not name.startswith("GATEKEEPER_TEST_"):
            monkeypatch.delenv(name)

    def _make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": f"sqlite:///{tmp_path / 'audit.db'}",
            "opa_binary": opa_binary,
            "policy_dir": policy_dir,
            "policy_tests_dir": REPO / "rego-tests",
            "metrics_port": 0,
            "insecure_disable_auth": True,
            "audit_spool_dir": tmp_path / "audit-spool",
            "resolve_digests": False,
        }
        values.update(overrides)
        return load_settings(**values)

    return _make


@pytest.fixture
def client(make_settings: MakeSettings) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings())) as test_client:
        yield test_client


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A started PostgreSQL cluster of the test's own, which it may stop and start again."""
    if not (PGBIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 binaries are not installed")
    # Not under pytest's tmp dir: that one is private to root, and postgres refuses root.
    base = Path(tempfile.mkdtemp(prefix="gatekeeper-pg-outage-"))
    base.chmod(0o711)
    server = ThrowawayPostgres(base / "cluster")
    try:
        server.init()
        server.start()
        yield server
    finally:
        try:
            server.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def moto_url() -> str:
    """moto_server's URL (the AWS APIs on loopback, started by scripts/test-servers)."""
    url = os.environ.get("GATEKEEPER_TEST_MOTO_URL")
    if not url:
        pytest.skip("GATEKEEPER_TEST_MOTO_URL is not set (scripts/test-servers starts moto)")
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("GATEKEEPER_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("GATEKEEPER_TEST_POSTGRES_URL is not set (scripts/test starts PostgreSQL)")
    return url
