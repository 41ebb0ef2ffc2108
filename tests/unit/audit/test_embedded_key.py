"""Where the embedded default keeps its generated checkpoint key, and when there is none."""

import stat
from pathlib import Path

import pytest

from gatekeeper.audit.embedded_key import embedded_key_path, ensure_embedded_key
from gatekeeper.errors import ConfigurationError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///var/gatekeeper.db", "var/gatekeeper.db.audit-signing-key.pem"),
        ("sqlite:////srv/gk/audit.sqlite", "/srv/gk/audit.sqlite.audit-signing-key.pem"),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        # production: several replicas share the store, a generated key per replica would fork
        ("postgresql://gk:secret@db:5432/gatekeeper", None),
        ("postgresql+psycopg://gk@127.0.0.1/gk", None),
        ("not a url", None),
    ],
)
def test_key_path_only_for_a_sqlite_file(url: str, expected: str | None) -> None:
    path = embedded_key_path(url)
    assert (str(path) if path else None) == expected


def test_generated_once_private_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "db" / "gatekeeper.db.audit-signing-key.pem"
    first = ensure_embedded_key(path)
    assert first.created and stat.S_IMODE(path.stat().st_mode) == 0o600
    second = ensure_embedded_key(path)
    assert not second.created and second.key_id == first.key_id
    assert second.describe() == {"source": "embedded", "file": str(path), "key_id": first.key_id}


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    ensure_embedded_key(path)
    path.chmod(0o640)
    with pytest.raises(ConfigurationError, match=r"readable by other users \(mode 0640\); chmod 600 it"):
        ensure_embedded_key(path)
