"""Notation trust stores and trust policies, as validated frozen configuration.

A Notation authority carries what ``notation verify`` reads from ``$XDG_CONFIG_HOME/notation``:
named trust stores (``ca:<name>``, ``signingAuthority:<name>``, ``tsa:<name>``) holding root
certificates, and an OCI trust policy document (``trustpolicy.json`` version ``1.0``, the same
camelCase keys). Semantics follow the Notary Project trust store and trust policy specification
(https://github.com/notaryproject/specifications/blob/main/specs/trust-store-trust-policy.md):

* a policy applies to an image when a ``registryScopes`` entry equals its fully qualified
  repository (``registry/repository``), else the one global (``*``) policy applies, else none;
* ``signatureVerification.level`` (``strict`` / ``permissive`` / ``audit`` / ``skip``) gives each
  validation an action (enforce / log / skip), refined by ``override``;
* ``trustedIdentities`` are ``x509.subject: C=.., ST=.., O=..`` distinguished names (partial
  match on the signing certificate's subject), ``*``, or AWS Signer signing-profile ARNs.

``from_mapping`` validates everything and names the field that is wrong.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from gatekeeper.errors import ConfigurationError
from gatekeeper.verify.notation_envelope import load_certificate

__all__ = [
    "CHECKS",
    "Action",
    "NotationTrust",
    "RevocationSources",
    "TrustPolicy",
    "TrustedIdentity",
    "parse_distinguished_name",
]


class Action(StrEnum):
    ENFORCE = "enforce"
    LOG = "log"
    SKIP = "skip"


#: The validations of the specification, in the order they run.
CHECKS = ("integrity", "authenticity", "authenticTimestamp", "expiry", "revocation")

_LEVELS: Mapping[str, Mapping[str, Action]] = {
    "strict": dict.fromkeys(CHECKS, Action.ENFORCE),
    "permissive": {
        "integrity": Action.ENFORCE, "authenticity": Action.ENFORCE,
        "authenticTimestamp": Action.LOG, "expiry": Action.LOG, "revocation": Action.LOG,
    },
    "audit": {"integrity": Action.ENFORCE} | dict.fromkeys(CHECKS[1:], Action.LOG),
    "skip": dict.fromkeys(CHECKS, Action.SKIP),
}  # fmt: skip
#: What ``override`` may set per validation (integrity is never overridable).
_OVERRIDABLE: Mapping[str, frozenset[Action]] = {
    "authenticity": frozenset({Action.ENFORCE, Action.LOG}),
    "authenticTimestamp": frozenset({Action.ENFORCE, Action.LOG}),
    "expiry": frozenset({Action.ENFORCE, Action.LOG}),
    "revocation": frozenset({Action.ENFORCE, Action.LOG, Action.SKIP}),
}
_STORE_TYPES = ("ca", "signingAuthority", "tsa")
_STORE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
#: Subject attribute short names as the Notary Project (and Go's pkix) spell them.
_ATTRIBUTE_NAMES: Mapping[str, x509.ObjectIdentifier] = {
    "C": x509.NameOID.COUNTRY_NAME,
    "ST": x509.NameOID.STATE_OR_PROVINCE_NAME,
    "S": x509.NameOID.STATE_OR_PROVINCE_NAME,
    "L": x509.NameOID.LOCALITY_NAME,
    "O": x509.NameOID.ORGANIZATION_NAME,
    "OU": x509.NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": x509.NameOID.COMMON_NAME,
    "SERIALNUMBER": x509.NameOID.SERIAL_NUMBER,
    "STREET": x509.NameOID.STREET_ADDRESS,
    "POSTALCODE": x509.NameOID.POSTAL_CODE,
    "EMAILADDRESS": x509.NameOID.EMAIL_ADDRESS,
    "DC": x509.NameOID.DOMAIN_COMPONENT,
}
_ARN_RE = re.compile(
    r"^arn:aws[a-zA-Z-]*:signer:[a-z0-9-]+:\d{12}:/signing-profiles/[A-Za-z0-9_]{2,64}(/[A-Za-z0-9]{10})?$"
)


def parse_distinguished_name(text: str, *, where: str) -> tuple[tuple[str, str], ...]:
    """``C=US, ST=WA, O=acme`` -> ``(("C", "US"), ("ST", "WA"), ("O", "acme"))``.

    Escapes as the specification lists them: ``\\,`` ``\\;`` ``\\\\`` and ``\\ `` (a leading or
    trailing space). ``S`` is read as ``ST``."""
    parts: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append("\x00" + text[index + 1])  # escaped: never a separator, never stripped
            index += 2
            continue
        if char in ",;":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    attributes: list[tuple[str, str]] = []
    for part in parts:
        name, sep, value = part.partition("=")
        name = name.strip().upper()
        value = value.strip(" ").replace("\x00", "")
        if not sep or not name or not value:
            raise ConfigurationError(f"{where}: {text!r} is not a list of NAME=value RDNs")
        if name not in _ATTRIBUTE_NAMES:
            raise ConfigurationError(f"{where}: unknown subject attribute {name!r}")
        attributes.append(("ST" if name == "S" else name, value))
    names = [name for name, _ in attributes]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{where}: an attribute appears twice in {text!r}")
    return tuple(attributes)


def subject_attributes(name: x509.Name) -> dict[str, str]:
    """The certificate subject as short-name -> value (multi-valued: the last one)."""
    by_oid = {oid: short for short, oid in _ATTRIBUTE_NAMES.items() if short != "S"}
    out: dict[str, str] = {}
    for attribute in name:
        short = by_oid.get(attribute.oid)
        if short is not None:
            out[short] = str(attribute.value)
    return out


@dataclass(frozen=True, slots=True)
class TrustedIdentity:
    """``*``, an ``x509.subject`` (partial DN) or an AWS Signer signing-profile (version) ARN."""

    text: str
    subject: tuple[tuple[str, str], ...] = ()
    profile_arn: str | None = None

    @property
    def is_wildcard(self) -> bool:
        return self.text == "*"

    def matches_subject(self, certificate: x509.Certificate) -> bool:
        if not self.subject:
            return False
        actual = subject_attributes(certificate.subject)
        return all(actual.get(name) == value for name, value in self.subject)

    def matches_profile(self, profile_version_arn: str) -> bool:
        """AWS Signer: a profile ARN matches every version of it; a version ARN matches itself
        (compared case-insensitively, as AWS does)."""
        if self.profile_arn is None:
            return False
        wanted = self.profile_arn.lower()
        actual = profile_version_arn.lower()
        if wanted == actual:
            return True
        return wanted.count("/") == 2 and actual.rsplit("/", 1)[0] == wanted

    @classmethod
    def parse(cls, text: object, *, where: str) -> TrustedIdentity:
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError(f"{where} must be a non-empty string")
        if text == "*":
            return cls(text)
        prefix, sep, rest = text.partition(":")
        if sep and prefix.strip() == "x509.subject":
            subject = parse_distinguished_name(rest, where=where)
            names = {name for name, _ in subject}
            if not {"C", "ST", "O"} <= names:
                raise ConfigurationError(
                    f"{where}: an x509.subject identity must name C, ST (or S) and O"
                )
            return cls(text, subject=subject)
        if text.startswith("arn:"):
            if not _ARN_RE.match(text):
                raise ConfigurationError(
                    f"{where}: {text!r} is not an AWS Signer signing profile ARN "
                    "(arn:aws:signer:<region>:<account>:/signing-profiles/<name>[/<version>])"
                )
            return cls(text, profile_arn=text)
        raise ConfigurationError(
            f"{where}: {text!r} is neither '*', 'x509.subject: ...' nor a signing profile ARN"
        )


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """One statement of ``trustPolicies``."""

    name: str
    registry_scopes: tuple[str, ...]
    level: str
    actions: Mapping[str, Action]
    trust_stores: tuple[str, ...]
    trusted_identities: tuple[TrustedIdentity, ...]
    verify_timestamp: str = "always"

    @property
    def is_global(self) -> bool:
        return self.registry_scopes == ("*",)

    def action(self, check: str) -> Action:
        return self.actions[check]

    def stores_of(self, store_type: str) -> tuple[str, ...]:
        return tuple(s for s in self.trust_stores if s.split(":", 1)[0] == store_type)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "level": self.level,
            "actions": {check: str(self.actions[check]) for check in CHECKS},
        }


@dataclass(frozen=True, slots=True)
class RevocationSources:
    """CRLs configured for an authority: local files (``/path``) or ``http(s)://`` URLs."""

    crls: tuple[str, ...] = ()
    timeout_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class NotationTrust:
    """Trust stores + trust policy document of one Notation authority."""

    stores: Mapping[str, tuple[x509.Certificate, ...]]
    policies: tuple[TrustPolicy, ...]
    revocation: RevocationSources = RevocationSources()

    def policy_for(self, repository_uri: str) -> TrustPolicy | None:
        """Exact scope first, then the global policy (specification, "Selecting a trust policy")."""
        for policy in self.policies:
            if repository_uri in policy.registry_scopes:
                return policy
        for policy in self.policies:
            if policy.is_global:
                return policy
        return None

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.stores):
            digest.update(name.encode())
            for certificate in self.stores[name]:
                digest.update(certificate.fingerprint(hashes.SHA256()))
        for policy in self.policies:
            digest.update(repr((policy.name, policy.registry_scopes, policy.level,
                                sorted(policy.actions.items()), policy.trust_stores,
                                [i.text for i in policy.trusted_identities],
                                policy.verify_timestamp)).encode())  # fmt: skip
        digest.update(repr(self.revocation).encode())
        return digest.hexdigest()[:16]

    @classmethod
    def from_mapping(cls, raw: object, *, where: str) -> NotationTrust:
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"{where} must be an object")
        unknown = set(raw) - {"trust_store", "trust_policy", "revocation"}
        if unknown:
            raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")
        stores = _stores(raw.get("trust_store"), where=f"{where}.trust_store")
        policies = _policies(raw.get("trust_policy"), stores, where=f"{where}.trust_policy")
        revocation = _revocation(raw.get("revocation"), where=f"{where}.revocation")
        return cls(stores, policies, revocation)


