"""``OpaPolicyEngine``: the policy port on a real OPA server's REST API.

The aggregation of rule packages happens in Rego (``policies/main.rego``, package
``gatekeeper.main``); this adapter asks for ``data.gatekeeper.main.decision`` and parses the
answer strictly. Anything unexpected is a :class:`PolicyEngineError`, which the service turns
into a deny: the gate fails closed.

The queries (the prefilter and the decision) go through a lean blocking
:class:`~gatekeeper.policy.opa_blocking.OpaConnectionPool` when the engine is given one
(``POST /v1/evaluations``, pipelines, the CLI, the cold admission path in a worker thread; the
``httpx.Client`` otherwise), and, when the engine is given an ``async_client`` factory, through
an :class:`~gatekeeper.policy.opa_http.AsyncOpaConnectionPool` used by
:meth:`OpaPolicyEngine.evaluate_async` on the event loop (the warm admission path: no
worker-thread hop). Both pools keep their connections alive (OPA's unix socket, or the
sidecar's loopback port) and share one response framing; answers are decoded with orjson. The
``httpx.Client`` serves everything else: evidence data, health, the remote revision.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from gatekeeper.domain import PolicyResult, Violation
from gatekeeper.domain.evidence_documents import expand_evidence
from gatekeeper.errors import PolicyEngineError
from gatekeeper.metrics import Metrics
from gatekeeper.policy.evidence_data import OpaEvidenceData
from gatekeeper.policy.opa_blocking import OpaConnectionPool
from gatekeeper.policy.opa_http import AsyncOpaConnectionPool, OpaHttpError
from gatekeeper.policy.revision import hash_policy_files

__all__ = ["DECISION_PATH", "PREFILTER_PATH", "OpaPolicyEngine", "parse_decision"]

DECISION_PATH = "/v1/data/gatekeeper/main/decision"
#: Network-free violations, asked before evidence is gathered (absent in older policy sets).
PREFILTER_PATH = "/v1/data/gatekeeper/main/prefilter"
_REMOTE_REVISION_TTL = 5.0

log = logging.getLogger(__name__)


def _parse_finding(raw: Any, kind: str) -> tuple[Violation, bool]:
    """One ``{"policy": <package>, "item": ...}`` entry of the aggregated decision.

    The aggregator (``main.rego``) always names the package, so an entry without one means the
    aggregator itself is broken: :class:`PolicyEngineError` (the gate fails closed). An item of
    the wrong shape is the *package's* error: it becomes a violation of that package saying so,
    so the decision still denies, the other packages' findings still show, and nobody is told
    that the engine is down when one rule is wrong.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("policy"), str):
        raise PolicyEngineError(f"policy returned a malformed {kind} entry: {raw!r:.200}")
    policy, item = raw["policy"], raw.get("item")
    if isinstance(item, str):
        return Violation(policy=policy, message=item), False
    if isinstance(item, dict) and isinstance(item.get("message"), str):
        image = item.get("image")
        if image is None or isinstance(image, str):
            return Violation(policy=policy, message=item["message"], image=image), False
    image = item.get("image") if isinstance(item, dict) else None
    return Violation(
        policy=policy,
        message=(
            f"rule package gatekeeper.rules.{policy} is broken: its {kind} returned "
            f'{_shape(item)}, not a string or {{"image": ..., "message": ...}}; '
            "the decision denies until the package is fixed"
        ),
        image=image if isinstance(image, str) else None,
    ), True


def _shape(item: Any) -> str:
    """A short, log-safe description of a malformed item (its keys, not its values)."""
    if isinstance(item, dict):
        keys = ", ".join(sorted(str(k) for k in item)[:8])
        return f"an object with keys [{keys}]"
    return f"a value of type {type(item).__name__}" if item is not None else "null"


def _sorted(findings: list[Violation]) -> tuple[Violation, ...]:
    return tuple(sorted(set(findings), key=lambda v: (v.image or "", v.policy, v.message)))


