"""Build the audit trail from configuration values (the composition root calls this)."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.engine import Engine

from gatekeeper.audit.chain import CheckpointSigner, load_public_key, load_signing_key
from gatekeeper.audit.embedded_key import embedded_key_path, ensure_embedded_key
from gatekeeper.audit.spool import DurableSpool
from gatekeeper.audit.sql import AuditSettings, SqlAuditLog
from gatekeeper.audit.witness import open_witness
from gatekeeper.metrics import Metrics
from gatekeeper.storage.engine import create_database_engine

__all__ = ["open_audit_log"]

log = logging.getLogger(__name__)


def open_audit_log(
    database_url: str,
    *,
    signing_key_file: Path | None = None,
    public_key_file: Path | None = None,
    spool_dir: Path | None = None,
    checkpoint_every: int = 1000,
    checkpoint_interval_seconds: float = 60.0,
    batch_size: int = 256,
    batch_wait_seconds: float = 0.002,
    retention_days: int | None = None,
    metrics: Metrics | None = None,
    read_only: bool = False,
    generate_embedded_key: bool = True,
    witness: str | None = None,
    witness_endpoint_url: str | None = None,
    witness_retention_days: int = 400,
    engine: Engine | None = None,
) -> SqlAuditLog:
    """An (unmigrated) :class:`SqlAuditLog`; a bad key is a ConfigurationError naming it.

    With no ``signing_key_file`` and a SQLite file as the store (the embedded default), the
    key beside the database is used, generated on first use unless ``generate_embedded_key``
    is false (see :mod:`gatekeeper.audit.embedded_key`). ``read_only`` (a reader such as
    ``gatekeeper decisions show``) skips the warning about unsigned checkpoints, which concerns
    writers. ``engine`` is the shared engine of :mod:`gatekeeper.storage` (built from
    ``database_url`` when not given).
    """
    signer = CheckpointSigner(load_signing_key(signing_key_file)) if signing_key_file else None
    key_info: dict[str, str] = {"source": "none"}
    if signer is not None:
        key_info = {"source": "configured", "file": str(signing_key_file),
                    "key_id": signer.key_id}
    elif (embedded := embedded_key_path(database_url)) is not None and (
        generate_embedded_key or embedded.exists()
    ):
        generated = ensure_embedded_key(embedded)
        signer = CheckpointSigner(load_signing_key(generated.path))
        key_info = generated.describe()
        if not generated.created:
            log.info("audit checkpoints are signed with the embedded key %s (key id %s)",
                     generated.path, generated.key_id)
    audit = SqlAuditLog(
        engine if engine is not None else create_database_engine(database_url),
        metrics=metrics,
        spool=DurableSpool(spool_dir) if spool_dir is not None else None,
        signer=signer,
        settings=AuditSettings(
            checkpoint_every=checkpoint_every,
            checkpoint_interval_seconds=checkpoint_interval_seconds,
            batch_size=batch_size,
            batch_wait_seconds=batch_wait_seconds,
            retention_days=retention_days,
        ),
        witness=(
            open_witness(witness, endpoint_url=witness_endpoint_url,
                         retention_days=witness_retention_days)
            if witness else None
        ),
    )
    audit.signing_key_info = key_info
    if public_key_file is not None:
        audit.verify_key = load_public_key(public_key_file)
    elif signer is None and not read_only:
        log.warning(
            "no audit signing key (GATEKEEPER_AUDIT_SIGNING_KEY_FILE): the trail is hash-chained "
            "but no checkpoints are signed, so exports cannot be verified offline"
        )
    return audit