def _load_certificates(item: object, *, where: str) -> list[x509.Certificate]:
    """A PEM text (one or more certificates) or the path of a .pem/.crt/.cer file (PEM or DER)."""
    if not isinstance(item, str) or not item.strip():
        raise ConfigurationError(f"{where} must be PEM text or a certificate file path")
    if "-----BEGIN" in item:
        data = item.encode()
    else:
        try:
            with open(item, "rb") as handle:  # noqa: PTH123 - a configured path, read once at start
                data = handle.read(1024 * 1024)
        except OSError as exc:
            raise ConfigurationError(f"{where}: cannot read {item}: {exc.strerror}") from exc
    try:
        if b"-----BEGIN" in data:
            certificates = [
                load_certificate(c.public_bytes(serialization.Encoding.DER))
                for c in x509.load_pem_x509_certificates(data)
            ]
        else:
            certificates = [load_certificate(data)]
    except (ValueError, x509.InvalidVersion) as exc:
        raise ConfigurationError(f"{where}: not an X.509 certificate (PEM or DER)") from exc
    return certificates


def _stores(raw: object, *, where: str) -> Mapping[str, tuple[x509.Certificate, ...]]:
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigurationError(
            f"{where} must map named stores ('ca:<name>', 'signingAuthority:<name>', "
            "'tsa:<name>') to certificates"
        )
    stores: dict[str, tuple[x509.Certificate, ...]] = {}
    for name, items in raw.items():
        _check_store_name(name, where=where)
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list) or not items:
            raise ConfigurationError(f"{where}.{name} must be a non-empty list of certificates")
        certificates: list[x509.Certificate] = []
        for index, item in enumerate(items):
            certificates += _load_certificates(item, where=f"{where}.{name}[{index}]")
        stores[name] = tuple(certificates)
    return stores


