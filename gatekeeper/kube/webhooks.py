"""Register and remove the webhook configurations (what the chart's hook Jobs run).

The configurations exist only while a gatekeeper answers: ``register`` first waits for a ready
gatekeeper (``/readyz`` over HTTPS, verified with the serving CA), then creates or updates them
with that CA as ``caBundle``; ``unregister`` deletes them before the Deployment goes away.
"""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from gatekeeper.errors import InvalidInputError, UpstreamUnavailableError
from gatekeeper.kube.client import WEBHOOK_PATHS, KubeClient

__all__ = ["Registered", "register", "set_ca_bundle", "unregister", "wait_ready",
           "webhook_documents"]


@dataclass(frozen=True)
class Registered:
    kind: str
    name: str
    action: str  # "created" | "updated" | "deleted" | "absent"


def webhook_documents(documents: Iterable[Any]) -> list[dict[str, Any]]:
    """The webhook configurations among ``documents``; anything else is an error."""
    found: list[dict[str, Any]] = []
    for index, document in enumerate(documents):
        if document is None:
            continue
        if not isinstance(document, dict) or document.get("kind") not in WEBHOOK_PATHS:
            kind = document.get("kind") if isinstance(document, dict) else type(document).__name__
            raise InvalidInputError(
                f"document {index} is a {kind}, not a Validating/MutatingWebhookConfiguration")
        name = (document.get("metadata") or {}).get("name")
        if not name:
            raise InvalidInputError(f"document {index} ({document['kind']}) has no metadata.name")
        found.append(document)
    if not found:
        raise InvalidInputError("no webhook configuration to register")
    return found


def _with_ca(document: dict[str, Any], ca_bundle: bytes) -> dict[str, Any]:
    body = copy.deepcopy(document)
    encoded = base64.b64encode(ca_bundle).decode("ascii")
    for webhook in body.get("webhooks") or []:
        webhook.setdefault("clientConfig", {})["caBundle"] = encoded
    return body


def wait_ready(url: str, ca_pem: bytes, *, server_name: str | None, timeout: float,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll ``url`` (a gatekeeper's /readyz) until it answers 200 over TLS verified with
    ``ca_pem`` for ``server_name`` (default: the URL's host)."""
    import ssl

    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    extensions = {"sni_hostname": server_name} if server_name else {}
    headers = {"Host": server_name} if server_name else {}
    deadline = clock() + timeout
    last = "no answer yet"
    with httpx.Client(verify=context, timeout=5.0) as http:
        while True:
            try:
                response = http.get(url, headers=headers, extensions=extensions)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text.strip()[:200]}"
            except httpx.HTTPError as exc:
                last = str(exc) or type(exc).__name__
            if clock() >= deadline:
                raise UpstreamUnavailableError(
                    f"gatekeeper not ready at {url} after {timeout:g}s ({last}); "
                    "webhook configurations not registered")
            sleep(1.0)


def register(client: KubeClient, documents: Sequence[dict[str, Any]],
             ca_bundle: bytes) -> list[Registered]:
    """Create each configuration, or replace the existing one, with ``ca_bundle``."""
    done: list[Registered] = []
    for document in documents:
        kind, name = document["kind"], document["metadata"]["name"]
        collection = WEBHOOK_PATHS[kind]
        body = _with_ca(document, ca_bundle)
        current = client.get(f"{collection}/{name}")
        if current is None:
            client.create(collection, body)
            done.append(Registered(kind, name, "created"))
        else:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            client.replace(f"{collection}/{name}", body)
            done.append(Registered(kind, name, "updated"))
    return done


def set_ca_bundle(client: KubeClient, name: str, ca_bundle: bytes) -> list[Registered]:
    """Put ``ca_bundle`` into the existing configurations called ``name`` (absent: skipped)."""
    done: list[Registered] = []
    for kind, collection in WEBHOOK_PATHS.items():
        current = client.get(f"{collection}/{name}")
        if current is None:
            continue
        client.replace(f"{collection}/{name}", _with_ca(current, ca_bundle))
        done.append(Registered(kind, name, "updated"))
    return done


def unregister(client: KubeClient, name: str) -> list[Registered]:
    """Delete both configurations called ``name``; absent ones are reported, not an error."""
    done: list[Registered] = []
    for kind, collection in WEBHOOK_PATHS.items():
        deleted = client.delete(f"{collection}/{name}")
        done.append(Registered(kind, name, "deleted" if deleted else "absent"))
    return done
