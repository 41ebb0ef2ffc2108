"""The policy lifecycle: submit (check), replay, activate, roll back, exceptions, GitOps.

:class:`PolicyLifecycle` ties the store, the candidate checker and the running engine together:

* the active revision lives in the store (derived from its event chain); each replica
  materialises it into its **active directory**, the directory its embedded OPA watches, so the
  ``policy_revision`` recorded with decisions is the revision id (both hash the same files);
* exceptions are published as ``data.gatekeeper.exceptions`` (a watched data directory beside
  the active one, or an OPA sidecar's Data API);
* :meth:`sync` brings a replica up to date with the store (cheap when nothing changed: one
  ``max(seq)`` query); a background thread calls it, so an activation on one replica reaches all;
* :meth:`sync_from_path` is GitOps: a watched directory or bundle goes through the same checks
  and becomes active only when they pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from gatekeeper.errors import ConfigurationError, GatekeeperError, PolicyEngineError
from gatekeeper.policy.bundle import PolicyFiles
from gatekeeper.policy.candidates import candidate_stamp, load_candidate_path, replace_tree
from gatekeeper.policy.checks import OpaCandidateChecker
from gatekeeper.policy.exceptions import (
    ExceptionPublisher,
    ExceptionRequest,
    PolicyException,
    exceptions_document,
    normalise_subject,
)
from gatekeeper.policy.replay import (
    ReplayReport,
    SqlDecisionHistory,
    StoredDecision,
    replay_decisions,
)
from gatekeeper.policy.sidecar import opa_serves
from gatekeeper.policy.store import (
    PolicyConflictError,
    PolicyEvent,
    RevisionRecord,
    SqlPolicyStore,
    check_actor,
)

__all__ = ["BOOTSTRAP_ACTOR", "PolicyLifecycle"]

log = logging.getLogger(__name__)

_LOAD_TIMEOUT = 10.0
BOOTSTRAP_ACTOR = "system:bootstrap"


class PolicyLifecycle:
    """Orchestrates revisions, activation and exceptions for one gatekeeper replica."""

    def __init__(
        self,
        *,
        store: SqlPolicyStore,
        checker: OpaCandidateChecker,
        opa_binary: str,
        active_dir: Path | None,
        publisher: ExceptionPublisher | None,
        history: SqlDecisionHistory,
        opa_client: httpx.Client | None = None,
        clock: Callable[[], datetime] | None = None,
        tag_resolver: Callable[[str], str] | None = None,
        on_revision: Callable[[str | None], None] | None = None,
    ) -> None:
        """``on_revision``: told ``None`` before :meth:`sync` rewrites the active directory
        (the engine then hashes the directory, as it would without a lifecycle), and the
        revision id once it has materialised it and, when it waits, seen the engine serve
        it: between two changes the engine knows its revision without a directory walk."""
        self.store = store
        self._on_revision = on_revision
        #: ``registry/repository:tag`` -> ``sha256:...`` (the registry), for approvals
        self.tag_resolver = tag_resolver
        self._checker = checker
        self._opa_binary = opa_binary
        self._active_dir = active_dir
        self._publisher = publisher
        self._history = history
        self._opa_client = opa_client
        self._now = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._seen_head: int | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._gitops_stamp: str | None = None

    # -- start, sync ----------------------------------------------------------------------

    @staticmethod
    def seed_active_dir(active_dir: Path, policy_dir: Path) -> None:
        """Before the embedded OPA exists: give it the shipped policies if the dir is empty
        (OPA needs a directory with Rego to start; :meth:`start` then syncs from the store)."""
        if active_dir.is_dir() and any(active_dir.rglob("*.rego")):
            return
        PolicyFiles.from_directory(policy_dir).write_policies(active_dir)

    def start(self, *, bootstrap: PolicyFiles | None) -> None:
        """Migrate; record the shipped policies (``bootstrap``) as a revision and activate them
        if nothing is active yet; materialise the active revision and the exceptions (without
        waiting for an OPA, which may not run yet: call ``sync(force=True)`` once it does).

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
        """Materialise the active revision and publish exceptions if the store changed."""
        with self._lock:
            head = self.store.head()
            if not force and head == self._seen_head:
                return False
            active = self.store.active_revision_id()
            record = self.store.get_revision(active) if active else None
            document = exceptions_document(self.store.list_exceptions())
            if record is not None and self._active_dir is not None:
                if self._on_revision is not None:
                    self._on_revision(None)  # changing: OPA reloads on its own time
                replace_tree(self._active_dir, record.files)
            if self._publisher is not None:
                self._publisher.publish(document)
            if wait and record is not None and self._opa_client is not None:
                self._wait_loaded(record.files, document)
            if record is not None and self._active_dir is not None and self._on_revision:
                self._on_revision(record.revision_id)
            self._seen_head = head
            return True

    def _wait_loaded(self, files: PolicyFiles, document: list[dict[str, Any]]) -> None:
        assert self._opa_client is not None
        deadline = time.monotonic() + _LOAD_TIMEOUT
        while time.monotonic() < deadline:
            if opa_serves(self._opa_client, files, document):
                return
            time.sleep(0.05)
        raise PolicyEngineError(
            f"the policy engine did not load revision {files.revision_id} "
            f"within {_LOAD_TIMEOUT:.0f}s"
        )

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
        if self._opa_client is not None:
            self._opa_client.close()

    # -- revisions ------------------------------------------------------------------------

    def submit(
        self, files: PolicyFiles, *, actor: str, source: str = "api",
        description: str | None = None, require_tests: bool = True,
    ) -> tuple[RevisionRecord, bool]:
        """Check a candidate with the real ``opa`` and store it (accepted or refused)."""
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

    def replay(
        self, revision_id: str, *, since: datetime | None, until: datetime | None,
        running: Sequence[StoredDecision] | None = None,
    ) -> ReplayReport:
        return self.replay_files(
            self.store.get_revision(revision_id).files, since=since, until=until,
            running=running,
        )

    def replay_files(
        self, files: PolicyFiles, *, since: datetime | None, until: datetime | None,
        running: Sequence[StoredDecision] | None = None,
    ) -> ReplayReport:
        now = self._now()
        since = since if since is not None else now - timedelta(days=7)
        until = until if until is not None else now
        return replay_decisions(
            files,
            self._history.decisions(since, until),
            opa_binary=self._opa_binary,
            exceptions=exceptions_document(self.store.list_exceptions()),
            since=since,
            until=until,
            running=running,
        )

    # -- exceptions -----------------------------------------------------------------------

    def create_exception(self, body: dict[str, Any], *, actor: str) -> PolicyException:
        request = ExceptionRequest.parse(body, now=self._now())
        exception = self.store.create_exception(request, actor=check_actor(actor))
        self.sync()
        return exception

    def approve_exception(self, exception_id: str, *, actor: str) -> PolicyException:
        """A second principal approves a pending exception; its tags are pinned to digests.

        The caller (the route) has already refused unauthenticated principals.
        """
        actor = check_actor(actor)

        def same_person(creator: str, approver: str) -> bool:
            return normalise_subject(creator) == normalise_subject(approver)

        pending = self.store.get_exception(exception_id)
        if same_person(pending.created_by, actor):
            raise PolicyConflictError(
                f"exception {exception_id} was created by {pending.created_by!r}: a second "
                "person must approve it (subjects are compared after Unicode NFKC, case "
                "folding and removal of invisible characters)"
            )
        digests: dict[str, str] = {}
        for tag in pending.tags_to_resolve():
            if self.tag_resolver is None:
                raise PolicyConflictError(
                    f"exception {exception_id} names the tag {tag}, and this gatekeeper has no "
                    "registry to resolve it to a digest: name the digest instead"
                )
            try:
                digests[tag] = self.tag_resolver(tag)
            except GatekeeperError as exc:
                raise PolicyConflictError(
                    f"exception {exception_id}: cannot resolve {tag} to a digest: {exc.message}"
                ) from exc
        exception = self.store.approve_exception(
            exception_id, actor=actor, digests=digests, same_person=same_person
        )
        self.sync()
        return exception

    def revoke_exception(
        self, exception_id: str, *, actor: str, reason: str | None = None
    ) -> PolicyException:
        exception = self.store.revoke_exception(
            exception_id, actor=check_actor(actor), reason=reason
        )
        self.sync()
        return exception

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
        files = (
            PolicyFiles.from_directory(path, tests_dir)
            if tests_dir is not None and tests_dir.is_dir()
            else load_candidate_path(path)
        )
        stamp = candidate_stamp(files)
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
