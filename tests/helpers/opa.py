"""The embedded OPA for tests: started and stopped around a block, its health, golden inputs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gatekeeper.errors import PolicyEngineError
from gatekeeper.policy import EmbeddedOpa

__all__ = ["GOLDEN", "golden_input", "opa_healthy", "running_opa"]

GOLDEN = Path(__file__).resolve().parents[2] / "rego-tests" / "golden"


@contextmanager
def running_opa(opa_binary: str, policy_dir: Path) -> Iterator[EmbeddedOpa]:
    """The real ``opa`` child serving ``policy_dir``, stopped on exit."""
    engine = EmbeddedOpa(opa_binary=opa_binary, policy_dir=policy_dir)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


def golden_input(name: str) -> dict[str, Any]:
    """The policy input of ``rego-tests/golden/<name>/data.json``."""
    document: dict[str, Any] = json.loads((GOLDEN / name / "data.json").read_text())
    policy_input: dict[str, Any] = document.get("input", document)
    return policy_input


def opa_healthy(opa: EmbeddedOpa) -> bool:
    try:
        opa.engine.check_health()
        return True
    except PolicyEngineError:
        return False