def _check_store_name(name: object, *, where: str) -> None:
    if not isinstance(name, str):
        raise ConfigurationError(f"{where}: store names must be strings")
    store_type, sep, store_name = name.partition(":")
    if not sep or store_type not in _STORE_TYPES or not _STORE_NAME_RE.match(store_name):
        raise ConfigurationError(
            f"{where}: {name!r} is not '<type>:<name>' with type ca, signingAuthority or tsa"
        )


def _policies(
    raw: object, stores: Mapping[str, tuple[x509.Certificate, ...]], *, where: str
) -> tuple[TrustPolicy, ...]:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be a Notation trust policy document")
    unknown = set(raw) - {"version", "trustPolicies"}
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")
    if raw.get("version") != "1.0":
        raise ConfigurationError(f'{where}.version must be "1.0"')
    items = raw.get("trustPolicies")
    if not isinstance(items, list) or not items:
        raise ConfigurationError(f"{where}.trustPolicies must be a non-empty list")
    policies = tuple(
        _policy(item, stores, where=f"{where}.trustPolicies[{i}]") for i, item in enumerate(items)
    )
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{where}.trustPolicies: policy names must be unique")
    if sum(p.is_global for p in policies) > 1:
        raise ConfigurationError(f"{where}.trustPolicies: only one policy may use the '*' scope")
    seen: dict[str, str] = {}
    for policy in policies:
        for scope in policy.registry_scopes:
            if scope != "*" and scope in seen:
                raise ConfigurationError(
                    f"{where}.trustPolicies: scope {scope!r} is in both {seen[scope]!r} "
                    f"and {policy.name!r}"
                )
            seen[scope] = policy.name
    return policies


