"""``EcrScanSource``: ECR image scan findings (basic and enhanced/Inspector) through boto3.

* Account and region come from the image's registry host
  (``<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]``, or the dual-stack
  ``<account>.dkr-ecr.<region>.on.aws``); credentials from boto3's default chain (IRSA in a
  cluster, instance profile, environment); ``endpoint_url`` overrides the endpoint (tests).
* ``describe_image_scan_findings`` is paginated by hand (``nextToken``) so the page count and
  the finding cap are under our control; botocore retries throttling and 5xx
  (``standard`` or ``adaptive`` mode, see
  https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html).
* Basic findings carry the package in ``attributes`` (``package_name``, ``package_version``,
  ``CVSS3_SCORE``/``CVSS2_SCORE``) and say nothing about fixes; enhanced findings carry
  ``packageVulnerabilityDetails.vulnerablePackages[].fixedInVersion``, ``fixAvailable``,
  ``exploitAvailable`` and ``score``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import boto3
import botocore.config
import botocore.exceptions

from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.ports.scans import SEVERITIES, ScanFinding, ScanReport, ScanState
from gatekeeper.domain.reference import Digest, ImageReference
from gatekeeper.errors import ConfigurationError, UpstreamUnavailableError

__all__ = ["EcrImageLocation", "EcrScanSource", "parse_ecr_host", "report_from_pages"]

log = logging.getLogger(__name__)

_ECR_HOST_RE = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr(?:\.ecr(?:-fips)?|-ecr)\.(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9])"
    r"\.(?:amazonaws\.com(?:\.cn)?|on\.aws)$"
)

_STATUS_STATES: Mapping[str, ScanState] = {
    "COMPLETE": ScanState.COMPLETE,
    "ACTIVE": ScanState.ACTIVE,
    "IN_PROGRESS": ScanState.PENDING,
    "PENDING": ScanState.PENDING,
    "FAILED": ScanState.FAILED,
    "UNSUPPORTED_IMAGE": ScanState.UNSUPPORTED_IMAGE,
    "FINDINGS_UNAVAILABLE": ScanState.FINDINGS_UNAVAILABLE,
    "SCAN_ELIGIBILITY_EXPIRED": ScanState.SCAN_ELIGIBILITY_EXPIRED,
    "LIMIT_EXCEEDED": ScanState.LIMIT_EXCEEDED,
    "IMAGE_ARCHIVED": ScanState.IMAGE_ARCHIVED,
    "IMAGE_SIZE_EXCEEDED": ScanState.IMAGE_SIZE_EXCEEDED,
}
_NOT_FOUND_STATES: Mapping[str, tuple[ScanState, str]] = {
    "ScanNotFoundException": (ScanState.NOT_SCANNED, "ECR has no scan for this image"),
    "ImageNotFoundException": (ScanState.IMAGE_NOT_FOUND, "the image is not in the repository"),
    "RepositoryNotFoundException": (
        ScanState.REPOSITORY_NOT_FOUND, "the ECR repository does not exist"
    ),
}
_PERMISSION_CODES = frozenset({
    "AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
    "InvalidSignatureException", "ExpiredTokenException", "InvalidClientTokenId",
})


@dataclass(frozen=True, slots=True)
class EcrImageLocation:
    registry_id: str
    region: str
    repository: str
    host: str


def parse_ecr_host(reference: ImageReference) -> EcrImageLocation | None:
    """The ECR account and region of ``reference``, or None when it is not a private ECR host."""
    host = reference.registry.split(":", 1)[0]
    match = _ECR_HOST_RE.match(host)
    if match is None:
        return None
    return EcrImageLocation(
        match.group("account"), match.group("region"), reference.repository, reference.registry
    )


# --- response -> report ---------------------------------------------------------------------


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _as_float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _yes_no(value: Any) -> bool | None:
    if not isinstance(value, str):
        return None
    upper = value.upper()
    if upper in ("YES", "PARTIAL"):
        return True
    if upper == "NO":
        return False
    return None


def _basic_findings(raw: Iterable[Mapping[str, Any]]) -> Iterable[ScanFinding]:
    for finding in raw:
        attributes = {
            item.get("key"): item.get("value") for item in finding.get("attributes") or ()
        }
        score = _as_float(attributes.get("CVSS3_SCORE"))
        if score is None:
            score = _as_float(attributes.get("CVSS2_SCORE"))
        yield ScanFinding(
            id=str(finding.get("name") or "unknown"),
            severity=str(finding.get("severity") or "UNDEFINED").upper(),
            package=attributes.get("package_name"),
            installed_version=attributes.get("package_version"),
            fixed_version=None,
            fix_available=None,
            exploit_available=None,
            score=score,
        )


def _enhanced_findings(raw: Iterable[Mapping[str, Any]]) -> Iterable[ScanFinding]:
    for finding in raw:
        details = finding.get("packageVulnerabilityDetails") or {}
        vulnerability = str(details.get("vulnerabilityId") or finding.get("title") or "unknown")
        severity = str(finding.get("severity") or "UNDEFINED").upper()
        score = _as_float(finding.get("score"))
        if score is None:
            score = _as_float(((finding.get("scoreDetails") or {}).get("cvss") or {}).get("score"))
        fix_available = _yes_no(finding.get("fixAvailable"))
        exploit_available = _yes_no(finding.get("exploitAvailable"))
        packages = details.get("vulnerablePackages") or [{}]
        for package in packages:
            fixed = package.get("fixedInVersion")
            if fixed in ("", "NotAvailable"):
                fixed = None
            installed = package.get("version")
            if installed is not None and package.get("release"):
                installed = f"{installed}-{package['release']}"
            if installed is not None and package.get("epoch"):
                installed = f"{package['epoch']}:{installed}"
            yield ScanFinding(
                id=vulnerability,
                severity=severity,
                package=package.get("name"),
                installed_version=installed,
                fixed_version=fixed,
                fix_available=fix_available if fix_available is not None else (
                    True if fixed else None
                ),
                exploit_available=exploit_available,
                score=score,
                package_manager=package.get("packageManager"),
                title=finding.get("title"),
            )


def report_from_pages(
    pages: list[Mapping[str, Any]], location: EcrImageLocation, *, max_findings: int
) -> ScanReport:
    """Turn ``describe_image_scan_findings`` pages into a :class:`ScanReport`."""
    first = pages[0]
    status_block = first.get("imageScanStatus") or {}
    status = status_block.get("status")
    description = status_block.get("description") or ""
    where = {"registry_id": location.registry_id, "region": location.region,
             "repository": location.repository}
    state = _STATUS_STATES.get(status or "", ScanState.UNKNOWN_STATUS)
    scan_findings = first.get("imageScanFindings") or {}
    completed_at = _as_datetime(scan_findings.get("imageScanCompletedAt"))
    db_updated_at = _as_datetime(scan_findings.get("vulnerabilitySourceUpdatedAt"))
    if not state.findings_available:
        reason = f"ECR scan status {status}" + (f": {description}" if description else "")
        return ScanReport(state=state, reason=reason, scanner="ecr", status=status,
                          completed_at=completed_at, vulnerability_db_updated_at=db_updated_at,
                          location=where)

    findings: list[ScanFinding] = []
    scan_type: str | None = None
    tally: Counter[str] = Counter()  # per scanner finding (an enhanced one may name 2 packages)
    for page in pages:
        block = page.get("imageScanFindings") or {}
        for key in ("enhancedFindings", "findings"):
            for raw in block.get(key) or ():
                tally[str(raw.get("severity") or "UNDEFINED").upper()] += 1
        if block.get("enhancedFindings"):
            scan_type = "enhanced"
            findings.extend(_enhanced_findings(block["enhancedFindings"]))
        if block.get("findings"):
            scan_type = scan_type or "basic"
            findings.extend(_basic_findings(block["findings"]))
    if scan_type is None:
        # No findings at all: tell the modes apart by what the counts mention.
        scan_type = "enhanced" if "UNTRIAGED" in (scan_findings.get("findingSeverityCounts")
                                                   or {}) else "basic"

    reported = scan_findings.get("findingSeverityCounts")
    if isinstance(reported, Mapping) and reported:
        counts = {severity: int(reported.get(severity, 0) or 0) for severity in SEVERITIES}
        counts_source = "reported"
    else:
        # ECR omits the counts when there are no findings, and some responses omit them
        # altogether: count what we were given, and say so.
        counts = {severity: tally.get(severity, 0) for severity in SEVERITIES}
        counts_source = "computed"
    findings.sort(key=lambda f: (SEVERITIES.index(f.severity) if f.severity in SEVERITIES
                                 else len(SEVERITIES), f.id, f.package or ""))
    truncated = len(findings) > max_findings
    return ScanReport(
        state=state,
        reason=f"ECR {scan_type} scan {status}",
        scanner="ecr",
        scan_type=scan_type,
        status=status,
        completed_at=completed_at,
        vulnerability_db_updated_at=db_updated_at,
        severity_counts=counts,
        counts_source=counts_source,
        findings=tuple(findings[:max_findings]),
        finding_count=len(findings),
        truncated=truncated,
        location=where,
    )


# --- the adapter ----------------------------------------------------------------------------


class EcrScanSource:
    """Implements :class:`~gatekeeper.domain.ports.scans.ScanSource` for Amazon ECR."""

    name = "ecr"

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        retry_mode: Literal["standard", "adaptive"] = "adaptive",
        max_attempts: int = 5,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        page_size: int = 1000,
        max_pages: int = 50,
        max_findings: int = 2000,
        session: boto3.session.Session | None = None,
        on_call: Callable[[str, str], None] | None = None,
    ) -> None:
        if not 1 <= page_size <= 1000:
            raise ConfigurationError("ECR page size must be between 1 and 1000")
        self._endpoint_url = endpoint_url
        self._config = botocore.config.Config(
            # total_max_attempts counts the first attempt too ("max_attempts" would not).
            retries={"mode": retry_mode, "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            user_agent_extra="forge-gatekeeper",
        )
        self._page_size = page_size
        self._max_pages = max_pages
        self._max_findings = max_findings
        self._session = session
        #: Told ``(operation, outcome)`` after every ECR API call (metrics).
        self._on_call = on_call
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def applies_to(self, reference: ImageReference) -> bool:
        return parse_ecr_host(reference) is not None

    def _client(self, region: str) -> Any:
        # boto3 clients are thread-safe; sessions are not, so clients are built under a lock.
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                session = self._session or boto3.session.Session()
                client = session.client(
                    "ecr", region_name=region, endpoint_url=self._endpoint_url,
                    config=self._config,
                )
                if self._on_call is not None:
                    client.meta.events.register("after-call.ecr", self._after_call)
                    client.meta.events.register("after-call-error.ecr", self._after_call_error)
                self._clients[region] = client
            return client

    def _after_call(self, *, model: Any, parsed: Mapping[str, Any], **_: Any) -> None:
        # botocore calls this once per API call (after its retries), with the parsed answer.
        code = (parsed.get("Error") or {}).get("Code") if isinstance(parsed, Mapping) else None
        if self._on_call is not None:
            self._on_call(str(model.name), str(code) if code else "ok")

    def _after_call_error(self, *, model: Any, exception: Exception, **_: Any) -> None:
        if self._on_call is not None:
            self._on_call(str(model.name), type(exception).__name__)

    def fetch(
        self, reference: ImageReference, digest: Digest, context: EvidenceContext
    ) -> ScanReport:
        location = parse_ecr_host(reference)
        if location is None:
            return ScanReport(
                ScanState.NOT_APPLICABLE, f"{reference.registry} is not an ECR registry", "ecr"
            )
        client = self._client(location.region)
        image = f"{location.host}/{location.repository}@{digest}"
        request: dict[str, Any] = {
            "registryId": location.registry_id,
            "repositoryName": location.repository,
            "imageId": {"imageDigest": str(digest)},
            "maxResults": self._page_size,
        }
        pages: list[Mapping[str, Any]] = []
        seen_tokens: set[str] = set()
        try:
            while True:
                if context.deadline is not None and time.monotonic() >= context.deadline:
                    raise UpstreamUnavailableError(
                        f"ECR scan findings for {image}: no time left before the deadline"
                    )
                page = client.describe_image_scan_findings(**request)
                pages.append(page)
                token = page.get("nextToken")
                if not token or len(pages) >= self._max_pages or token in seen_tokens:
                    if token and token in seen_tokens:
                        log.warning("ECR repeated nextToken for %s; stopping pagination", image)
                    break
                # Pages after the first only add findings; stop early once we have enough.
                if sum(len((p.get("imageScanFindings") or {}).get("findings") or ())
                       + len((p.get("imageScanFindings") or {}).get("enhancedFindings") or ())
                       for p in pages) > self._max_findings:
                    break
                seen_tokens.add(token)
                request["nextToken"] = token
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _NOT_FOUND_STATES:
                state, reason = _NOT_FOUND_STATES[code]
                return ScanReport(state, reason, "ecr", location={
                    "registry_id": location.registry_id, "region": location.region,
                    "repository": location.repository})
            if code in _PERMISSION_CODES:
                raise ConfigurationError(
                    f"not allowed to read ECR scan findings for {image} ({code}): grant "
                    "ecr:DescribeImageScanFindings to the gatekeeper's role",
                    context={"image": image, "code": code},
                ) from exc
            raise UpstreamUnavailableError(
                f"ECR scan findings for {image} unavailable ({code or 'error'})",
                context={"image": image, "code": code},
            ) from exc
        except botocore.exceptions.NoCredentialsError as exc:
            raise ConfigurationError(
                f"no AWS credentials to read ECR scan findings for {image}"
            ) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise UpstreamUnavailableError(
                f"ECR scan findings for {image} unavailable: {exc}", context={"image": image}
            ) from exc
        report = report_from_pages(pages, location, max_findings=self._max_findings)
        if pages[-1].get("nextToken") and not report.truncated:
            report = replace(report, truncated=True)  # pages were left unread
        return report
