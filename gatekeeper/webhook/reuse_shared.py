"""Decision reuse shared by the worker processes of one ``gatekeeper serve --workers N``.

The API server sends the mutating and the validating call of one admission on connections of
its own choosing, so with N workers the validating call usually lands on another process than
the mutating one. :class:`SharedDecisionReuse` keeps the contract of
:class:`~gatekeeper.webhook.reuse.DecisionReuse` (each remembered decision is taken at most
once, only for exactly the same key, only before it expires) in a SQLite file that every
worker of the node opens: the supervisor creates it in its private runtime directory (mode
0700), so nothing but the workers can read or plant an entry.

* ``take`` is one ``DELETE ... RETURNING`` statement: SQLite runs it under its write lock, so
  two workers can never take the same entry.
* It is a cache, not a record: ``synchronous=OFF`` (a crash loses nothing the audit trail does
  not already hold), and any SQLite failure makes ``take`` answer None (the review is evaluated
  afresh) and ``remember`` drop the entry. Reuse can only save work, never admit something
  unevaluated.
* Expiry uses ``time.monotonic``: on Linux ``CLOCK_MONOTONIC`` is one clock for every process
  of the machine, and the workers of one supervisor always share a machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gatekeeper.domain import Decision, decision_from_dict
from gatekeeper.webhook.reuse import AdmissionKey

__all__ = ["SharedDecisionReuse", "admission_key_digest"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS remembered (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    expires REAL NOT NULL,
    document TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS remembered_by_key ON remembered (key, seq);
"""


def admission_key_digest(key: AdmissionKey) -> str:
    """sha256 over every field of ``key`` (canonical JSON): equal keys, equal digests."""
    canonical = json.dumps(
        [key.namespace, key.mode.value, key.dry_run, sorted(key.images), key.facts,
         key.fingerprint],
        separators=(",", ":"), ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class SharedDecisionReuse:
    """``key -> decisions`` in a SQLite file shared by the workers; each taken once."""

    def __init__(
        self,
        path: Path,
        *,
        ttl_seconds: float = 60.0,
        max_entries: int = 4096,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._ttl = ttl_seconds
        self._max = max_entries
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(
            self.path, timeout=5.0, isolation_level=None, check_same_thread=False
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=OFF")
        self._connection.executescript(_SCHEMA)

    def remember(self, key: AdmissionKey, decision: Decision) -> None:
        if self._ttl <= 0:
            return
        # The decision's public document: all the validating answer is built from. Its policy
        # input (often the largest part) stays in the audit record and is not copied here.
        document = json.dumps(decision.as_dict(), separators=(",", ":"))
        now = self._monotonic()
        try:
            with self._lock:
                cursor = self._connection.execute(
                    "INSERT INTO remembered (key, expires, document) VALUES (?, ?, ?)",
                    (admission_key_digest(key), now + self._ttl, document),
                )
                newest = cursor.lastrowid or 0
                # bounded: the least recently stored go first, and so do the expired
                self._connection.execute(
                    "DELETE FROM remembered WHERE seq <= ? OR expires <= ?",
                    (newest - self._max, now),
                )
        except sqlite3.Error as exc:
            log.warning("decision reuse %s: cannot remember decision %s (%s); the validating "
                        "webhook will evaluate it afresh", self.path, decision.decision_id, exc)

    def take(self, key: AdmissionKey) -> Decision | None:
        """The oldest unexpired decision remembered for exactly ``key`` (removed), or None."""
        try:
            with self._lock:
                row = self._connection.execute(
                    "DELETE FROM remembered WHERE seq = (SELECT seq FROM remembered "
                    "WHERE key = ? AND expires > ? ORDER BY seq LIMIT 1) "
                    "RETURNING document",
                    (admission_key_digest(key), self._monotonic()),
                ).fetchone()
        except sqlite3.Error as exc:
            log.warning("decision reuse %s: lookup failed (%s); evaluating afresh", self.path, exc)
            return None
        if row is None:
            return None
        return decision_from_dict(json.loads(row[0]))

    def __len__(self) -> int:
        with self._lock:
            count = self._connection.execute(
                "SELECT count(*) FROM remembered WHERE expires > ?", (self._monotonic(),)
            ).fetchone()
        return int(count[0])

    def close(self) -> None:
        with self._lock:
            self._connection.close()
