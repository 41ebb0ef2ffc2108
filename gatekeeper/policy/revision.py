"""Policy revision: a content hash of the loaded policies and data."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["POLICY_FILE_SUFFIXES", "DirectoryRevision", "ServedRevision", "hash_policy_files"]

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


def _stamp_files(directory: Path, prefix: str = "") -> list[tuple[str, int, int]]:
    """``(relative path, mtime_ns, size)`` of what :func:`_policy_files` would list."""
    found: list[tuple[str, int, int]] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            relative = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):  # as Path.rglob: no symlinked directories
                found += _stamp_files(Path(entry.path), f"{relative}/")
            elif entry.is_file() and os.path.splitext(entry.name)[1] in POLICY_FILE_SUFFIXES:
                stat = entry.stat()
                found.append((relative, stat.st_mtime_ns, stat.st_size))
    return found


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
        # Called for every decision: one scandir walk (stat results come with the entries),
        # the files re-read and re-hashed only when a name, size or mtime changed.
        stamp = tuple(sorted(_stamp_files(self._directory)))
        with self._lock:
            if stamp != self._stamp:
                contents = {name: (self._directory / name).read_bytes() for name, _, _ in stamp}
                self._revision = hash_policy_files(contents)
                self._stamp = stamp
            return self._revision


class ServedRevision:
    """The revision an embedded OPA serves, as the policy lifecycle last materialised it.

    The lifecycle calls :meth:`set` with None before it rewrites the directory OPA watches,
    and with the revision id (the hash of exactly those files, the value
    :class:`DirectoryRevision` computes) once OPA serves them. Between two changes
    :meth:`current` is an attribute read: no directory walk per decision. While a change is
    under way, and before the lifecycle has said anything (an engine without a lifecycle, as in
    tests that drop a policy file into the directory), ``fallback`` answers, e.g.
    ``DirectoryRevision(directory).current``: the same answer as without a lifecycle.
    """

    def __init__(self, fallback: Callable[[], str]) -> None:
        self._fallback = fallback
        self._known: str | None = None

    def set(self, revision: str | None) -> None:
        self._known = revision  # one reference assignment: atomic for readers

    def current(self) -> str:
        known = self._known
        return known if known is not None else self._fallback()
