"""``gatekeeper serve`` as a real child process on loopback, for tests and benchmarks that need
the real HTTP server (uvicorn, its protocol, the embedded OPA as a grandchild)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers.cli import outside_environment
from tests.helpers.serve import REPO, ServedProcess, gatekeeper_serve

SECRET = "served-gatekeeper-secret-of-at-least-32-bytes"


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


#: What ``serve`` yields: the URL, port, process and log of the running gatekeeper.
Served = ServedProcess


@contextmanager
def serve(workdir: Path, *, opa_binary: str, **env: str) -> Iterator[Served]:
    variables = outside_environment()
    variables.update(
        PYTHONPATH=str(REPO), GATEKEEPER_SKIP_VENV="1",
        GATEKEEPER_DATABASE_URL=f"sqlite:///{workdir / 'audit.db'}",
        GATEKEEPER_OPA_BINARY=opa_binary,
        GATEKEEPER_POLICY_DIR=str(REPO / "policies"),
        GATEKEEPER_METRICS_PORT="0",
        GATEKEEPER_RESOLVE_DIGESTS="false",
        GATEKEEPER_AUTH_HS256_SECRET=SECRET,
        GATEKEEPER_AUDIT_SPOOL_DIR=str(workdir / "audit-spool"),
        GATEKEEPER_POLICY_STATE_DIR=str(workdir / "policy-state"),
    )
    variables.update(env)
    with gatekeeper_serve(variables, workdir / "serve.log") as served:
        yield served