def _policy(
    raw: object, stores: Mapping[str, tuple[x509.Certificate, ...]], *, where: str
) -> TrustPolicy:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be an object")
    allowed = {
        "name",
        "registryScopes",
        "signatureVerification",
        "trustStores",
        "trustedIdentities",
    }
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{where}.name must be a non-empty string")
    scopes = raw.get("registryScopes")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise ConfigurationError(f"{where}.registryScopes must be a non-empty list of strings")
    if "*" in scopes and len(scopes) > 1:
        raise ConfigurationError(f"{where}.registryScopes: '*' must be the only scope")
    for scope in scopes:
        last = scope.rsplit("/", 1)[-1]
        malformed = "*" in scope or "/" not in scope or "@" in scope or ":" in last
        if scope != "*" and (malformed or scope != scope.strip()):
            raise ConfigurationError(
                f"{where}.registryScopes: {scope!r} is not a fully qualified repository "
                "(registry/repository, no tag, digest or wildcard) nor '*'"
            )
    level, actions, verify_timestamp = _verification(
        raw.get("signatureVerification"), where=f"{where}.signatureVerification"
    )
    if level == "skip":
        if scopes == ["*"]:
            raise ConfigurationError(f"{where}: level 'skip' cannot be used with the '*' scope")
        if raw.get("trustStores") or raw.get("trustedIdentities"):
            raise ConfigurationError(
                f"{where}: level 'skip' takes no trustStores or trustedIdentities"
            )
        return TrustPolicy(name, tuple(scopes), level, actions, (), (), verify_timestamp)
    trust_stores = raw.get("trustStores")
    if (
        not isinstance(trust_stores, list)
        or not trust_stores
        or not all(isinstance(s, str) for s in trust_stores)
    ):
        raise ConfigurationError(f"{where}.trustStores must be a non-empty list of store names")
    for store in trust_stores:
        _check_store_name(store, where=f"{where}.trustStores")
        if store not in stores:
            raise ConfigurationError(f"{where}.trustStores names {store!r}, not in trust_store")
    if not any(s.split(":", 1)[0] in ("ca", "signingAuthority") for s in trust_stores):
        raise ConfigurationError(f"{where}.trustStores needs a 'ca' or 'signingAuthority' store")
    identities_raw = raw.get("trustedIdentities")
    if not isinstance(identities_raw, list) or not identities_raw:
        raise ConfigurationError(f"{where}.trustedIdentities must be a non-empty list")
    identities = tuple(
        TrustedIdentity.parse(item, where=f"{where}.trustedIdentities[{i}]")
        for i, item in enumerate(identities_raw)
    )
    if any(i.is_wildcard for i in identities) and len(identities) > 1:
        raise ConfigurationError(f"{where}.trustedIdentities: '*' must be the only identity")
    _check_overlap(identities, where=f"{where}.trustedIdentities")
    return TrustPolicy(
        name, tuple(scopes), level, actions, tuple(trust_stores), identities, verify_timestamp
    )


