"""The README's ten-minute walkthrough, run as written (the block between its markers), against
the loopback registry of scripts/test-servers: it must end with the image allowed in production
and the export verified."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REGISTRY = os.environ.get("GATEKEEPER_TEST_REGISTRY")
COSIGN = os.environ.get("GATEKEEPER_COSIGN_V2")
pytestmark = pytest.mark.skipif(
    not (REGISTRY and COSIGN and shutil.which("skopeo")),
    reason="needs scripts/test-servers (registry, cosign) and skopeo")


def _block() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- walkthrough:start -->\n```bash\n(.*?)```\n<!-- walkthrough:end -->",
                      readme, re.S)
    assert found, "README has no walkthrough block"
    return found.group(1)


def test_readme_walkthrough_ends_with_an_allowed_signed_image(opa_binary: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert REGISTRY is not None and COSIGN is not None  # else skipped (pytestmark)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env.update(REGISTRY=REGISTRY, PORT=str(port), COSIGN=COSIGN, GATEKEEPER_OPA_BINARY=opa_binary,
               GATEKEEPER_METRICS_PORT="0")
    if os.environ.get("GATEKEEPER_SKIP_VENV"):
        env["GATEKEEPER_SKIP_VENV"] = os.environ["GATEKEEPER_SKIP_VENV"]
    result = subprocess.run(["bash", "-c", _block()], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    sections = output.split("== ")[1:]
    assert [s.splitlines()[0] for s in sections] == [
        "signed only", "signed, SBOM and provenance attested"]
    assert "verdict: deny allowed: False" in sections[0]
    assert "  violation [sbom] an SBOM is required in production" in sections[0]
    assert "  violation [signatures] no verified SLSA provenance" in sections[0]
    assert "verdict: allow allowed: True" in sections[1]
    assert "  violation" not in sections[1]
    assert "export verified: " in output
