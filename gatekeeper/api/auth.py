"""Bearer-JWT authentication and role checks for the REST API.

Contract for route authors::

    from gatekeeper.api.auth import Principal, Role, require_roles

    @router.get("/v1/policies", dependencies=[Depends(require_roles(Role.POLICY_ADMIN))])
    def list_policies(...): ...

    # or, to know who called:
    def create(..., principal: Annotated[Principal, Depends(require_roles(Role.PIPELINE))]): ...

``require_roles`` reads ``request.app.state.authenticator`` (set by :func:`install_auth`) and
answers:

* **401** ``{"error": "unauthorized", "message": ...}`` with ``WWW-Authenticate: Bearer ...``
  when the token is missing, malformed, expired, wrongly signed, or from another issuer/audience;
* **403** ``{"error": "forbidden", "message": ...}`` when the token is valid but grants none of
  the roles asked for. ``admin`` passes every role check.

Tokens: ``Authorization: Bearer <JWT>``; ``sub`` and ``exp`` are required; roles come from the
``roles`` claim (a list, or a space-separated string); unknown role names are ignored. Keys:
an HS256 shared secret (at least 32 bytes), RS256/ES256 PEM public keys, and/or a JWKS file.
Each key only accepts its own algorithm family, so a public key can never be used as an HMAC
secret (the classic algorithm-confusion attack). Tokens are never logged nor echoed back.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from gatekeeper.errors import ConfigurationError

__all__ = [
    "AuthError",
    "Authenticator",
    "Principal",
    "Role",
    "install_auth",
    "require_roles",
]

log = logging.getLogger(__name__)

_REALM = 'Bearer realm="gatekeeper"'
_MIN_SECRET_BYTES = 32
_MAX_TOKEN_BYTES = 16 * 1024
_LEEWAY_SECONDS = 30


class Role(enum.StrEnum):
    PIPELINE = "pipeline"
    AUDITOR = "auditor"
    POLICY_ADMIN = "policy-admin"
    #: May upload VEX documents (``POST /v1/vex``), which waive vulnerability findings.
    VEX_PUBLISHER = "vex-publisher"
    #: may approve a pending exception (and nothing else)
    EXCEPTION_APPROVER = "exception-approver"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who called: the token's ``sub`` and the roles it grants.

    ``authenticated`` is false only for the stand-in principal of a server whose
    authentication is disabled: it passes role checks but can never approve anything.
    """

    subject: str
    roles: frozenset[Role]
    authenticated: bool = True

    def has_any(self, roles: Iterable[Role]) -> bool:
        return Role.ADMIN in self.roles or any(role in self.roles for role in roles)


class AuthError(HTTPException):
    """A refused request: ``status`` 401 (who are you?) or 403 (not allowed).

    An ``HTTPException``, so that an app without :func:`install_auth` still answers 401/403
    (as ``{"detail": ...}``) instead of 500; :func:`install_auth` renders the documented body.
    """

    def __init__(self, status: int, message: str, *, www_authenticate: str | None = None) -> None:
        headers = {"WWW-Authenticate": www_authenticate} if www_authenticate else None
        super().__init__(status_code=status, detail=message, headers=headers)
        self.status = status
        self.message = message
        self.www_authenticate = www_authenticate

    @property
    def error(self) -> str:
        return "unauthorized" if self.status == 401 else "forbidden"

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": self.www_authenticate} if self.www_authenticate else None
        return JSONResponse(
            {"error": self.error, "message": self.message}, status_code=self.status, headers=headers
        )


def _unauthorized(message: str, *, invalid: bool = True) -> AuthError:
    header = f'{_REALM}, error="invalid_token"' if invalid else _REALM
    return AuthError(401, message, www_authenticate=header)


@dataclass(frozen=True, slots=True)
class _Key:
    algorithm: str
    key: Any  # bytes for HS256, a cryptography public key otherwise
    key_id: str | None = None


def _public_key_algorithm(key: Any, where: str) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ConfigurationError(f"{where}: RSA key of {key.key_size} bits (at least 2048)")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigurationError(f"{where}: EC key on {key.curve.name} (ES256 needs P-256)")
        return "ES256"
    raise ConfigurationError(f"{where}: only RSA (RS256) and P-256 EC (ES256) keys are accepted")


