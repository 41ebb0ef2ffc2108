"""Policy lifecycle use case: submit (check), replay, activate, roll back, GitOps, replica sync,
over the ports of :mod:`gatekeeper.domain.ports.policy`.

* the active revision lives in the store (derived from its event chain); each replica hands it
  and the exceptions to its engine through the
  :class:`~gatekeeper.domain.ports.policy.PolicyReplica` port, so the ``policy_revision``
  recorded with decisions is the revision id;
* :meth:`PolicyLifecycle.sync` brings a replica up to date with the store (cheap when nothing
  changed: one ``max(seq)`` query); a background thread calls it, so an activation on one replica
  reaches all;
* :meth:`PolicyLifecycle.sync_from_path` is GitOps: a watched directory or bundle goes through
  the same checks and becomes active only when they pass;
* :class:`PolicyAuthoring` is the part that needs no store: load a candidate, run the
  activation checks, run the policy tests (``gatekeeper policy check`` / ``test``);
* exceptions are the use case :class:`~gatekeeper.usecases.exceptions.PolicyExceptions`
  (``lifecycle.exceptions``), which syncs the replica after each change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gatekeeper.domain.policy_exceptions import exceptions_document
from gatekeeper.domain.policy_lifecycle import (
    ACTIVATE,
    ROLLBACK,
    CheckReport,
    OpaTestRun,
    PolicyCandidate,
    PolicyEvent,
    RevisionRecord,
    StoredDecision,
    check_actor,
)
from gatekeeper.domain.ports.policy import (
    BundleBuilder,
    CandidateChecker,
    CandidateLoader,
    DecisionReplayer,
    PolicyReplica,
    PolicyStore,
    ReplayOutcome,
    TagResolver,
)
from gatekeeper.errors import ConfigurationError, GatekeeperError, PolicyEngineError
from gatekeeper.usecases.exceptions import PolicyExceptions

__all__ = ["BOOTSTRAP_ACTOR", "PolicyAuthoring", "PolicyBundle", "PolicyLifecycle"]

log = logging.getLogger(__name__)

BOOTSTRAP_ACTOR = "system:bootstrap"
_LIFECYCLE_ACTIONS = (ACTIVATE, ROLLBACK)


class PolicyAuthoring:
    """What a policy author runs without a store: load a candidate, check it, test it."""

    def __init__(self, *, checker: CandidateChecker, candidates: CandidateLoader) -> None:
        self.checker = checker
        self.candidates = candidates

    def load(self, directory: Path, tests: Path | None = None) -> PolicyCandidate:
        """``directory`` with ``tests`` beside it, or what :meth:`CandidateLoader.load_path`
        reads (a ``.tar.gz``, a directory with ``policies/``, a flat directory)."""
        if tests is not None:
            return self.candidates.from_directory(directory, tests)
        return self.candidates.load_path(directory)

    def from_tarball(self, data: bytes) -> PolicyCandidate:
        """An uploaded ``.tar.gz`` (``policies/`` + ``tests/``) or OPA bundle."""
        return self.candidates.from_tarball(data)

    def from_text(
        self, policies: Mapping[str, str], tests: Mapping[str, str] | None = None
    ) -> PolicyCandidate:
        """A JSON map of file path -> file text."""
        return self.candidates.from_text(policies, tests)

    def check(self, files: PolicyCandidate) -> CheckReport:
        """The activation checks, as a submission would run them."""
        return self.checker.check(files)

    def run_tests(self, roots: list[Path], *, cwd: Path) -> OpaTestRun:
        return self.checker.run_tests(roots, cwd=cwd)


@dataclass(frozen=True, slots=True)
class PolicyBundle:
    """A revision as the bundle an OPA sidecar loads; ``revision_id`` is its ETag."""

    revision_id: str
    content: bytes


class PolicyLifecycle:
    """Revisions, activation, replay, GitOps and the replica sync; ``exceptions`` for waivers."""

    def __init__(
        self,
        *,
        store: PolicyStore,
        checker: CandidateChecker,
        candidates: CandidateLoader,
        bundles: BundleBuilder,
        replayer: DecisionReplayer,
        replica: PolicyReplica | None = None,
        clock: Callable[[], datetime] | None = None,
        tag_resolver: TagResolver | None = None,
    ) -> None:
        self.store = store
        self.authoring = PolicyAuthoring(checker=checker, candidates=candidates)
        self._checker = checker
        self._candidates = candidates
        self._bundles = bundles
        self._replayer = replayer
        self._replica = replica
        self._now = clock or (lambda: datetime.now(UTC))
        self.exceptions = PolicyExceptions(
            store=store, chain=store, tag_resolver=tag_resolver, on_change=self.sync,
            clock=self._now,
        )
        self._lock = threading.RLock()
        self._seen_head: int | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._gitops_stamp: str | None = None

    # -- start, sync ----------------------------------------------------------------------

    def start(self, *, bootstrap: PolicyCandidate | None) -> None:
        """Migrate; record the shipped policies (``bootstrap``) as a revision and activate them
        if nothing is active yet; hand the active revision and the exceptions to the replica
        (without waiting for an engine, which may not run yet: call ``sync(force=True)`` once
        it does).

        Shipped policies that differ from the active revision (a new image after someone
        activated another revision) are stored as a candidate, not activated: the store's
        history wins over the image; a warning says how to activate them.
        """
        self.store.migrate()
        active = self.store.active_revision_id()
        if bootstrap is not None:
            # Shipped without their tests (an image without rego-tests/): still compiled and
            # format-checked; shipped with tests, the tests must pass.
            record, _ = self.submit(
                bootstrap, actor=BOOTSTRAP_ACTOR, source="bootstrap",
                require_tests=bool(bootstrap.tests),
            )
            if active is None and not record.accepted:
                raise ConfigurationError(
                    f"the shipped policies fail their checks: {record.report.summary()}"
                )
            if active is None:
                try:
                    self.store.activate(
                        record.revision_id, actor=BOOTSTRAP_ACTOR, reason="bootstrap"
                    )
                except GatekeeperError as exc:  # another replica bootstrapped first
                    log.info("bootstrap activation skipped: %s", exc.message)
            elif active != record.revision_id:
                log.warning(
                    "the shipped policies (%s, %s) are not the active revision %s; to use them: "
                    "POST /v1/policies/revisions/%s/activate",
                    record.revision_id, record.status, active, record.revision_id,
                )
        elif active is None:
            raise ConfigurationError("no active policy revision and nothing to bootstrap")
        try:
            self.sync(force=True, wait=False)
        except PolicyEngineError as exc:
            # An OPA sidecar that is not up yet cannot take the exceptions: the background
            # sync retries; until then nothing is waived (fail closed).
            log.warning("policy sync at start incomplete: %s", exc.message)

    def sync(self, *, force: bool = False, wait: bool = True) -> bool:
        """Hand the active revision and the exceptions to the replica if the store changed."""
        with self._lock:
            head = self.store.head()
            if not force and head == self._seen_head:
                return False
            active = self.store.active_revision_id()
            record = self.store.get_revision(active) if active else None
            document = exceptions_document(self.store.list_exceptions())
            if self._replica is not None:
                self._replica.publish(
                    record.files if record is not None else None, document, wait=wait
                )
            self._seen_head = head
            return True

    def start_background_sync(self, interval: float = 2.0) -> None:
        self._spawn("policy-sync", interval, lambda: self.sync())

    def watch_path(
        self, path: Path, interval: float = 5.0, *, tests_dir: Path | None = None
    ) -> None:
        """GitOps: poll ``path`` and submit + activate what changed (checks first)."""
        self._spawn(
            "policy-gitops", interval, lambda: self.sync_from_path(path, tests_dir=tests_dir)
        )

    def _spawn(self, name: str, interval: float, step: Callable[[], Any]) -> None:
        def loop() -> None:
            while not self._stopping.wait(interval):
                try:
                    step()
                except GatekeeperError as exc:
                    log.error("%s failed: %s", name, exc.render())

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._replica is not None:
            self._replica.close()

    # -- revisions ------------------------------------------------------------------------

    def submit(
        self, files: PolicyCandidate, *, actor: str, source: str = "api",
        description: str | None = None, require_tests: bool = True,
    ) -> tuple[RevisionRecord, bool]:
        """Check a candidate and store it (accepted or refused); ``(record, created)``."""
        check_actor(actor)
        try:
            existing = self.store.get_revision(files.revision_id)
        except GatekeeperError:
            existing = None
        if existing is not None and existing.files == files:
            return existing, False
        report = self._checker.check(files, require_tests=require_tests)
        if existing is not None:
            # Same policies, other tests: the revision (what OPA serves) is already stored. A
            # failing upload is answered as refused but not stored over the existing record.
            if report.passed:
                return existing, False
            return (
                RevisionRecord(
                    revision_id=files.revision_id, created_at=self._now(), created_by=actor,
                    source=source, status="refused", description=description, files=files,
                    report=report,
                ),
                False,
            )
        return self.store.save_revision(
            files, report, actor=actor, source=source, description=description
        )

    def activate(self, revision_id: str, *, actor: str, reason: str | None = None) -> PolicyEvent:
        event = self.store.activate(revision_id, actor=check_actor(actor), reason=reason)
        self.sync()
        return event

    def rollback(self, *, actor: str, reason: str | None = None) -> PolicyEvent:
        event = self.store.rollback(actor=check_actor(actor), reason=reason)
        self.sync()
        return event

    def active(self) -> RevisionRecord | None:
        active = self.store.active_revision_id()
        return self.store.get_revision(active) if active else None

    def active_revision_id(self) -> str | None:
        return self.store.active_revision_id()

    def revision(self, revision_id: str) -> RevisionRecord:
        """Raise :class:`~gatekeeper.errors.NotFoundError` for an unknown revision."""
        return self.store.get_revision(revision_id)

    def revisions(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first, without contents."""
        return self.store.list_revisions(limit)

    def overview(self) -> dict[str, Any]:
        """``GET /v1/policies``: the active revision with its files, revisions, activations."""
        active = self.active()
        return {
            "active_revision": (
                active.as_dict(active_revision=active.revision_id, contents=True)
                if active else None
            ),
            "revisions": self.store.list_revisions(),
            "events": [
                e.as_dict() for e in self.store.events(limit=50, actions=_LIFECYCLE_ACTIONS)
            ],
        }

    def events(self, limit: int = 100) -> dict[str, Any]:
        """Every lifecycle record, newest first, with the length of the verified chain."""
        return {
            "items": [e.as_dict() for e in self.store.events(limit=limit)],
            "chain_length": self.store.verify_chain(),
        }

    def history(self, limit: int = 50) -> dict[str, Any]:
        """Activations and rollbacks, oldest first, after verifying the chain; the active one."""
        self.store.verify_chain()
        events = [
            e.as_dict() for e in self.store.events(limit=limit, actions=_LIFECYCLE_ACTIONS)
        ]
        return {"events": list(reversed(events)),
                "active_revision": self.store.active_revision_id()}

    def bundle(self, revision_id: str) -> PolicyBundle:
        record = self.store.get_revision(revision_id)
        return PolicyBundle(record.revision_id, self._bundles.build(record.files))

    def active_bundle(self) -> PolicyBundle | None:
        """The bundle an OPA sidecar polls; None when nothing is active."""
        record = self.active()
        if record is None:
            return None
        return PolicyBundle(record.revision_id, self._bundles.build(record.files))

    # -- replay ---------------------------------------------------------------------------

    def replay(
        self, revision_id: str, *, since: datetime | None, until: datetime | None,
        running: Sequence[StoredDecision] | None = None,
    ) -> ReplayOutcome:
        return self.replay_files(
            self.store.get_revision(revision_id).files, since=since, until=until,
            running=running,
        )

    def replay_files(
        self, files: PolicyCandidate, *, since: datetime | None, until: datetime | None,
        running: Sequence[StoredDecision] | None = None,
    ) -> ReplayOutcome:
        """The decisions recorded in ``[since, until)`` (default: the last 7 days) against
        ``files``, with today's exceptions."""
        now = self._now()
        return self._replayer.replay(
            files,
            since=since if since is not None else now - timedelta(days=7),
            until=until if until is not None else now,
            exceptions=exceptions_document(self.store.list_exceptions()),
            running=running,
        )

    def now(self) -> datetime:
        return self._now()

    # -- GitOps ---------------------------------------------------------------------------

    def sync_from_path(
        self, path: Path, *, tests_dir: Path | None = None
    ) -> RevisionRecord | None:
        """Submit what ``path`` holds if it changed; activate it when its checks pass.

        Activated: content this watcher saw change, or content the store sees for the first
        time (a change made while the gatekeeper was down). Not activated: the content it finds
        at its first look when the store already knows it, so a restart never undoes an
        activation or rollback made through the API. A refused candidate leaves the active
        revision alone and is logged (and stored with its report, for
        ``GET /v1/policies/revisions/{id}``).
        """
        files = self._candidates.load_path(path, tests_dir=tests_dir)
        stamp = self._candidates.stamp(files)
        if stamp == self._gitops_stamp:
            return None
        first_look = self._gitops_stamp is None
        actor = f"gitops:{path}"
        record, created = self.submit(files, actor=actor, source="gitops")
        self._gitops_stamp = stamp
        if not record.accepted:
            log.error(
                "GitOps candidate %s from %s refused: %s",
                record.revision_id, path, record.report.summary(),
            )
            return record
        if first_look and not created:
            return record
        if self.store.active_revision_id() != record.revision_id:
            self.activate(record.revision_id, actor=actor, reason=f"GitOps change at {path}")
        return record
