"""Bearer tokens for the API under test: HS256 JWTs signed with the test's secret."""

from __future__ import annotations

import time

import jwt

__all__ = ["bearer_headers", "hs256_token"]


def hs256_token(secret: str, *roles: str, subject: str, ttl: int = 300, **claims: object) -> str:
    """A JWT for ``subject`` with ``roles``, issued now and valid for ``ttl`` seconds."""
    now = int(time.time())
    payload: dict[str, object] = {
        "sub": subject, "roles": list(roles), "iat": now, "exp": now + ttl, **claims,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def bearer_headers(secret: str, *roles: str, subject: str, ttl: int = 300) -> dict[str, str]:
    """The ``Authorization`` header of a request by ``subject`` with ``roles``."""
    return {"Authorization": f"Bearer {hs256_token(secret, *roles, subject=subject, ttl=ttl)}"}
