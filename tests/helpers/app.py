"""The app under test: what a ``TestClient`` serves, typed."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from gatekeeper.wiring import Container

__all__ = ["container_of"]


def container_of(client: TestClient) -> Container:
    """The container ``create_app`` wired for the app ``client`` serves."""
    app = client.app
    assert isinstance(app, FastAPI), f"not a FastAPI app: {app!r}"
    container: Container = app.state.container
    return container
