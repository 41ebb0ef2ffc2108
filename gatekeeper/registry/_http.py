"""HTTP plumbing of the registry client: bounded reads and small protocol helpers."""

from __future__ import annotations

import base64
import email.utils
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from gatekeeper.errors import GatekeeperError, UpstreamUnavailableError, VerificationError
from gatekeeper.registry.auth import BasicCredentials

__all__ = [
    "Answer",
    "basic_header",
    "json_object",
    "next_link",
    "read_within_limit",
    "retry_after_seconds",
    "send_limited",
    "status_error",
]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: httpx.Headers
    content: bytes


def send_limited(
    client: httpx.Client,
    method: str,
    url: str,
    headers: Mapping[str, str],
    max_bytes: int,
    timeout: httpx.Timeout,
    registry: str,
    what: str,
) -> Answer:
    with client.stream(method, url, headers=headers, timeout=timeout) as response:
        if method == "HEAD" or response.status_code != 200:
            # Error bodies are read only for their first bytes (never needed beyond logs).
            body = b""
            if method != "HEAD":
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > 4096:
                        break
            return Answer(response.status_code, response.headers, body)
        content = read_within_limit(response.iter_bytes(), response.headers.get("Content-Length"),
                                    max_bytes, registry, what)
        return Answer(response.status_code, response.headers, content)


def read_within_limit(
    chunks: Iterable[bytes], declared: str | None, max_bytes: int, registry: str, what: str
) -> bytes:
    """A 200 answer's body, refused (:class:`VerificationError`) as soon as its declared
    ``Content-Length`` or the bytes read go over ``max_bytes``; ``what`` names the step."""
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise VerificationError(
            f"registry {registry}: {what} refused: {declared} bytes, more than "
            f"the limit of {max_bytes} bytes",
            context={"registry": registry, "step": what},
        )
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        if len(buffer) > max_bytes:
            raise VerificationError(
                f"registry {registry}: {what} refused: more than the limit of "
                f"{max_bytes} bytes",
                context={"registry": registry, "step": what},
            )
    return bytes(buffer)


def status_error(registry: str, what: str, status: int) -> GatekeeperError:
    if status in (401, 403):
        return UpstreamUnavailableError(
            f"registry {registry} denied access ({status}) {what}",
            context={"registry": registry, "status": status},
        )
    return UpstreamUnavailableError(
        f"registry {registry} answered {status} {what}",
        context={"registry": registry, "status": status},
    )


def basic_header(creds: BasicCredentials) -> str:
    token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    return f"Basic {token}"


def retry_after_seconds(header: str | None) -> float | None:
    if not header:
        return None
    if header.strip().isdigit():
        return float(header.strip())
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def json_object(content: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UpstreamUnavailableError(f"{what} is not valid JSON") from exc
    if not isinstance(document, dict):
        raise UpstreamUnavailableError(f"{what} is not a JSON object")
    return document


def next_link(header: str | None) -> str | None:
    # Link: </v2/repo/tags/list?n=2&last=b>; rel="next"
    if not header or 'rel="next"' not in header:
        return None
    start, end = header.find("<"), header.find(">")
    if start < 0 or end <= start:
        return None
    target = urlsplit(header[start + 1 : end])
    if not target.path.startswith("/v2/"):
        return None
    return target.path + (f"?{target.query}" if target.query else "")
