"""The audit-trail use case over a fake store that implements the port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gatekeeper.domain import Decision, DecisionPage, DecisionQuery
from gatekeeper.domain.ports.audit import AuditTrailStore, ExportFormat, ExportRange
from gatekeeper.errors import ConfigurationError, InvalidInputError
from gatekeeper.usecases.audit_trail import AuditTrail


@dataclass
class _Report:
    notes: list[str] = field(default_factory=list)
    records: int = 3
    first_seq: int | None = 1
    last_seq: int | None = 3
    checkpoints: int = 1
    last_checkpoint_seq: int | None = 3
    uncovered: int = 0
    pruned_through: int | None = None

    def summary(self) -> str:
        return "audit trail verified: 3 records (1..3)"


@dataclass
class FakeTrailStore:
    configured: Path | None = None
    calls: list[tuple[str, object]] = field(default_factory=list)

    def get(self, decision_id: str) -> Decision:
        raise NotImplementedError

    def query(self, query: DecisionQuery) -> DecisionPage:
        return DecisionPage((), None)

    def plan_export(self, query: DecisionQuery) -> ExportRange:
        raise NotImplementedError

    def iter_export(self, plan: ExportRange, export_format: ExportFormat, *,
                    progress: Callable[[int], None] | None = None) -> Iterator[str]:
        self.calls.append(("export", export_format))
        return iter(())

    def verify(self, *, since: datetime | None = None, public_key: Path | None = None,
               witness: str | None = None) -> _Report:
        self.calls.append(("verify", public_key))
        return _Report()

    def verify_export_file(self, path: Path, public_key: Path) -> _Report:
        return _Report()

    def configured_public_key(self) -> Path | None:
        return self.configured

    def quarantine(self) -> tuple[int, str]:
        return 2, "/spool/decisions.quarantine.jsonl"

    def write_checkpoint(self) -> None:
        return None

    def prune(self, older_than: timedelta) -> int:
        self.calls.append(("prune", older_than))
        return 7

    def close(self) -> None:
        pass


def _trail(store: FakeTrailStore) -> AuditTrail:
    checked: AuditTrailStore = store  # mypy proves the fake fits the port
    return AuditTrail(checked)


def test_prune_without_an_age_says_how_to_give_one() -> None:
    with pytest.raises(ConfigurationError) as caught:
        _trail(FakeTrailStore()).prune(None)
    assert caught.value.message == (
        "no retention age: pass --older-than-days N or set GATEKEEPER_AUDIT_RETENTION_DAYS"
    )


def test_prune_passes_the_age_in_days() -> None:
    store = FakeTrailStore()
    assert _trail(store).prune(30) == 7
    assert store.calls == [("prune", timedelta(days=30))]


def test_unknown_export_format_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInputError) as caught:
        _trail(FakeTrailStore()).export(object(), "xml")  # type: ignore[arg-type]
    assert caught.value.user_message() == "format: unknown export format 'xml': use jsonl, csv or opa"


def test_verify_uses_the_configured_key_and_reports_the_quarantine() -> None:
    store = FakeTrailStore(configured=Path("/keys/audit.pub"))
    check = _trail(store).verify()
    assert store.calls == [("verify", Path("/keys/audit.pub"))]
    assert (check.quarantined, check.quarantine_file) == (2, "/spool/decisions.quarantine.jsonl")
    explicit = _trail(store).verify(public_key=Path("/other.pub"))
    assert explicit.report.records == 3
    assert store.calls[-1] == ("verify", Path("/other.pub"))


def test_an_export_cannot_be_verified_without_a_key() -> None:
    with pytest.raises(ConfigurationError) as caught:
        _trail(FakeTrailStore()).export_public_key(None)
    assert caught.value.message == (
        "verifying an export needs the public key of its checkpoints: --public-key FILE"
    )
    assert _trail(FakeTrailStore(configured=Path("/k.pub"))).export_public_key(None) == Path("/k.pub")
