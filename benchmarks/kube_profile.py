"""Where the time of a ``bench_kube`` round goes (``--profile``): CPU per process group per Pod,
the whole machine's CPU use, the API server's connections to the gatekeeper, and the
gatekeeper's own timings (its Prometheus histograms, diffed over the round).

Everything is read from /proc and from the gatekeeper's metrics endpoint on loopback.
"""

from __future__ import annotations

import os
import statistics
import threading
import urllib.request
from pathlib import Path

from benchmarks.common import proc_cpu

# histograms whose mean over the round (per label set) is printed in ms
_HISTOGRAMS = ("forge_gatekeeper_admission_review_duration_seconds",
               "forge_gatekeeper_opa_evaluation_duration_seconds",
               "forge_gatekeeper_db_query_duration_seconds")


def _processes() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent, program, user + system CPU seconds)."""
    found: dict[int, tuple[int, str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        if (cpu := proc_cpu(stat)) is not None:
            found[int(stat.parent.name)] = cpu
    return found


def _machine() -> tuple[float, float]:
    """(busy, total) jiffies of all cores from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return float(sum(values[:8]) - idle), float(sum(values[:8]))


class Groups:
    """CPU seconds of named process groups: each root pid and its descendants; the gatekeeper's
    tree is split into its Python processes and its ``opa``."""

    def __init__(self, roots: dict[str, list[int]], gatekeeper: int) -> None:
        self.roots = roots
        self.gatekeeper = gatekeeper

    def cpu(self) -> dict[str, float]:
        table = _processes()

        def under(pid: int, root: int) -> bool:
            while pid > 1:
                if pid == root:
                    return True
                pid = table.get(pid, (0, "", 0.0))[0]
            return False

        spent: dict[str, float] = {}
        for name, roots in self.roots.items():
            spent[name] = sum(seconds for pid, (_, _, seconds) in table.items()
                              if any(under(pid, root) for root in roots))
        tree = [(program, seconds) for pid, (_, program, seconds) in table.items()
                if under(pid, self.gatekeeper)]
        spent["gatekeeper (python)"] = sum(s for program, s in tree if program != "opa")
        spent["opa"] = sum(s for program, s in tree if program == "opa")
        return spent


def threads(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``, by ``tid:name`` (the first is the event loop)."""
    spent: dict[str, float] = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        if (cpu := proc_cpu(stat)) is not None:
            spent[f"{stat.parent.name}:{cpu[1]}"] = cpu[2]
    return spent


class Connections(threading.Thread):
    """Samples, every 20 ms, the established TCP connections accepted on ``port``."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.suffix = f":{port:04X}"
        self.samples: list[int] = []
        self.done = threading.Event()

    def count(self) -> int:
        total = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if fields[1].endswith(self.suffix) and fields[3] == "01":
                    total += 1
        return total

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.samples.append(self.count())


def scrape(metrics_port: int) -> dict[str, float]:
    """The gatekeeper's ``_sum``/``_count`` series (name with labels -> value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    series: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, _, value = line.rpartition(" ")
        if "_sum" in key or "_count" in key:
            series[key] = float(value)
    return series


class Profile:
    """Start before a round, ``finish`` after it: prints the breakdown per Pod."""

    def __init__(self, groups: Groups, gatekeeper_port: int | None,
                 metrics_port: int | None) -> None:
        self.groups = groups
        self.metrics_port = metrics_port
        self.connections = Connections(gatekeeper_port) if gatekeeper_port else None
        self.before = groups.cpu()
        self.threads = threads(groups.gatekeeper) if groups.gatekeeper else {}
        self.machine = _machine()
        self.metrics = scrape(metrics_port) if metrics_port else {}
        if self.connections:
            self.connections.start()

    def finish(self, pods: int, seconds: float) -> list[str]:
        """The breakdown, as lines to print under the round's figures."""
        lines: list[str] = []
        after = self.groups.cpu()
        busy, total = _machine()
        cores = os.cpu_count() or 1
        figures: dict[str, float] = {
            name: (after[name] - self.before[name]) * 1000 / pods for name in after}
        used = (busy - self.machine[0]) / max(1.0, total - self.machine[1])
        parts = ", ".join(f"{name} {ms:.2f}" for name, ms in figures.items())
        machine_ms = used * cores * seconds * 1000 / pods
        lines.append(f"    CPU ms/Pod: {parts}; sum {sum(figures.values()):.2f}; machine busy "
                     f"{used * 100:.0f}% of {cores} cores ({machine_ms:.2f} ms/Pod incl. other "
                     "load)")
        if self.threads:
            now = threads(self.groups.gatekeeper)
            shares = sorted(((now[key] - self.threads.get(key, 0.0)) / seconds, key)
                            for key in now)[::-1][:4]
            loop = f"{self.groups.gatekeeper}:"
            lines.append("    gatekeeper threads, share of one core over the round: " + ", ".join(
                f"{'event loop ' if key.startswith(loop) else ''}{key} {share * 100:.0f}%"
                for share, key in shares))
        if self.connections:
            self.connections.done.set()
            self.connections.join()
            samples = self.connections.samples or [0]
            lines.append(f"    API server -> gatekeeper connections: max {max(samples)}, median "
                  f"{statistics.median(samples):.0f} ({len(samples)} samples)")
        if self.metrics_port:
            now = scrape(self.metrics_port)
            timings = []
            for base in _HISTOGRAMS:
                for key in now:
                    if not key.startswith(f"{base}_count"):
                        continue
                    labels = key.removeprefix(f"{base}_count")
                    count = now[key] - self.metrics.get(key, 0)
                    total_s = (now.get(f"{base}_sum{labels}", 0)
                               - self.metrics.get(f"{base}_sum{labels}", 0))
                    if count:
                        name = base.removeprefix("forge_gatekeeper_")
                        timings.append(f"{name}{labels} {total_s * 1000 / count:.2f} ms "
                                       f"x{count:.0f}")
            commits = (now.get("forge_gatekeeper_audit_batch_decisions_count", 0)
                       - self.metrics.get("forge_gatekeeper_audit_batch_decisions_count", 0))
            records = (now.get("forge_gatekeeper_audit_batch_decisions_sum", 0)
                       - self.metrics.get("forge_gatekeeper_audit_batch_decisions_sum", 0))
            if commits:
                timings.append(f"audit {records:.0f} records in {commits:.0f} commits")
            lines.append(f"    gatekeeper means: {'; '.join(timings)}")
        return lines
