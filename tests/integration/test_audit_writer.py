"""The single audit writer on real SQLite and PostgreSQL: concurrent callers (threads and
coroutines) share commits, every caller waits for its own durable record, the chain stays
gap-free and verifiable, and a failing batch fails every one of its members."""

# ruff: noqa: F811 - the store fixtures (SQLite and PostgreSQL) are test_audit_trail's own

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from gatekeeper.audit import AuditSettings, CheckpointSigner, SqlAuditLog, verify_database
from gatekeeper.audit.schema import decisions
from gatekeeper.domain import Decision
from gatekeeper.errors import StorageError
from gatekeeper.metrics import Metrics
from tests.integration.test_audit_trail import database_url, signer  # noqa: F401
from tests.unit.audit.factory import make_decision

OpenLog = Callable[..., SqlAuditLog]
"""The ``open_log`` fixture: a migrated trail on the test database, with writer settings."""

CONCURRENCY = 8
PER_CALLER = 12


def _batches(metrics: Metrics) -> tuple[float, float]:
    """(commits, decisions) the writer reported through its batch histogram."""
    registry = metrics.registry
    count = registry.get_sample_value("forge_gatekeeper_audit_batch_decisions_count") or 0.0
    total = registry.get_sample_value("forge_gatekeeper_audit_batch_decisions_sum") or 0.0
    return count, total


@pytest.fixture
def open_log(
    database_url: str, signer: CheckpointSigner
) -> Iterator[OpenLog]:
    from gatekeeper.audit import create_database_engine

    logs: list[SqlAuditLog] = []

    def _open(**settings: Any) -> SqlAuditLog:
        metrics = Metrics()
        log = SqlAuditLog(
            create_database_engine(database_url), signer=signer, metrics=metrics,
            settings=AuditSettings(checkpoint_every=25, checkpoint_interval_seconds=3600,
                                   **settings),
        )
        log.migrate()
        logs.append(log)
        return log

    yield _open
    for log in logs:
        log.close()


def _stored_seqs(log: SqlAuditLog) -> list[int]:
    with log.engine.connect() as connection:
        return list(connection.execute(sa.select(decisions.c.seq).order_by(decisions.c.seq))
                    .scalars())


def _metrics(log: SqlAuditLog) -> Metrics:
    metrics = log._metrics  # the instance handed to the constructor above
    assert metrics is not None
    return metrics


def _run_threads(count: int, target: Callable[[int], None]) -> None:
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(number: int) -> None:
        start.wait()
        try:
            target(number)
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []


def test_concurrent_threads_share_commits_and_the_chain_stays_gap_free(
    open_log: OpenLog, signer: CheckpointSigner
) -> None:
    log = open_log(batch_wait_seconds=0.005)
    made = [[make_decision(index=c * 1000 + i) for i in range(1, PER_CALLER + 1)]
            for c in range(CONCURRENCY)]

    def caller(number: int) -> None:
        for decision in made[number]:
            log.record(decision)
            # answered only once durable: a fresh connection reads it back
            assert log.get(decision.decision_id).decision_id == decision.decision_id

    _run_threads(CONCURRENCY, caller)
    total = CONCURRENCY * PER_CALLER
    commits, written = _batches(_metrics(log))
    assert written == total
    assert commits < total
    assert _stored_seqs(log) == list(range(1, total + 1))
    report = verify_database(log.engine, signer.public_key)
    assert (report.records, report.first_seq, report.last_seq) == (total, 1, total)


def test_concurrent_coroutines_await_durability_and_share_commits(
    open_log: OpenLog, signer: CheckpointSigner
) -> None:
    log = open_log(batch_wait_seconds=0.005)
    total = CONCURRENCY * PER_CALLER
    made = [make_decision(index=5000 + i) for i in range(1, total + 1)]

    async def main() -> list[int]:
        loop_thread = threading.get_ident()
        seen: list[int] = []

        async def one(decision: Decision) -> None:
            await log.record_async(decision)
            seen.append(threading.get_ident())  # resumed on the event loop's own thread
            assert log.get(decision.decision_id).decision_id == decision.decision_id

        await asyncio.gather(*(one(decision) for decision in made))
        assert set(seen) == {loop_thread}
        return seen

    assert len(asyncio.run(main())) == total
    commits, written = _batches(_metrics(log))
    assert written == total
    assert commits < total / 2
    assert _stored_seqs(log) == list(range(1, total + 1))
    assert verify_database(log.engine, signer.public_key).records == total


