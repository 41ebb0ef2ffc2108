"""Policy revision: a content hash of the loaded policies and data."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

__all__ = ["POLICY_FILE_SUFFIXES", "DirectoryRevision", "hash_policy_files"]

#: Files OPA loads from a policy directory (Rego modules and data documents).
POLICY_FILE_SUFFIXES = (".rego", ".json", ".yaml", ".yml")


def _policy_files(directory: Path) -> list[Path]:
    return sorted(
        path
        for path in directory.rglob("*")
        if path.is_file()
        and path.suffix in POLICY_FILE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


def hash_policy_files(files: dict[str, bytes]) -> str:
    """``sha256:<hex>`` over the sorted (relative path, content) pairs, unambiguously framed."""
    digest = hashlib.sha256()
    for name in sorted(files):
        encoded = name.encode()
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
        digest.update(len(files[name]).to_bytes(8, "big") + files[name])
    return f"sha256:{digest.hexdigest()}"


class DirectoryRevision:
    """Revision of a policy directory, re-hashed only when a file's size or mtime changed."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._revision = ""

    def current(self) -> str:
        files = _policy_files(self._directory)
        stamp = tuple(
            (str(p.relative_to(self._directory)), p.stat().st_mtime_ns, p.stat().st_size)
            for p in files
        )
        with self._lock:
            if stamp != self._stamp:
                contents = {str(p.relative_to(self._directory)): p.read_bytes() for p in files}
                self._revision = hash_policy_files(contents)
                self._stamp = stamp
            return self._revision
