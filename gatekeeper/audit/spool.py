"""A local durable spool for decisions the database could not take (yet).

One append-only file of JSON lines, ``{"decision": {...}, "policy_input": {...}}`` (and
``"evidence": {sha256: document}``, the evidence documents the input references), each batch
written and ``fsync``-ed before the caller is answered. Replayed in order into the chain when
the database answers again (and at start). Replay is idempotent: a line whose decision is
already stored (its commit reached the database but the acknowledgement did not) is skipped
by decision id, so truncating the file only after the database committed is enough.

A torn last line can only be a batch whose ``fsync`` never returned, i.e. a decision that was
never answered; it is dropped with a warning.

A line the store refuses (invalid data that no retry can fix: a NUL byte PostgreSQL will not
take, a corrupt line) must not block the ones behind it, and must not vanish either: it is
moved to the *quarantine* file ``decisions.quarantine.jsonl`` beside the spool, with the reason,
and counted (``quarantined``, a metric, ``/readyz``, ``gatekeeper audit verify``). Both files are
created mode 0600 and stay so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gatekeeper.errors import StorageError

__all__ = [
    "DurableSpool", "SpoolLine", "SpooledDecision", "SpooledWithEvidence", "count_quarantined",
]

log = logging.getLogger(__name__)

SpooledDecision = tuple[Mapping[str, Any], Mapping[str, Any] | None]
#: A decision, its policy input and the evidence documents the input references by hash.
SpooledWithEvidence = tuple[Mapping[str, Any], Mapping[str, Any] | None, Mapping[str, Any]]
#: One complete line: its number, the decision (None when the line is corrupt), the raw bytes.
SpoolLine = tuple[int, SpooledWithEvidence | None, bytes]


class DurableSpool:
    """``append`` (fsync) / ``read_all`` / ``clear``; ``depth`` counts the waiting decisions."""

    FILE_NAME = "decisions.spool.jsonl"
    QUARANTINE_NAME = "decisions.quarantine.jsonl"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / self.FILE_NAME
        self.quarantine_path = self.directory / self.QUARANTINE_NAME
        self._lock = threading.Lock()
        self._depth = self._count_existing()
        self._quarantined = count_quarantined(self.directory)

    @property
    def quarantined(self) -> int:
        """Lines the store refused, kept in :attr:`quarantine_path`."""
        return self._quarantined

    def quarantine(self, line: bytes, *, number: int, reason: str) -> None:
        """Keep a refused line (with why) in the quarantine file, fsynced, mode 0600."""
        record = json.dumps(
            {"quarantined_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
             "spool_line": number, "reason": reason,
             "line": line.decode("utf-8", errors="backslashreplace").rstrip("\n")},
            separators=(",", ":"), sort_keys=True,
        ).encode() + b"\n"
        with self._lock:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.quarantine_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, record)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise StorageError(
                    f"the audit quarantine {self.quarantine_path} cannot be written: "
                    f"{exc.strerror or exc}"
                ) from exc
            self._quarantined += 1
        log.error("audit spool %s line %d quarantined in %s: %s",
                  self.path, number, self.quarantine_path, reason)

    def _count_existing(self) -> int:
        """Count waiting lines; cut a torn tail left by a crash so appends start clean."""
        try:
            with self.path.open("r+b") as handle:
                count, good_end = 0, 0
                for line in handle:
                    if not line.endswith(b"\n"):
                        break
                    count += 1
                    good_end += len(line)
                size = handle.seek(0, os.SEEK_END)
                if size != good_end:
                    log.warning(
                        "audit spool %s ends with %d bytes of a write that never finished "
                        "(never answered); cutting them", self.path, size - good_end,
                    )
                    handle.truncate(good_end)
                    handle.flush()
                    os.fsync(handle.fileno())
                return count
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.error("cannot read audit spool %s: %s", self.path, exc.strerror)
            return 0

    @property
    def depth(self) -> int:
        return self._depth

    def append(self, items: Sequence[SpooledDecision | SpooledWithEvidence]) -> None:
        """Write ``items`` durably (data and directory entry fsynced) or raise StorageError."""
        payload = b"".join(
            json.dumps(
                {"decision": item[0], "policy_input": item[1],
                 **({"evidence": item[2]} if len(item) > 2 and item[2] else {})},
                separators=(",", ":"), sort_keys=True,
            ).encode()
            + b"\n"
            for item in items
        )
        with self._lock:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                created = not self.path.exists()
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    size = os.fstat(fd).st_size
                    try:
                        written = 0
                        while written < len(payload):
                            written += os.write(fd, payload[written:])
                        os.fsync(fd)
                    except OSError:
                        # (e.g. disk full) leave no torn line behind for the next append
                        with contextlib.suppress(OSError):
                            os.ftruncate(fd, size)
                        raise
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
        """Every complete line, in order (see :meth:`iter_items`)."""
        return list(self.iter_items())

    def iter_items(self) -> Iterator[SpooledDecision]:
        """Complete lines in order, streamed (memory stays flat after a long outage).

        Raises StorageError for a corrupt line; a torn last line is dropped with a warning.
        """
        for number, item, _raw in self.iter_lines():
            if item is None:
                raise StorageError(
                    f"the audit spool {self.path} line {number} is corrupt; replay stopped"
                )
            yield item[0], item[1]

    def iter_lines(self) -> Iterator[SpoolLine]:
        """Every complete line in order, a corrupt one as ``(number, None, raw)``."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(
                f"the audit spool {self.path} cannot be read: {exc.strerror}"
            ) from exc
        with handle:
            for number, line in enumerate(handle, start=1):
                if not line.endswith(b"\n"):
                    # a batch whose write never finished: it was never answered
                    log.warning(
                        "audit spool %s ends with an incomplete line (%d bytes) from a write "
                        "that never finished; it was never answered and is dropped",
                        self.path, len(line),
                    )
                    return
                try:
                    value = json.loads(line)
                    item: SpooledWithEvidence | None = (
                        value["decision"], value.get("policy_input"), value.get("evidence") or {}
                    )
                except (ValueError, KeyError, TypeError):
                    item = None
                yield number, item, line

    def clear(self, replayed: int) -> None:
        """Drop the first ``replayed`` lines, after the database committed them (streamed)."""
        with self._lock:
            temporary = self.path.with_suffix(".tmp")
            remaining = 0
            try:
                # created 0600 like the spool itself (open() would follow the umask: 0644)
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.fchmod(fd, 0o600)  # a leftover temporary keeps its old mode otherwise
                with self.path.open("rb") as source, os.fdopen(fd, "wb") as target:
                    for index, line in enumerate(source):
                        if index >= replayed:
                            target.write(line)
                            remaining += line.endswith(b"\n")
                    target.flush()
                    os.fsync(target.fileno())
                os.replace(temporary, self.path)
                _fsync_directory(self.directory)
            except FileNotFoundError:
                self._depth = 0
                return
            except OSError as exc:
                raise StorageError(
                    f"the audit spool {self.path} cannot be rewritten: {exc.strerror}"
                ) from exc
            self._depth = remaining


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def count_quarantined(directory: Path) -> int:
    """Records in the quarantine file of the spool in ``directory`` (0 when there is none)."""
    try:
        with (Path(directory) / DurableSpool.QUARANTINE_NAME).open("rb") as handle:
            return sum(1 for line in handle if line.endswith(b"\n"))
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.error("cannot read the audit quarantine in %s: %s", directory, exc.strerror)
        return 0