class Authenticator:
    """Turns a bearer token into a :class:`Principal`, or refuses it with :class:`AuthError`."""

    def __init__(
        self,
        keys: Sequence[_Key] = (),
        *,
        issuer: str | None = None,
        audience: str | None = None,
        insecure_disable_auth: bool = False,
    ) -> None:
        if not keys and not insecure_disable_auth:
            raise ConfigurationError(
                "authentication is on but no token verification key is configured: set "
                "GATEKEEPER_AUTH_HS256_SECRET, GATEKEEPER_AUTH_PUBLIC_KEY_FILES or "
                "GATEKEEPER_AUTH_JWKS_FILE (or GATEKEEPER_INSECURE_DISABLE_AUTH=true for local use)"
            )
        self._keys = tuple(keys)
        self._issuer = issuer
        self._audience = audience
        self.insecure_disable_auth = insecure_disable_auth
        if insecure_disable_auth:
            log.warning(
                "AUTHENTICATION IS DISABLED (GATEKEEPER_INSECURE_DISABLE_AUTH=true): every caller "
                "is treated as admin; never run this in production"
            )

    @classmethod
    def from_settings(
        cls,
        *,
        hs256_secret: str | None = None,
        public_key_files: Sequence[Path | str] = (),
        public_keys_pem: Sequence[str] = (),
        jwks_file: Path | str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        insecure_disable_auth: bool = False,
    ) -> Authenticator:
        """Build from configuration values; a bad key is a :class:`ConfigurationError`."""
        keys: list[_Key] = []
        if hs256_secret:
            secret = hs256_secret.encode()
            if len(secret) < _MIN_SECRET_BYTES:
                raise ConfigurationError(
                    f"auth_hs256_secret: {len(secret)} bytes; HS256 needs at least "
                    f"{_MIN_SECRET_BYTES} (RFC 7518 section 3.2)"
                )
            keys.append(_Key("HS256", secret))
        pems: list[tuple[str, bytes]] = [
            (f"public key {index}", text.encode()) for index, text in enumerate(public_keys_pem)
        ]
        for path in public_key_files:
            try:
                pems.append((f"public key file {path}", Path(path).read_bytes()))
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read public key file {path}: {exc.strerror}"
                ) from exc
        for where, pem in pems:
            try:
                public_key = load_pem_public_key(pem)
            except ValueError as exc:
                raise ConfigurationError(f"{where}: not a PEM public key") from exc
            keys.append(_Key(_public_key_algorithm(public_key, where), public_key))
        if jwks_file is not None:
            keys.extend(_load_jwks(Path(jwks_file)))
        return cls(
            keys, issuer=issuer, audience=audience, insecure_disable_auth=insecure_disable_auth
        )

    def describe(self) -> str:
        """One line for ``/readyz`` and the start banner."""
        if self.insecure_disable_auth:
            return "disabled (GATEKEEPER_INSECURE_DISABLE_AUTH=true): every caller is admin"
        algorithms = sorted({key.algorithm for key in self._keys})
        return f"bearer JWT ({', '.join(algorithms)})"

    def authenticate(self, authorization: str | None) -> Principal:
        """Verify the ``Authorization`` header value; raise :class:`AuthError` (401) if bad."""
        if self.insecure_disable_auth:
            return Principal(
                "anonymous (auth disabled)", frozenset({Role.ADMIN}), authenticated=False
            )
        if not authorization:
            raise _unauthorized(
                "missing bearer token: send 'Authorization: Bearer <JWT>'", invalid=False
            )
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise _unauthorized("malformed Authorization header: expected 'Bearer <JWT>'")
        if len(token) > _MAX_TOKEN_BYTES:
            raise _unauthorized(f"token larger than {_MAX_TOKEN_BYTES} bytes")
        claims = self._verify(token)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise _unauthorized("token has no subject (sub)")
        return Principal(subject, _roles_from(claims.get("roles")))

    def _verify(self, token: str) -> dict[str, Any]:
        # (1) the header names the algorithm; only keys of that family may be tried
        try:
            header = jwt.get_unverified_header(token)
        except jwt.exceptions.DecodeError as exc:
            raise _unauthorized("token is not a well-formed JWT") from exc
        algorithm = header.get("alg")
        candidates = [key for key in self._keys if key.algorithm == algorithm]
        if not candidates:
            accepted = ", ".join(sorted({key.algorithm for key in self._keys}))
            raise _unauthorized(
                f"token algorithm {algorithm!r} is not accepted (accepted: {accepted})"
            )
        # (2) with a JWKS (keys with ids), a token's kid must name one of them: a kid that
        # matches no key is refused even if another key would verify (no key hopping). Keys
        # without ids (PEM files, the HS256 secret) ignore the kid.
        kid = header.get("kid")
        if kid is not None and any(key.key_id is not None for key in self._keys):
            candidates = [key for key in candidates if key.key_id == kid]
            if not candidates:
                raise _unauthorized(f"token key id {str(kid)[:64]!r} matches no configured key")
        # (3) signature, then exp/nbf/iat, issuer and audience
        options: Any = {"require": ["exp", "sub"], "verify_aud": self._audience is not None}
        last_signature_error: Exception | None = None
        for key in candidates:
            try:
                return jwt.decode(
                    token,
                    key.key,
                    algorithms=[key.algorithm],
                    audience=self._audience,
                    issuer=self._issuer,
                    leeway=_LEEWAY_SECONDS,
                    options=options,
                )
            except jwt.exceptions.InvalidSignatureError as exc:
                last_signature_error = exc
                continue
            except jwt.exceptions.ExpiredSignatureError as exc:
                raise _unauthorized("token expired") from exc
            except jwt.exceptions.ImmatureSignatureError as exc:
                raise _unauthorized("token is not valid yet (nbf/iat in the future)") from exc
            except jwt.exceptions.InvalidIssuerError as exc:
                raise _unauthorized("token issuer is not accepted") from exc
            except jwt.exceptions.InvalidAudienceError as exc:
                raise _unauthorized("token audience is not accepted") from exc
            except jwt.exceptions.MissingRequiredClaimError as exc:
                raise _unauthorized(f"token has no {exc.claim} claim") from exc
            except jwt.exceptions.DecodeError as exc:
                raise _unauthorized("token is not a well-formed JWT") from exc
            except jwt.exceptions.InvalidTokenError as exc:
                raise _unauthorized(f"invalid token: {type(exc).__name__}") from exc
        raise _unauthorized("token signature is not valid") from last_signature_error

    def authorize(self, principal: Principal, roles: Sequence[Role]) -> None:
        """Raise :class:`AuthError` (403) unless ``principal`` holds one of ``roles`` (or admin)."""
        if principal.has_any(roles):
            return
        needed = " or ".join(role.value for role in roles)
        granted = ", ".join(sorted(role.value for role in principal.roles)) or "no role"
        raise AuthError(
            403,
            f"subject {principal.subject!r} lacks the role for this operation: "
            f"requires {needed}, token grants {granted}",
            www_authenticate=f'{_REALM}, error="insufficient_scope"',
        )