def _verification(raw: object, *, where: str) -> tuple[str, Mapping[str, Action], str]:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be an object with a level")
    unknown = set(raw) - {"level", "override", "verifyTimestamp"}
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")
    level = raw.get("level")
    if not isinstance(level, str) or level not in _LEVELS:
        raise ConfigurationError(f"{where}.level must be strict, permissive, audit or skip")
    actions = dict(_LEVELS[level])
    override = raw.get("override") or {}
    if not isinstance(override, Mapping):
        raise ConfigurationError(f"{where}.override must be an object")
    if override and level == "skip":
        raise ConfigurationError(f"{where}: level 'skip' cannot be customised")
    for check, value in override.items():
        if check not in _OVERRIDABLE:
            raise ConfigurationError(
                f"{where}.override.{check}: only {sorted(_OVERRIDABLE)} can be overridden"
            )
        if value not in {str(a) for a in _OVERRIDABLE[check]}:
            allowed = ", ".join(sorted(str(a) for a in _OVERRIDABLE[check]))
            raise ConfigurationError(f"{where}.override.{check} must be one of {allowed}")
        actions[check] = Action(value)
    verify_timestamp = raw.get("verifyTimestamp", "always")
    if verify_timestamp not in ("always", "afterCertExpiry"):
        raise ConfigurationError(f"{where}.verifyTimestamp must be 'always' or 'afterCertExpiry'")
    return str(level), actions, str(verify_timestamp)


def _check_overlap(identities: Sequence[TrustedIdentity], *, where: str) -> None:
    """Two subjects overlap when one's attributes are a subset of the other's (a certificate
    could then match both); the specification calls such a policy invalid."""
    subjects = [(i.text, set(i.subject)) for i in identities if i.subject]
    for index, (text, attributes) in enumerate(subjects):
        for other_text, other in subjects[index + 1 :]:
            if attributes <= other or other <= attributes:
                raise ConfigurationError(f"{where}: {text!r} and {other_text!r} overlap")


def _revocation(raw: object, *, where: str) -> RevocationSources:
    if raw is None:
        return RevocationSources()
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be an object")
    unknown = set(raw) - {"crls", "timeout_seconds"}
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)} (OCSP is not supported)")
    crls = raw.get("crls", [])
    if not isinstance(crls, list) or not all(isinstance(c, str) and c for c in crls):
        raise ConfigurationError(f"{where}.crls must be a list of file paths or http(s) URLs")
    for crl in crls:
        if "://" in crl and not crl.startswith(("http://", "https://")):
            raise ConfigurationError(f"{where}.crls: {crl!r}: only http(s) URLs and file paths")
    timeout = raw.get("timeout_seconds", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigurationError(f"{where}.timeout_seconds must be a positive number")
    return RevocationSources(tuple(crls), float(timeout))
