"""Exceptions use case: create (pending), approve (a second person), revoke, read and export
time-boxed waivers, over :class:`~gatekeeper.domain.ports.policy.PolicyExceptionStore`.

``POST /v1/exceptions`` and ``gatekeeper policy exceptions ...`` both come here. Every change
is recorded on the policy event chain by the store and then handed to the replica's engine
(``on_change``: the lifecycle's sync); Rego alone decides whether an exception applies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from gatekeeper.domain.policy_exceptions import (
    ExceptionRequest,
    PolicyException,
    format_instant,
    normalise_subject,
)
from gatekeeper.domain.policy_lifecycle import (
    EXCEPTION_APPROVE,
    EXCEPTION_CREATE,
    EXCEPTION_REVOKE,
    PolicyConflictError,
    check_actor,
)
from gatekeeper.domain.ports.policy import (
    PolicyActivationChain,
    PolicyExceptionStore,
    TagResolver,
)
from gatekeeper.errors import GatekeeperError

__all__ = ["PolicyExceptions"]

_EXCEPTION_ACTIONS = (EXCEPTION_CREATE, EXCEPTION_APPROVE, EXCEPTION_REVOKE)


def _same_person(creator: str, approver: str) -> bool:
    return normalise_subject(creator) == normalise_subject(approver)


class PolicyExceptions:
    def __init__(
        self,
        *,
        store: PolicyExceptionStore,
        chain: PolicyActivationChain,
        tag_resolver: TagResolver | None,
        on_change: Callable[[], object],
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._chain = chain
        #: ``registry/repository:tag`` -> ``sha256:...`` (the registry), for approvals
        self.tag_resolver = tag_resolver
        self._on_change = on_change
        self._now = clock or (lambda: datetime.now(UTC))

    def now(self) -> datetime:
        return self._now()

    def create(self, body: Mapping[str, Any], *, actor: str) -> PolicyException:
        """Parse and store a *pending* exception: it waives nothing until approved."""
        request = ExceptionRequest.parse(body, now=self._now())
        exception = self._store.create_exception(request, actor=check_actor(actor))
        self._on_change()
        return exception

    def approve(self, exception_id: str, *, actor: str) -> PolicyException:
        """A second principal approves a pending exception; its tags are pinned to digests.

        The caller (the route) has already refused unauthenticated principals.
        """
        actor = check_actor(actor)
        pending = self._store.get_exception(exception_id)
        if _same_person(pending.created_by, actor):
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
        exception = self._store.approve_exception(
            exception_id, actor=actor, digests=digests, same_person=_same_person
        )
        self._on_change()
        return exception

    def revoke(
        self, exception_id: str, *, actor: str, reason: str | None = None
    ) -> PolicyException:
        exception = self._store.revoke_exception(
            exception_id, actor=check_actor(actor), reason=reason
        )
        self._on_change()
        return exception

    def get(self, exception_id: str) -> PolicyException:
        """Raise :class:`~gatekeeper.errors.NotFoundError` for an unknown id."""
        return self._store.get_exception(exception_id)

    def documents(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every exception with its status now, oldest first; only ``status`` ones if given."""
        now = self._now()
        items = [e.as_dict(now) for e in self._store.list_exceptions()]
        if status is not None:
            items = [item for item in items if item["status"] == status]
        return items

    def export(self) -> dict[str, Any]:
        """Every exception and its create/approve/revoke records, oldest first."""
        now = self._now()
        events = self._chain.events(limit=1000, actions=_EXCEPTION_ACTIONS)
        return {
            "exported_at": format_instant(now),
            "exceptions": [e.as_dict(now) for e in self._store.list_exceptions()],
            "events": [e.as_dict() for e in reversed(events)],
        }
