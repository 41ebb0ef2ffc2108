"""Pin the image's Python dependencies, or check a built site-packages against the pins.

    relock.py LOCKFILE                   resolve pyproject.toml's runtime dependencies (pip's
                                         resolver, wheels only) and write exact pins to LOCKFILE
    relock.py --check LOCKFILE SITEDIR   fail, naming each package, unless SITEDIR holds exactly
                                         the pinned distributions (plus forge-gatekeeper itself)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

PROJECT = "forge-gatekeeper"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        if not version:
            raise SystemExit(f"{path}: '{line}' is not an exact pin (name==version)")
        pins[canonical(name)] = version.strip()
    return pins


def installed(site: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for info in site.glob("*.dist-info"):
        meta = (info / "METADATA").read_text(encoding="utf-8", errors="replace")
        name = re.search(r"^Name: (.+)$", meta, re.M)
        version = re.search(r"^Version: (.+)$", meta, re.M)
        if name and version:
            found[canonical(name.group(1).strip())] = version.group(1).strip()
    return found


def relock(lock: Path) -> None:
    report = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--only-binary=:all:", "--report", "-", "."],
        check=True, capture_output=True, text=True,
    ).stdout
    pins = sorted(
        (canonical(item["metadata"]["name"]), item["metadata"]["version"])
        for item in json.loads(report)["install"]
        if canonical(item["metadata"]["name"]) != PROJECT
    )
    header = "# Exact runtime dependencies of the image; regenerate: scripts/build-image --relock\n"
    lock.write_text(header + "".join(f"{name}=={version}\n" for name, version in pins))
    print(f"{lock}: {len(pins)} pins")


def check(lock: Path, site: Path) -> None:
    pins = read_lock(lock)
    found = installed(site)
    found.pop(PROJECT, None)
    problems = [f"{name} {version} is installed but not pinned" for name, version in
                sorted(found.items()) if name not in pins]
    problems += [f"{name} is installed at {found[name]}, pinned at {pins[name]}" for name in
                 sorted(found) if name in pins and pins[name] != found[name]]
    if problems:
        raise SystemExit(f"{lock} is out of date (run scripts/build-image --relock):\n  "
                         + "\n  ".join(problems))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--check"] and len(argv) == 3:
        check(Path(argv[1]), Path(argv[2]))
    elif len(argv) == 1:
        relock(Path(argv[0]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
