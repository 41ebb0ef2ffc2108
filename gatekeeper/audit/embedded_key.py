"""The embedded default's checkpoint key: generated on first start, beside the SQLite file.

Out of the box (``scripts/run``: SQLite, no key configured) an auditor must still be able to
export the trail and verify the export offline, which needs signed checkpoints. So when the
audit store is a SQLite *file* and no key is configured, an Ed25519 key is generated once as
``<database file>.audit-signing-key.pem`` (mode 0600, created exclusively so two processes
starting together cannot write two different keys) and reused afterwards.

A PostgreSQL store (production, several replicas) never gets a generated key: each replica
would otherwise sign with its own; production configures ``GATEKEEPER_AUDIT_SIGNING_KEY_FILE``.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatekeeper.audit.chain import key_id_of, load_signing_key
from gatekeeper.errors import ConfigurationError

__all__ = ["EMBEDDED_KEY_SUFFIX", "EmbeddedSigningKey", "embedded_key_path", "ensure_embedded_key"]

log = logging.getLogger(__name__)

#: Appended to the SQLite file's name:
#: ``var/gatekeeper.db`` -> ``var/gatekeeper.db.audit-signing-key.pem``.
EMBEDDED_KEY_SUFFIX = ".audit-signing-key.pem"


@dataclass(frozen=True, slots=True)
class EmbeddedSigningKey:
    path: Path
    key_id: str
    created: bool

    def describe(self) -> dict[str, str]:
        return {
            "source": "generated" if self.created else "embedded",
            "file": str(self.path),
            "key_id": self.key_id,
        }


def embedded_key_path(database_url: str) -> Path | None:
    """Where the embedded key lives for ``database_url``; None unless it is a SQLite file."""
    try:
        url = sa.engine.make_url(database_url)
    except sa.exc.ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    database = Path(url.database)
    return database.with_name(database.name + EMBEDDED_KEY_SUFFIX)


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"audit signing key {path} is readable by other users (mode "
            f"{stat.S_IMODE(mode):04o}); chmod 600 it"
        )


def ensure_embedded_key(path: Path) -> EmbeddedSigningKey:
    """Load the key at ``path``, generating it (0600) if it does not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _check_private(path)
        existing = load_signing_key(path)
        return EmbeddedSigningKey(path, key_id_of(existing.public_key()), created=False)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the audit signing key {path}: {exc.strerror}"
        ) from exc
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise ConfigurationError(
            f"cannot write the audit signing key {path}: {exc.strerror}"
        ) from exc
    key_id = key_id_of(key.public_key())
    log.warning(
        "generated the audit checkpoint signing key %s (key id %s) for the embedded SQLite "
        "store; keep it with the database. Production configures "
        "GATEKEEPER_AUDIT_SIGNING_KEY_FILE",
        path, key_id,
    )
    return EmbeddedSigningKey(path, key_id, created=True)
