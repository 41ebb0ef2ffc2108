"""Witnesses: signed checkpoints published outside the database, and the checks that use them.

Whoever owns the database can drop its triggers, rewrite a record, recompute every hash and
delete the checkpoints: the database then agrees with itself. A *witness* keeps each signed
checkpoint where that person cannot change it:

* :class:`S3Witness` — one object per checkpoint (``<prefix><seq>.json``) in an S3 bucket with
  Object Lock, written in **compliance** mode with a retention date: nobody, not even the
  account's root user, can delete or overwrite it before that date;
* :class:`FileWitness` — an append-only JSON-lines file (put it on another volume, ideally one
  the database host cannot write, with ``chattr +a``).

``gatekeeper audit verify --witness URI`` then checks the database against the witness
(:func:`check_against_witness`), and the writer refuses to extend a chain whose head no longer
verifies against the last checkpoint it trusts (:func:`check_head_against_checkpoint`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gatekeeper.audit.chain import Checkpoint, record_hash
from gatekeeper.errors import ConfigurationError, InvalidInputError, StorageError

__all__ = [
    "CheckpointWitness",
    "FileWitness",
    "S3Witness",
    "check_against_witness",
    "check_head_against_checkpoint",
    "open_witness",
]

log = logging.getLogger(__name__)


class CheckpointWitness(Protocol):
    describe: str

    def publish(self, checkpoint: Checkpoint) -> None:
        """Keep ``checkpoint`` outside the database (raise StorageError if it cannot)."""
        ...

    def read(self) -> list[Checkpoint]:
        """Every witnessed checkpoint, in the order it was published."""
        ...


class FileWitness:
    """An append-only JSON-lines file: one checkpoint per line, fsynced, mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.describe = f"file {self.path}"

    def publish(self, checkpoint: Checkpoint) -> None:
        line = json.dumps(checkpoint.as_dict(), sort_keys=True, separators=(",", ":")) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageError(
                f"audit witness {self.describe} cannot be written: {exc.strerror or exc}"
            ) from exc

    def read(self) -> list[Checkpoint]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(
                f"audit witness {self.describe} cannot be read: {exc.strerror}"
            ) from exc
        return [
            Checkpoint.from_dict(json.loads(line), where=f"{self.describe} line {number}")
            for number, line in enumerate(lines, start=1) if line.strip()
        ]


class S3Witness:
    """One object per checkpoint in a bucket with Object Lock, in compliance mode."""

    def __init__(
        self, client: Any, bucket: str, prefix: str, *, retention: timedelta
    ) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix
        self.retention = retention
        self.describe = f"s3://{bucket}/{prefix}"

    def _key(self, checkpoint: Checkpoint) -> str:
        # zero-padded: the listing order is the chain order
        return f"{self.prefix}{checkpoint.seq:020d}-{checkpoint.key_id}.json"

    def publish(self, checkpoint: Checkpoint) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        body = json.dumps(checkpoint.as_dict(), sort_keys=True, separators=(",", ":")).encode()
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self._key(checkpoint), Body=body,
                ContentType="application/json",
                ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode(),  # noqa: S324 - required by Object Lock, not security
                ObjectLockMode="COMPLIANCE",
                ObjectLockRetainUntilDate=datetime.now(UTC) + self.retention,
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(
                f"audit witness {self.describe} refused checkpoint {checkpoint.seq}: {exc}"
            ) from exc

    def read(self) -> list[Checkpoint]:
        from botocore.exceptions import BotoCoreError, ClientError

        found: list[Checkpoint] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for entry in page.get("Contents", []):
                    body = self._client.get_object(Bucket=self.bucket, Key=entry["Key"])["Body"]
                    found.append(Checkpoint.from_dict(
                        json.loads(body.read()), where=f"s3://{self.bucket}/{entry['Key']}"
                    ))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"audit witness {self.describe} cannot be read: {exc}") from exc
        return found

    def check_locked(self) -> None:
        """The bucket must have Object Lock enabled (else nothing stops a deletion)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._client.get_object_lock_configuration(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise ConfigurationError(
                f"audit witness {self.describe}: the bucket has no Object Lock ({exc})"
            ) from exc
        if answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise ConfigurationError(
                f"audit witness {self.describe}: Object Lock is not enabled on the bucket"
            )


def open_witness(
    uri: str, *, endpoint_url: str | None = None, retention_days: int = 400,
    region: str | None = None,
) -> CheckpointWitness:
    """``file:///path/checkpoints.jsonl`` or ``s3://bucket/prefix/``."""
    parsed = urlparse(uri)
    if parsed.scheme == "file" and parsed.path:
        return FileWitness(Path(parsed.path))
    if parsed.scheme == "s3" and parsed.netloc:
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region or "us-east-1")
        witness = S3Witness(
            client, parsed.netloc, parsed.path.lstrip("/"),
            retention=timedelta(days=retention_days),
        )
        witness.check_locked()
        return witness
    raise InvalidInputError(
        f"audit witness {uri!r} must be file:///path or s3://bucket/prefix", field="witness"
    )


