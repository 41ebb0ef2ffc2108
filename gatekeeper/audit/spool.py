"""A local durable spool for decisions the database could not take (yet).

One append-only file of JSON lines, ``{"decision": {...}, "policy_input": {...}}``, each batch
written and ``fsync``-ed before the caller is answered. Replayed in order into the chain when
the database answers again (and at start). Replay is idempotent: a line whose decision is
already stored (its commit reached the database but the acknowledgement did not) is skipped
by decision id, so truncating the file only after the database committed is enough.

A torn last line can only be a batch whose ``fsync`` never returned, i.e. a decision that was
never answered; it is dropped with a warning. A corrupt line anywhere else stops the replay:
nothing is skipped silently.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gatekeeper.errors import StorageError

__all__ = ["DurableSpool", "SpooledDecision"]

log = logging.getLogger(__name__)

SpooledDecision = tuple[Mapping[str, Any], Mapping[str, Any] | None]


class DurableSpool:
    """``append`` (fsync) / ``read_all`` / ``clear``; ``depth`` counts the waiting decisions."""

    FILE_NAME = "decisions.spool.jsonl"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / self.FILE_NAME
        self._lock = threading.Lock()
        self._depth = self._count_existing()

    def _count_existing(self) -> int:
        try:
            with self.path.open("rb") as handle:
                return sum(1 for line in handle if line.endswith(b"\n"))
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.error("cannot read audit spool %s: %s", self.path, exc.strerror)
            return 0

    @property
    def depth(self) -> int:
        return self._depth

    def append(self, items: Sequence[SpooledDecision]) -> None:
        """Write ``items`` durably (data and directory entry fsynced) or raise StorageError."""
        payload = b"".join(
            json.dumps(
                {"decision": decision, "policy_input": policy_input},
                separators=(",", ":"), sort_keys=True,
            ).encode()
            + b"\n"
            for decision, policy_input in items
        )
        with self._lock:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                created = not self.path.exists()
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    written = 0
                    while written < len(payload):
                        written += os.write(fd, payload[written:])
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if created:
                    _fsync_directory(self.directory)
            except OSError as exc:
                raise StorageError(
                    f"the audit spool {self.path} cannot be written: {exc.strerror or exc}"
                ) from exc
            self._depth += len(items)

    def read_all(self) -> list[SpooledDecision]:
        """Every complete line, in order. Raises StorageError for a corrupt line."""
        with self._lock:
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                return []
            except OSError as exc:
                raise StorageError(
                    f"the audit spool {self.path} cannot be read: {exc.strerror}"
                ) from exc
        lines = data.split(b"\n")
        torn = lines.pop()  # after the last newline: empty, or a batch that never finished
        if torn:
            log.warning(
                "audit spool %s ends with an incomplete line (%d bytes) from a write that never "
                "finished; it was never answered and is dropped", self.path, len(torn),
            )
        items: list[SpooledDecision] = []
        for number, line in enumerate(lines, start=1):
            try:
                value = json.loads(line)
                items.append((value["decision"], value.get("policy_input")))
            except (ValueError, KeyError, TypeError) as exc:
                raise StorageError(
                    f"the audit spool {self.path} line {number} is corrupt; replay stopped"
                ) from exc
        return items

    def clear(self, replayed: int) -> None:
        """Drop the first ``replayed`` lines, after the database committed them."""
        with self._lock:
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                self._depth = 0
                return
            lines = data.split(b"\n")
            torn = lines.pop()
            remaining = lines[replayed:]
            temporary = self.path.with_suffix(".tmp")
            body = b"".join(line + b"\n" for line in remaining) + torn
            try:
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, body)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(temporary, self.path)
                _fsync_directory(self.directory)
            except OSError as exc:
                raise StorageError(
                    f"the audit spool {self.path} cannot be rewritten: {exc.strerror}"
                ) from exc
            self._depth = len(remaining)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