def parse_decision(body: Any, revision: str) -> PolicyResult:
    """Parse OPA's answer for ``data.gatekeeper.main.decision`` (fails closed on any surprise)."""
    if not isinstance(body, dict) or "result" not in body:
        raise PolicyEngineError(
            "policy bundle defines no data.gatekeeper.main.decision "
            "(is policies/main.rego missing?)"
        )
    result = body["result"]
    if not isinstance(result, dict):
        raise PolicyEngineError("data.gatekeeper.main.decision is not an object")
    packages = result.get("packages")
    if not isinstance(packages, list) or not packages:
        raise PolicyEngineError(
            "no rule packages loaded: define at least one package gatekeeper.rules.<name>"
        )
    violations = [_parse_finding(raw, "deny")[0] for raw in result.get("deny", [])]
    warnings: list[Violation] = []
    for raw in result.get("warn", []):
        finding, malformed = _parse_finding(raw, "warn")
        # a malformed warning is the package's error too: it denies, as a violation
        (violations if malformed else warnings).append(finding)
    exceptions = result.get("exceptions", [])
    if not isinstance(exceptions, list) or not all(isinstance(e, dict) for e in exceptions):
        raise PolicyEngineError("data.gatekeeper.main.decision.exceptions is not a list of objects")
    ordered = sorted(exceptions, key=lambda e: json.dumps(e, sort_keys=True))
    return PolicyResult(_sorted(violations), _sorted(warnings), revision, tuple(ordered))


def _missing_evidence(body: Any) -> set[str] | None:
    """``decision.missing_evidence`` as a set; None when the policy set does not define it."""
    result = body.get("result") if isinstance(body, dict) else None
    if not isinstance(result, dict) or "missing_evidence" not in result:
        return None
    missing = result["missing_evidence"]
    if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
        raise PolicyEngineError("data.gatekeeper.main.decision.missing_evidence is not a list "
                                "of hashes")
    return set(missing)