def check_against_witness(
    database_checkpoints: Sequence[Checkpoint], witnessed: Sequence[Checkpoint],
    *, describe: str,
) -> list[tuple[int, str]]:
    """Problems ``(seq, message)`` between the database's checkpoints and the witness's.

    A witnessed checkpoint must be in the database, identical; the witness must be in chain
    order; a database checkpoint older than the newest witnessed one must be witnessed. (The
    records themselves are checked against the witnessed checkpoints by the chain verifier.)
    """
    problems: list[tuple[int, str]] = []
    stored = {(c.seq, c.signature): c for c in database_checkpoints}
    by_seq: dict[int, list[Checkpoint]] = {}
    for checkpoint in database_checkpoints:
        by_seq.setdefault(checkpoint.seq, []).append(checkpoint)
    previous = 0
    for checkpoint in witnessed:
        if checkpoint.seq < previous:
            problems.append((checkpoint.seq, (
                f"the witness {describe} is out of order: the checkpoint at record "
                f"{checkpoint.seq} follows the one at record {previous}"
            )))
        previous = max(previous, checkpoint.seq)
        if (checkpoint.seq, checkpoint.signature) in stored:
            continue
        if any(c.record_hash != checkpoint.record_hash for c in by_seq.get(checkpoint.seq, [])):
            problems.append((checkpoint.seq, (
                f"record {checkpoint.seq} changed: the database's checkpoint at record "
                f"{checkpoint.seq} contradicts the one witnessed by {describe}"
            )))
        else:
            problems.append((checkpoint.seq, (
                f"the checkpoint at record {checkpoint.seq} witnessed by {describe} is missing "
                f"from the database"
            )))
    witnessed_keys = {(c.seq, c.signature) for c in witnessed}
    for checkpoint in database_checkpoints:
        if checkpoint.seq < previous and (checkpoint.seq, checkpoint.signature) not in (
            witnessed_keys
        ):
            problems.append((checkpoint.seq, (
                f"the database's checkpoint at record {checkpoint.seq} was never published to "
                f"the witness {describe}"
            )))
    return sorted(problems)


def check_head_against_checkpoint(
    connection: Connection, head: Any, trusted: Checkpoint | None,
    verified: tuple[int, str] | None = None,
) -> None:
    """Before the writer signs or extends: the chain from ``trusted`` to the head must verify.

    Recomputes the record hashes after the trusted checkpoint (at most one checkpoint interval
    of rows; with ``verified`` — a (seq, hash) this writer already checked or wrote after the
    checkpoint — only the rows after it, once that row is seen unchanged) and requires the
    record at the checkpoint to still carry the signed hash. Raises
    :class:`StorageError` naming the first record that does not fit: the writer then refuses,
    so a routine checkpoint never signs a rewritten trail.
    """
    from gatekeeper.audit.schema import decisions

    if trusted is None or trusted.seq > int(head.seq):
        return
    anchor = connection.execute(
        sa.select(decisions.c.record_hash).where(decisions.c.seq == trusted.seq)
    ).scalar()
    if anchor is not None and anchor != trusted.record_hash:
        raise StorageError(
            f"refusing to extend the audit chain: record {trusted.seq} no longer matches the "
            f"signed checkpoint at record {trusted.seq} (the trail was rewritten)"
        )
    start_seq, previous = trusted.seq, trusted.record_hash
    if verified is not None and trusted.seq < verified[0] <= int(head.seq):
        still = connection.execute(
            sa.select(decisions.c.record_hash).where(decisions.c.seq == verified[0])
        ).scalar()
        if still == verified[1]:
            start_seq, previous = verified
        elif still is not None:
            raise StorageError(
                f"refusing to extend the audit chain: record {verified[0]} changed since this "
                "writer wrote or checked it (the trail was rewritten)"
            )
    rows = connection.execute(
        sa.select(decisions.c.seq, decisions.c.prev_hash, decisions.c.record_hash,
                  decisions.c.decision_sha256, decisions.c.policy_input_sha256)
        .where(decisions.c.seq > start_seq).order_by(decisions.c.seq)
    ).all()
    expected_seq = start_seq + 1
    for row in rows:
        seq = int(row.seq)
        if seq > int(head.seq):
            raise StorageError(
                f"refusing to extend the audit chain: record {seq} lies beyond the chain head "
                f"at record {int(head.seq)}"
            )
        computed = record_hash(seq, previous, row.decision_sha256, row.policy_input_sha256)
        if seq != expected_seq or row.prev_hash != previous or computed != row.record_hash:
            raise StorageError(
                f"refusing to extend the audit chain: record {seq} does not chain to the "
                f"signed checkpoint at record {trusted.seq}"
            )
        previous = row.record_hash
        expected_seq += 1
    if previous != str(head.record_hash):
        raise StorageError(
            "refusing to extend the audit chain: its head does not follow from the signed "
            f"checkpoint at record {trusted.seq}"
        )
