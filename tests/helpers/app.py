"""The app under test: what a ``TestClient`` serves, typed, and its two doors asked once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from gatekeeper.wiring import Container

__all__ = ["admitted", "container_of", "evaluated"]


def container_of(client: TestClient) -> Container:
    """The container ``create_app`` wired for the app ``client`` serves."""
    app = client.app
    assert isinstance(app, FastAPI), f"not a FastAPI app: {app!r}"
    container: Container = app.state.container
    return container


def evaluated(
    client: TestClient, body: Mapping[str, object], headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``POST /v1/evaluations`` with ``body``: the decision (any status but 200 fails the test)."""
    response = client.post("/v1/evaluations", json=dict(body), headers=headers)
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


def admitted(client: TestClient, review: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /admission/validate`` with an AdmissionReview: its ``response`` (any status but
    200 fails the test)."""
    response = client.post("/admission/validate", json=dict(review))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()["response"]
    return answer