class OpaPolicyEngine:
    """Policy engine backed by an OPA server (a sidecar, or the embedded child process)."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        describe: str,
        metrics: Metrics | None = None,
        local_revision: Callable[[], str] | None = None,
        async_client: Callable[[], AsyncOpaConnectionPool] | None = None,
        query_pool: OpaConnectionPool | None = None,
    ) -> None:
        """``local_revision``: how the revision is known without asking OPA (it must not block:
        :meth:`evaluate_async` calls it on the event loop). ``async_client``: a factory of the
        client :meth:`evaluate_async` uses, one per event loop (pooled connections belong to the
        loop that opened them). ``query_pool``: the blocking client of the prefilter and
        decision queries (same server as ``client``); None: ``client`` asks them."""
        self._client = client
        self._pool = query_pool
        self._describe = describe
        self._metrics = metrics
        self._local_revision = local_revision
        self._remote_revision: tuple[float, str] | None = None
        self._lock = threading.Lock()
        #: What this engine loaded into OPA's data.gatekeeper.evidence.
        self.evidence_data = OpaEvidenceData(client, describe=describe)
        self._async_factory = async_client
        self._async: tuple[asyncio.AbstractEventLoop, AsyncOpaConnectionPool] | None = None

    @classmethod
    def for_url(
        cls,
        url: str,
        *,
        timeout: float = 2.0,
        metrics: Metrics | None = None,
        local_revision: Callable[[], str] | None = None,
    ) -> OpaPolicyEngine:
        client = httpx.Client(base_url=url, timeout=timeout)
        return cls(client, describe=f"OPA at {url}", metrics=metrics, local_revision=local_revision,
                   query_pool=_pool_for_url(url, timeout))

    def _post(self, path: str, payload: Mapping[str, Any]) -> Any:
        body = _encode(payload)
        if self._pool is None:
            return self._post_httpx(path, body)
        try:
            response = self._pool.post(path, body)
        except TimeoutError as exc:
            raise PolicyEngineError(f"{self._describe} timed out") from exc
        except OpaHttpError as exc:
            raise PolicyEngineError(f"{self._describe} unreachable: {exc}") from exc
        return self._parse(response.status, response.body)

    def _post_httpx(self, path: str, body: bytes) -> Any:
        try:
            response = self._client.post(path, content=body, headers=_JSON_HEADERS)
        except httpx.TimeoutException as exc:
            raise PolicyEngineError(f"{self._describe} timed out") from exc
        except httpx.HTTPError as exc:
            raise PolicyEngineError(f"{self._describe} unreachable: {exc}") from exc
        return self._parse(response.status_code, response.content)

    def _parse(self, status: int, content: bytes) -> Any:
        if status != 200:
            text = content[:300].decode("utf-8", errors="replace")
            raise PolicyEngineError(f"{self._describe} answered HTTP {status}: {text}")
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise PolicyEngineError(f"{self._describe} answered invalid JSON") from exc

    @property
    def evaluates_async(self) -> bool:
        """True when :meth:`evaluate_async` has a client of its own (else it is not offered)."""
        return self._async_factory is not None

    def _async_client(self) -> AsyncOpaConnectionPool:
        assert self._async_factory is not None, "no async client configured"
        loop = asyncio.get_running_loop()
        current = self._async
        if current is None or current[0] is not loop:
            # A new loop (a test client's, or after a restart of the server): its own client.
            # The previous one is dropped with its loop (its connections cannot be reused).
            current = (loop, self._async_factory())
            self._async = current
        return current[1]

    async def evaluate_async(
        self, policy_input: Mapping[str, Any], evidence: Mapping[str, Any] | None = None
    ) -> PolicyResult:
        """:meth:`evaluate` on the running event loop (one request, kept-alive connection).

        Evidence by reference is loaded (and reloaded when OPA lost it) by the blocking
        client on a worker thread: that path is rare (a large SBOM first seen) and must
        never block the loop."""
        if evidence:
            return await asyncio.to_thread(self.evaluate, policy_input, evidence)
        started = time.perf_counter()
        outcome = "error"
        try:
            revision = self.revision()
            try:
                response = await self._async_client().post(
                    DECISION_PATH, _encode({"input": policy_input}))
            except TimeoutError as exc:
                raise PolicyEngineError(f"{self._describe} timed out") from exc
            except OpaHttpError as exc:
                raise PolicyEngineError(f"{self._describe} unreachable: {exc}") from exc
            result = parse_decision(self._parse(response.status, response.body), revision)
            outcome = "ok"
            return result
        finally:
            if self._metrics is not None:
                self._metrics.opa_evaluations.labels(outcome).inc()
                self._metrics.opa_latency.observe(time.perf_counter() - started)

    def evaluate(
        self, policy_input: Mapping[str, Any], evidence: Mapping[str, Any] | None = None
    ) -> PolicyResult:
        started = time.perf_counter()
        outcome = "error"
        try:
            revision = self.revision()
            body = self._decide(policy_input, evidence or {})
            result = parse_decision(body, revision)
            outcome = "ok"
            return result
        finally:
            if self._metrics is not None:
                self._metrics.opa_evaluations.labels(outcome).inc()
                self._metrics.opa_latency.observe(time.perf_counter() - started)

    def _decide(self, policy_input: Mapping[str, Any], evidence: Mapping[str, Any]) -> Any:
        """Ask for the decision with the referenced evidence loaded."""
        if not evidence:
            return self._post(DECISION_PATH, {"input": policy_input})
        self.evidence_data.ensure(evidence)
        body = self._post(DECISION_PATH, {"input": policy_input})
        missing = _missing_evidence(body)
        if missing is None:
            # A policy set older than evidence by reference would not see the components:
            # it gets them inline (slower, but the same decision).
            log.warning("the loaded policy has no decision.missing_evidence: evidence is sent "
                        "inline (update policies/main.rego)")
            return self._post(DECISION_PATH, {"input": expand_evidence(policy_input, evidence)})
        if not missing:
            return body
        unknown = sorted(missing - evidence.keys())
        if unknown:
            raise PolicyEngineError(
                f"{self._describe} reports evidence documents the input does not carry: "
                f"{', '.join(unknown)}"
            )
        log.warning("%s lost %d evidence document(s) (restarted?): loading them again",
                    self._describe, len(missing))
        self.evidence_data.load(evidence, sorted(missing))
        body = self._post(DECISION_PATH, {"input": policy_input})
        still = _missing_evidence(body)
        if still:
            raise PolicyEngineError(
                f"{self._describe} still lacks evidence document(s) {', '.join(sorted(still))} "
                "after loading them: the decision cannot see those components"
            )
        return body

    def prefilter(self, policy_input: Mapping[str, Any]) -> tuple[Violation, ...]:
        """``data.gatekeeper.main.prefilter`` for an evidence-free input; () when undefined."""
        body = self._post(PREFILTER_PATH, {"input": policy_input})
        if not isinstance(body, dict) or "result" not in body:
            return ()  # a policy set without a prefilter: every image's evidence is gathered
        found = body["result"]
        if not isinstance(found, list):
            raise PolicyEngineError("data.gatekeeper.main.prefilter is not a list")
        return _sorted([_parse_finding(raw, "prefilter")[0] for raw in found])

    def revision(self) -> str:
        if self._local_revision is not None:
            return self._local_revision()
        with self._lock:
            now = time.monotonic()
            if self._remote_revision and now - self._remote_revision[0] < _REMOTE_REVISION_TTL:
                return self._remote_revision[1]
            revision = self._fetch_remote_revision()
            self._remote_revision = (now, revision)
            return revision

    def _fetch_remote_revision(self) -> str:
        """Hash what the remote OPA really loaded: its modules and ``data.gatekeeper.config``."""
        try:
            policies = self._client.get("/v1/policies")
            config = self._client.get("/v1/data/gatekeeper/config")
            policies.raise_for_status()
            config.raise_for_status()
            modules = policies.json().get("result", [])
            files = {m["id"]: m.get("raw", "").encode() for m in modules}
            files["data:gatekeeper.config"] = json.dumps(
                config.json().get("result"), sort_keys=True
            ).encode()
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise PolicyEngineError(
                f"{self._describe}: cannot read the loaded policies: {exc}"
            ) from exc
        return hash_policy_files(files)

    def check_health(self) -> None:
        try:
            response = self._client.get("/health")
        except httpx.HTTPError as exc:
            raise PolicyEngineError(f"{self._describe} unreachable: {exc}") from exc
        if response.status_code != 200:
            raise PolicyEngineError(f"{self._describe} not ready (HTTP {response.status_code})")

    def close(self) -> None:
        self._client.close()
        if self._pool is not None:
            self._pool.close()
        self._async = None  # its loop closes its connections


_JSON_HEADERS = {"Content-Type": "application/json"}


def _pool_for_url(url: str, timeout: float) -> OpaConnectionPool | None:
    """The lean query client for a sidecar at ``http://host[:port]``; None (httpx asks) for
    anything else (TLS, a path prefix, credentials in the URL)."""
    parsed = urlsplit(url)
    if (parsed.scheme != "http" or parsed.path.strip("/") or parsed.query or not parsed.hostname
            or "@" in parsed.netloc):
        return None
    try:
        port = parsed.port or 80
    except ValueError:
        return None
    return OpaConnectionPool(host=parsed.hostname, port=port, host_header=parsed.netloc,
                             timeout=timeout)


def _encode(payload: Mapping[str, Any]) -> bytes:
    """The request body, compact. Encoded by ``json`` with ``allow_nan=False`` rather than
    orjson: orjson writes NaN and infinities as ``null``, which a rule could read as "no
    score"; here a non-finite number fails the evaluation closed, naming the reason."""
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise PolicyEngineError(f"policy input cannot be encoded as JSON: {exc}") from exc