def test_threads_and_coroutines_write_one_chain_together(
    open_log: OpenLog, signer: CheckpointSigner
) -> None:
    log = open_log()  # the default bounded wait
    async_made = [make_decision(index=7000 + i) for i in range(1, 41)]
    thread_made = [[make_decision(index=8000 + c * 100 + i) for i in range(1, 11)]
                   for c in range(4)]

    async def coroutines() -> None:
        await asyncio.gather(*(log.record_async(decision) for decision in async_made))

    def caller(number: int) -> None:
        if number == 4:
            asyncio.run(coroutines())
            return
        for decision in thread_made[number]:
            log.record(decision)

    _run_threads(5, caller)
    assert _stored_seqs(log) == list(range(1, 81))
    assert verify_database(log.engine, signer.public_key).records == 80


def test_without_a_wait_every_decision_is_still_recorded(
    open_log: OpenLog, signer: CheckpointSigner
) -> None:
    log = open_log(batch_wait_seconds=0.0)
    made = [[make_decision(index=9000 + c * 100 + i) for i in range(1, 6)] for c in range(4)]

    def caller(number: int) -> None:
        for decision in made[number]:
            log.record(decision)

    _run_threads(4, caller)
    assert _stored_seqs(log) == list(range(1, 21))
    assert verify_database(log.engine, signer.public_key).records == 20


def test_a_failing_batch_fails_every_member_and_drops_none(
    open_log: OpenLog, signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(batch_wait_seconds=0.05)  # long enough for all callers to share batches
    log.record(make_decision(index=1))

    def refused(*_args: Any, **_kwargs: Any) -> None:
        raise sa.exc.ProgrammingError("INSERT", {}, Exception("permission denied"))

    monkeypatch.setattr(log, "_append", refused)
    made = [make_decision(index=100 + n) for n in range(CONCURRENCY)]
    async_made = [make_decision(index=200 + n) for n in range(CONCURRENCY)]
    failures: list[str] = []
    lock = threading.Lock()

    def caller(number: int) -> None:
        if number == CONCURRENCY:
            async def both() -> list[BaseException | None]:
                return await asyncio.gather(
                    *(log.record_async(decision) for decision in async_made),
                    return_exceptions=True,
                )

            for outcome in asyncio.run(both()):
                assert isinstance(outcome, StorageError)
                with lock:
                    failures.append(outcome.message)
            return
        with pytest.raises(StorageError) as caught:
            log.record(made[number])
        with lock:
            failures.append(caught.value.message)

    _run_threads(CONCURRENCY + 1, caller)
    assert len(failures) == 2 * CONCURRENCY
    assert all(message.startswith("cannot record decision ") for message in failures)
    assert all(message.endswith(": ProgrammingError") for message in failures)
    monkeypatch.undo()
    # nothing of the failed batches reached the chain, and the writer keeps working
    assert _stored_seqs(log) == [1]
    log.record(make_decision(index=2))
    assert _stored_seqs(log) == [1, 2]
    assert verify_database(log.engine, signer.public_key).records == 2


def test_a_decision_that_cannot_be_stored_fails_alone_in_its_batch(
    open_log: OpenLog, signer: CheckpointSigner
) -> None:
    log = open_log(batch_wait_seconds=0.05)
    good = [make_decision(index=300 + n) for n in range(4)]
    bad = dataclasses.replace(make_decision(index=399), policy_input={"score": float("nan")})

    async def main() -> list[BaseException | None]:
        return await asyncio.gather(
            *(log.record_async(decision) for decision in [*good[:2], bad, *good[2:]]),
            return_exceptions=True,
        )

    outcomes = asyncio.run(main())
    assert [outcome is None for outcome in outcomes] == [True, True, False, True, True]
    refused = outcomes[2]
    assert isinstance(refused, StorageError)
    assert refused.message.startswith(f"cannot record decision {bad.decision_id}: document "
                                      "cannot be canonicalised (RFC 8785)")
    with pytest.raises(StorageError) as caught:  # the thread path says the same
        log.record(bad)
    assert caught.value.message == refused.message
    assert _stored_seqs(log) == [1, 2, 3, 4]
    assert verify_database(log.engine, signer.public_key).records == 4


def test_a_closed_trail_commits_what_was_queued_and_reopens_on_the_next_record(
    open_log: OpenLog
) -> None:
    log = open_log(batch_wait_seconds=0.05)
    made = [make_decision(index=400 + n) for n in range(3)]
    _run_threads(3, lambda number: log.record(made[number]))
    log.close()
    assert _stored_seqs(log) == [1, 2, 3]
    log.record(make_decision(index=404))
    assert _stored_seqs(log) == [1, 2, 3, 4]
