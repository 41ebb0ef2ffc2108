"""Start time of the ``gatekeeper`` command line, against the floor of the interpreter itself.

Run: .venv/bin/python -m benchmarks.bench_cli [--runs N] [--verify] [--baseline DIR]

Each command is started ``N`` times as a fresh process (``python -m gatekeeper ...``, as the
console script does); the median and best wall time and the median CPU time (user + system,
which a busy machine inflates less than wall time) are printed, beside ``python -c pass``
measured in the same run, so a loaded machine shows as a higher floor rather than a slower CLI.

``--verify`` also times ``gatekeeper verify IMAGE`` doing a real key-based verification: a
loopback ``docker-registry`` is started, one image pushed and signed with ``cosign sign --key``
(the cosign v2 of ``scripts/install-tools``), and the command must answer verified (exit 0).
It is timed twice: with ``tlog: false`` and with ``tlog: true`` (the default), where the
signature carries a Rekor bundle annotation (SET and hashedrekord body) from a private log
(``tests/integration/rekor_fixtures.py``; cosign cannot reach a Rekor here) listed in a copy of
the public-good trusted root, so the command checks the log entry as it would one of
rekor.sigstore.dev.

``--baseline DIR`` times the same commands from another checkout too (for example
``git worktree add /tmp/base main``, or ``git archive COMMIT | tar -x -C DIR``), runs of the
two interleaved, so a before/after comparison shares one machine state.

Targets (issue 18, 2 cores): ``gatekeeper verify IMAGE`` <= 0.3 s; ``gatekeeper --help`` and
``gatekeeper verify-bundle --help`` under 0.3 s. Where the time goes: ``python -X importtime -m
gatekeeper verify IMAGE``. ``benchmarks/bench_cold.py`` times ``gatekeeper verify`` beside the
server's cold path and policy-controller's tester.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import children_cpu_seconds, run_process, summarise  # noqa: E402

COMMANDS: list[tuple[str, list[str]]] = [
    ("python -c pass (floor)", ["-c", "pass"]),
    ("gatekeeper --help", ["-m", "gatekeeper", "--help"]),
    ("gatekeeper --version", ["-m", "gatekeeper", "--version"]),
    ("gatekeeper verify-bundle --help", ["-m", "gatekeeper", "verify-bundle", "--help"]),
    ("gatekeeper verify --help", ["-m", "gatekeeper", "verify", "--help"]),
]
TARGET_SECONDS = 0.3


@contextmanager
def signed_image(workdir: Path) -> Iterator[tuple[str, dict[str, dict[str, str]]]]:
    """A loopback registry holding one image signed by a cosign key, its signature logged by a
    private Rekor; the image and, per ``tlog`` setting, the environment (a configuration
    trusting that key) for ``gatekeeper verify``."""
    from benchmarks.common import running_registry
    from tests.integration.cosign_fixtures import cosign_sign, generate_key_pair, push_image
    from tests.integration.rekor_fixtures import PrivateLog

    cosign = os.environ.get("GATEKEEPER_COSIGN_V2") or str(REPO / ".tools/bin/cosign-v2")
    (workdir / "storage").mkdir()
    with running_registry(workdir) as registry:
        keys = generate_key_pair(cosign, workdir / "keys")
        digest = push_image(registry, "bench-cli/app:1.0", "bench-cli image", workdir)
        cosign_sign(cosign, keys, f"{registry}/bench-cli/app@{digest}", workdir)
        log = PrivateLog()
        log.log_signature(registry, "bench-cli/app", digest, keys.public_pem)
        environments = {}
        for tlog in (False, True):
            config = workdir / f"gatekeeper-tlog-{str(tlog).lower()}.yaml"
            config.write_text(yaml.safe_dump({
                "registry": {"hosts": [{"host": registry, "plain_http": True}]},
                "signatures": {
                    "authorities": [{"name": "release", "keys": [keys.public_pem], "tlog": tlog}],
                    "images": [{"glob": f"{registry}/**", "authorities": ["release"]}],
                    "version": 2,
                },
                "trusted_root": str(log.trusted_root(workdir / "trusted_root.json"))
                if tlog else "none",
                "ecr_auth": False,
            }))
            environments[f"tlog {str(tlog).lower()}"] = {
                "GATEKEEPER_CONFIG": str(config),
                "GATEKEEPER_DATABASE_URL": f"sqlite:///{workdir / 'cli.db'}",
            }
        yield f"{registry}/bench-cli/app:1.0", environments


def measure(trees: dict[str, Path], arguments: list[str], runs: int,
            extra_env: dict[str, str]) -> dict[str, tuple[list[float], list[float]]]:
    """Per tree: wall and CPU seconds of ``runs`` runs, the trees' runs interleaved (after one
    untimed run each, which warms the file cache and the ``.pyc`` files). Without
    ``PYTHONDONTWRITEBYTECODE``, so that the untimed run does write them: an installed package
    has them, and compiling the sources again would cost every timed run ~40 ms."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("GATEKEEPER_") and k != "PYTHONDONTWRITEBYTECODE"}  # fmt: skip
    envs = {name: {**base, **extra_env, "PYTHONPATH": str(tree)} for name, tree in trees.items()}
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in trees}
    for name, tree in trees.items():
        run_process([sys.executable, *arguments], env=envs[name], cwd=tree)
    for _ in range(runs):
        for name, tree in trees.items():
            before = children_cpu_seconds()
            wall, _ = run_process([sys.executable, *arguments], env=envs[name], cwd=tree)
            samples[name][0].append(wall)
            samples[name][1].append(children_cpu_seconds() - before)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--verify", action="store_true",
                        help="also time a real key-based `gatekeeper verify IMAGE`")
    parser.add_argument("--baseline", type=Path, help="another checkout, timed alongside")
    options = parser.parse_args()
    trees = {"this": REPO}
    if options.baseline is not None:
        trees["baseline"] = options.baseline.resolve()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, {options.runs} runs "
          f"each, python {sys.version.split()[0]}"
          + (f", baseline {trees['baseline']}" if "baseline" in trees else ""))
    print(f"{'command':<40} {'tree':<9} {'median':>8} {'best':>8} {'CPU':>8} {'over floor':>11}")
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        commands: list[tuple[str, list[str], dict[str, str]]] = [
            (label, arguments, {}) for label, arguments in COMMANDS
        ]
        with contextmanager_or_none(options.verify, Path(tmp)) as world:
            if world is not None:
                image, environments = world
                for setting, env in environments.items():
                    commands.append((f"gatekeeper verify IMAGE ({setting})",
                                     ["-m", "gatekeeper", "verify", image], env))  # fmt: skip
            floors: dict[str, float] = {}
            medians: dict[str, dict[str, float]] = {}
            for label, arguments, extra_env in commands:
                measured = measure(trees, arguments, options.runs, extra_env)
                for name, (walls, cpus) in measured.items():
                    summary = summarise(walls)
                    floors.setdefault(name, summary.p50)
                    medians.setdefault(label, {})[name] = summary.p50
                    verdict = "" if label.startswith("python") else (
                        "  ok" if summary.p50 <= TARGET_SECONDS else f"  over {TARGET_SECONDS} s")
                    print(f"{label:<40} {name:<9} {summary.p50:>7.3f}s {summary.best:>7.3f}s "
                          f"{statistics.median(cpus):>7.3f}s "
                          f"{summary.p50 - floors[name]:>10.3f}s{verdict}", flush=True)
    if "baseline" in trees:
        print("this / baseline (median wall, same run):")
        for label, by_tree in medians.items():
            print(f"  {label:<40} {by_tree['this'] / by_tree['baseline']:.2f}x")


@contextmanager
def contextmanager_or_none(
    wanted: bool, workdir: Path
) -> Iterator[tuple[str, dict[str, dict[str, str]]] | None]:
    if not wanted:
        yield None
        return
    with signed_image(workdir) as world:
        yield world


if __name__ == "__main__":
    main()
