"""Authorities and image policies: who may sign what, as validated frozen configuration.

The security team names *authorities* (trusted keys, keyless identities with their OIDC
issuer, or Notation trust stores and trust policies) and attaches them to image globs with an
m-of-n threshold. Images no glob matches follow ``unmatched`` (``deny`` unless configured
otherwise). ``from_mapping`` validates everything and
says which field is wrong; an empty authority list is an error, never "trust nothing silently".

Example (YAML, under the lead's settings key ``signatures``)::

    authorities:
      - name: release
        keys: ["-----BEGIN PUBLIC KEY-----\\n..."]
        tlog: false              # explicit: this key signs offline, no Rekor entry
      - name: ci
        keyless:
          - issuer: https://token.actions.githubusercontent.com
            subject_regex: ^https://github\\.com/acme/.+/\\.github/workflows/release\\.yml@refs/tags/v.*$
      - name: wabbit             # Notation (Notary Project) / AWS Signer, see notation_policy.py
        notation:
          trust_store: {"ca:wabbit-networks": ["-----BEGIN CERTIFICATE-----\\n..."]}
          trust_policy: {version: "1.0", trustPolicies: [...]}   # trustpolicy.json as is
    images:
      - glob: registry.acme.io/prod/**
        authorities: [release, ci]
        threshold: 2
    unmatched: deny
    version: 2                   # new configurations: match_docker_reference defaults to true

``match_docker_reference`` (per authority): a simple-signing payload's
``critical.identity.docker-reference`` must name the image's repository, so a signature copied
to another repository is refused (containers/image ``matchRepository``). It defaults to ``true``
with ``version: 2`` and to ``false`` without a version (configurations written before the option
existed keep their behaviour; the collector logs a warning naming each such authority).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from gatekeeper.errors import ConfigurationError
from gatekeeper.verify.keys import VerificationKey, load_public_key

if TYPE_CHECKING:  # imported when an authority names a Notation trust policy
    from gatekeeper.verify.notation_policy import NotationTrust

__all__ = [
    "Authority",
    "ImagePolicy",
    "KeylessIdentity",
    "SignaturePolicySettings",
    "compile_image_glob",
]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_MAX_REGEX_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class KeylessIdentity:
    """A Fulcio certificate identity: issuer and subject (SAN), each exact or a full-match regex."""

    issuer: str | None = None
    issuer_regex: str | None = None
    subject: str | None = None
    subject_regex: str | None = None

    def matches(self, issuer: str | None, subjects: Sequence[str]) -> bool:
        if issuer is None:
            return False
        if self.issuer is not None and issuer != self.issuer:
            return False
        if self.issuer_regex is not None and not re.fullmatch(self.issuer_regex, issuer):
            return False
        for subject in subjects:
            if self.subject is not None and subject == self.subject:
                return True
            if self.subject_regex is not None and re.fullmatch(self.subject_regex, subject):
                return True
        return False

    def describe(self) -> dict[str, str]:
        return {
            key: value
            for key, value in (
                ("issuer", self.issuer),
                ("issuer_regex", self.issuer_regex),
                ("subject", self.subject),
                ("subject_regex", self.subject_regex),
            )
            if value is not None
        }

    @classmethod
    def from_mapping(cls, raw: object, *, where: str) -> KeylessIdentity:
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"{where} must be an object")
        unknown = set(raw) - {"issuer", "issuer_regex", "subject", "subject_regex"}
        if unknown:
            raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")
        values: dict[str, str | None] = {}
        for key in ("issuer", "issuer_regex", "subject", "subject_regex"):
            value = raw.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"{where}.{key} must be a non-empty string")
            if value is not None and key.endswith("_regex"):
                if len(value) > _MAX_REGEX_LENGTH:
                    raise ConfigurationError(f"{where}.{key} is too long")
                try:
                    re.compile(value)
                except re.error as exc:
                    raise ConfigurationError(f"{where}.{key} is not a regular expression") from exc
            values[key] = value
        for part in ("issuer", "subject"):
            exact, regex = values[part], values[f"{part}_regex"]
            if (exact is None) == (regex is None):
                raise ConfigurationError(f"{where}: give exactly one of {part} or {part}_regex")
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Authority:
    """A named source of trust: public keys and/or keyless identities.

    ``tlog`` requires a transparency-log entry checked against the trusted root's Rekor keys;
    it is ``True`` unless the configuration says ``tlog: false`` explicitly.
    """

    name: str
    keys: tuple[VerificationKey, ...] = ()
    identities: tuple[KeylessIdentity, ...] = ()
    tlog: bool = True
    #: The simple-signing ``docker-reference`` must name the image's repository.
    match_docker_reference: bool = True
    #: ``match_docker_reference`` came from the version default, not from the authority.
    match_docker_reference_defaulted: bool = False
    #: A Notation authority (trust stores + trust policy) instead of cosign keys/identities.
    notation: NotationTrust | None = None

    @classmethod
    def from_mapping(
        cls, raw: object, *, where: str, match_docker_reference_default: bool = True
    ) -> Authority:
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"{where} must be an object")
        unknown = set(raw) - {"name", "keys", "keyless", "tlog", "match_docker_reference",
                              "notation"}
        if unknown:
            raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigurationError(
                f"{where}.name must be a lowercase name ([a-z0-9][a-z0-9_.-]*, <= 63 characters)"
            )
        if "notation" in raw:
            if set(raw) & {"keys", "keyless", "tlog", "match_docker_reference"}:
                raise ConfigurationError(
                    f"{where}: a notation authority takes no keys, keyless or tlog"
                )
            from gatekeeper.verify.notation_policy import NotationTrust

            return cls(name, notation=NotationTrust.from_mapping(raw["notation"],
                                                                 where=f"{where}.notation"))
        keys_raw = raw.get("keys", [])
        if not isinstance(keys_raw, list) or not all(isinstance(k, str) for k in keys_raw):
            raise ConfigurationError(f"{where}.keys must be a list of PEM public keys")
        keys = tuple(
            load_public_key(pem, where=f"{where}.keys[{i}]") for i, pem in enumerate(keys_raw)
        )
        keyless_raw = raw.get("keyless", [])
        if not isinstance(keyless_raw, list):
            raise ConfigurationError(f"{where}.keyless must be a list of identities")
        identities = tuple(
            KeylessIdentity.from_mapping(item, where=f"{where}.keyless[{i}]")
            for i, item in enumerate(keyless_raw)
        )
        if not keys and not identities:
            raise ConfigurationError(f"{where}: an authority needs keys or keyless identities")
        tlog = raw.get("tlog", True)
        if not isinstance(tlog, bool):
            raise ConfigurationError(f"{where}.tlog must be true or false")
        if identities and not tlog:
            # Keyless certificates live ten minutes; only a log entry proves when they signed.
            raise ConfigurationError(f"{where}: keyless identities need tlog: true")
        match = raw.get("match_docker_reference", match_docker_reference_default)
        if not isinstance(match, bool):
            raise ConfigurationError(f"{where}.match_docker_reference must be true or false")
        defaulted = "match_docker_reference" not in raw
        return cls(name, keys, identities, tlog, match, defaulted)

    def fingerprint(self) -> dict[str, Any]:
        if self.notation is not None:
            return {"name": self.name, "notation": self.notation.fingerprint()}
        return {
            "name": self.name,
            "keys": sorted(k.key_id for k in self.keys),
            "keyless": [i.describe() for i in self.identities],
            "tlog": self.tlog,
            "match_docker_reference": self.match_docker_reference,
        }


def compile_image_glob(glob: str) -> re.Pattern[str]:
    """``*`` matches within one path component, ``**`` across components, ``?`` one character.

    Globs match the normalised ``registry/repository`` (no tag, no digest), so
    ``registry.acme.io/*`` never matches ``registry.acme.io.evil.io/app``.
    """
    out = []
    i = 0
    while i < len(glob):
        char = glob[i]
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("^" + "".join(out) + "$")


@dataclass(frozen=True, slots=True)
class ImagePolicy:
    glob: str
    authorities: tuple[str, ...]
    threshold: int
    pattern: re.Pattern[str]

    def matches(self, name: str) -> bool:
        return self.pattern.match(name) is not None


@dataclass(frozen=True, slots=True)
class SignaturePolicySettings:
    """Everything the signature verifier needs from configuration.

    ``trusted_root`` is ``"public-good"`` (the root shipped with sigstore-python), ``"none"``
    (keys only, no tlog) or a path to a ``trusted_root.json`` that ``config.py`` reads.
    """

    authorities: tuple[Authority, ...]
    images: tuple[ImagePolicy, ...]
    unmatched: Literal["deny", "allow"] = "deny"
    cache_ttl_seconds: float = 300.0
    negative_cache_ttl_seconds: float = 30.0
    cache_max_entries: int = 10_000
    max_payload_bytes: int = 256 * 1024
    max_predicate_bytes: int = 512 * 1024
    max_materials: int = 32
    #: 1 (no ``version`` key): written before ``match_docker_reference``; 2: current.
    version: int = 1

    def authority(self, name: str) -> Authority:
        for authority in self.authorities:
            if authority.name == name:
                return authority
        raise KeyError(name)

    def policy_for(self, image_name: str) -> ImagePolicy | None:
        """The first image policy whose glob matches ``registry/repository``."""
        for policy in self.images:
            if policy.matches(image_name):
                return policy
        return None

    def config_hash(self) -> str:
        """Stable hash of the trust configuration: part of every cache key."""
        document = {
            "authorities": [a.fingerprint() for a in self.authorities],
            "images": [[p.glob, list(p.authorities), p.threshold] for p in self.images],
            "unmatched": self.unmatched,
            "limits": [self.max_payload_bytes, self.max_predicate_bytes, self.max_materials],
        }
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_mapping(cls, raw: object, *, where: str = "signatures") -> SignaturePolicySettings:
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"{where} must be an object")
        unknown = set(raw) - {
            "authorities", "images", "unmatched", "cache_ttl_seconds",
            "negative_cache_ttl_seconds", "cache_max_entries", "max_payload_bytes",
            "max_predicate_bytes", "max_materials", "version",
        }  # fmt: skip
        if unknown:
            raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")
        version = raw.get("version", 1)
        if isinstance(version, bool) or version not in (1, 2):
            raise ConfigurationError(f"{where}.version must be 1 or 2")
        authorities_raw = raw.get("authorities")
        if not isinstance(authorities_raw, list) or not authorities_raw:
            raise ConfigurationError(f"{where}.authorities must be a non-empty list")
        authorities = tuple(
            Authority.from_mapping(
                item, where=f"{where}.authorities[{i}]",
                match_docker_reference_default=version >= 2,
            )
            for i, item in enumerate(authorities_raw)
        )  # fmt: skip
        names = [a.name for a in authorities]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigurationError(f"{where}.authorities: duplicate names {duplicates}")
        images_raw = raw.get("images")
        if not isinstance(images_raw, list) or not images_raw:
            raise ConfigurationError(f"{where}.images must be a non-empty list")
        images = tuple(
            _image_policy(item, set(names), where=f"{where}.images[{i}]")
            for i, item in enumerate(images_raw)
        )
        unmatched = raw.get("unmatched", "deny")
        if unmatched not in ("deny", "allow"):
            raise ConfigurationError(f"{where}.unmatched must be 'deny' or 'allow'")
        defaults = cls((), ())
        return cls(
            authorities=authorities,
            images=images,
            unmatched=unmatched,
            cache_ttl_seconds=_positive(
                raw, "cache_ttl_seconds", defaults.cache_ttl_seconds, where
            ),
            negative_cache_ttl_seconds=_positive(
                raw, "negative_cache_ttl_seconds", defaults.negative_cache_ttl_seconds, where
            ),
            cache_max_entries=int(
                _positive(raw, "cache_max_entries", defaults.cache_max_entries, where)
            ),
            max_payload_bytes=int(
                _positive(raw, "max_payload_bytes", defaults.max_payload_bytes, where)
            ),
            max_predicate_bytes=int(
                _positive(raw, "max_predicate_bytes", defaults.max_predicate_bytes, where)
            ),
            max_materials=int(_positive(raw, "max_materials", defaults.max_materials, where)),
            version=int(version),
        )


def _positive(raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigurationError(f"{where}.{key} must be a non-negative number")
    return float(value)


def _image_policy(raw: object, known: set[str], *, where: str) -> ImagePolicy:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be an object")
    unknown = set(raw) - {"glob", "authorities", "threshold"}
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")
    glob = raw.get("glob")
    if not isinstance(glob, str) or not glob or any(c.isspace() for c in glob):
        raise ConfigurationError(f"{where}.glob must be a non-empty glob without spaces")
    if "@" in glob or (":" in glob.rsplit("/", 1)[-1] and "/" in glob):
        raise ConfigurationError(f"{where}.glob matches registry/repository: no tag or digest")
    names = raw.get("authorities")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigurationError(f"{where}.authorities must be a non-empty list of names")
    missing = sorted(set(names) - known)
    if missing:
        raise ConfigurationError(f"{where}.authorities names unknown authorities {missing}")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{where}.authorities names an authority twice")
    threshold = raw.get("threshold", 1)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ConfigurationError(f"{where}.threshold must be an integer >= 1")
    if threshold > len(names):
        raise ConfigurationError(
            f"{where}.threshold {threshold} is more than its {len(names)} authorities"
        )
    return ImagePolicy(glob, tuple(names), threshold, compile_image_glob(glob))