def _roles_from(claim: Any) -> frozenset[Role]:
    if isinstance(claim, str):
        names: list[Any] = claim.split()
    elif isinstance(claim, list):
        names = claim
    else:
        return frozenset()
    known = {role.value: role for role in Role}
    return frozenset(known[name] for name in names if isinstance(name, str) and name in known)


def _load_jwks(path: Path) -> list[_Key]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read JWKS file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigurationError(f"JWKS file {path} is not valid JSON") from exc
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"JWKS file {path} has no keys")
    keys: list[_Key] = []
    for index, entry in enumerate(entries):
        where = f"JWKS file {path} keys[{index}]"
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{where}: not an object")
        if entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.exceptions.PyJWKError as exc:
            raise ConfigurationError(f"{where}: {exc}") from exc
        if entry.get("kty") == "oct":
            raise ConfigurationError(f"{where}: symmetric keys do not belong in a JWKS file")
        algorithm = _public_key_algorithm(jwk.key, where)
        if entry.get("alg") not in (None, algorithm):
            raise ConfigurationError(f"{where}: alg {entry.get('alg')} does not fit the key")
        keys.append(_Key(algorithm, jwk.key, entry.get("kid")))
    return keys


def require_roles(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller's :class:`Principal`, if it holds one of ``roles``."""
    if not roles:
        raise ValueError("require_roles needs at least one role")

    async def dependency(request: Request) -> Principal:
        authenticator = getattr(request.app.state, "authenticator", None)
        if not isinstance(authenticator, Authenticator):
            # Fail closed: a route that asks for roles on an app without auth is a wiring bug.
            raise AuthError(401, "authentication is not configured on this server",
                            www_authenticate=_REALM)
        principal = authenticator.authenticate(request.headers.get("authorization"))
        authenticator.authorize(principal, roles)
        request.state.principal = principal
        return principal

    dependency.__name__ = "require_" + "_or_".join(role.value.replace("-", "_") for role in roles)
    return dependency


def install_auth(app: FastAPI, authenticator: Authenticator) -> None:
    """Attach ``authenticator`` to ``app`` and render :class:`AuthError` as JSON."""
    app.state.authenticator = authenticator

    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AuthError)
        return exc.response()

    app.add_exception_handler(AuthError, handle)
