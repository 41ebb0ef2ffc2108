"""The serving certificate of ``tls.mode=generated``, kept in Secrets by the API (never in a
rendered manifest, so ``helm template`` stays stable).

Two Secrets: ``<tls>`` (``kubernetes.io/tls``: ``tls.crt``, ``tls.key`` and ``ca.crt``, mounted
by the gatekeeper) and ``<ca>`` (the CA and its key, mounted by nobody). ``ensure`` creates them
when missing and renews what expires within the window: a certificate from the same CA (the
webhooks' caBundle is unchanged), or a new CA, which is first added to the caBundle of the
existing webhook configurations next to the old one, so the API server trusts the old and the
new certificate while the Pods pick up the new one.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gatekeeper.errors import InvalidInputError
from gatekeeper.kube.client import KubeClient
from gatekeeper.kube.webhooks import set_ca_bundle

__all__ = ["CertificatePlan", "EnsureResult", "ensure", "issue"]


@dataclass(frozen=True)
class CertificatePlan:
    namespace: str
    tls_secret: str
    ca_secret: str
    dns_names: tuple[str, ...]
    ca_days: int
    certificate_days: int
    renew_before_days: int
    webhook_name: str | None = None

    def check(self) -> None:
        if not self.dns_names:
            raise InvalidInputError("certs ensure needs at least one --dns-name")
        for option, value in (("--ca-days", self.ca_days),
                              ("--certificate-days", self.certificate_days)):
            if value <= self.renew_before_days:
                raise InvalidInputError(
                    f"{option} ({value}) must exceed --renew-before-days "
                    f"({self.renew_before_days}): it would be renewed at every run")
        if self.renew_before_days < 0:
            raise InvalidInputError("--renew-before-days must not be negative")


@dataclass
class EnsureResult:
    ca: str = "kept"           # kept | created | rotated
    certificate: str = "kept"  # kept | created | renewed
    not_after: datetime | None = None
    webhooks_updated: list[str] = field(default_factory=list)


def _pem_certs(data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def _decode(secret: dict[str, Any] | None, key: str) -> bytes:
    if not secret:
        return b""
    try:
        return base64.b64decode((secret.get("data") or {}).get(key, ""))
    except ValueError:
        return b""


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _new_ca(common_name: str, now: datetime, days: int) -> tuple[x509.Certificate, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return certificate, pem


def _new_leaf(ca: x509.Certificate, ca_key_pem: bytes, dns_names: tuple[str, ...],
              now: datetime, days: int) -> tuple[bytes, bytes]:
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + timedelta(days=days), ca.not_valid_after_utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_names[0])).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256()))
    return (certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def issue(dns_names: tuple[str, ...], now: datetime, *, ca_days: int,
          certificate_days: int) -> dict[str, bytes]:
    """A fresh CA and serving certificate as the ``<tls>`` Secret holds them."""
    ca, ca_key = _new_ca(f"{dns_names[0]}-ca", now, ca_days)
    leaf, key = _new_leaf(ca, ca_key, dns_names, now, certificate_days)
    return {"ca.crt": ca.public_bytes(serialization.Encoding.PEM), "tls.crt": leaf,
            "tls.key": key}


def _leaf_usable(leaf_pem: bytes, ca: x509.Certificate, plan: CertificatePlan,
                 limit: datetime) -> bool:
    leaves = _pem_certs(leaf_pem)
    if not leaves:
        return False
    leaf = leaves[0]
    if leaf.issuer != ca.subject or leaf.not_valid_after_utc <= limit:
        return False
    try:
        leaf.verify_directly_issued_by(ca)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return set(names.get_values_for_type(x509.DNSName)) == set(plan.dns_names)


def _secret(plan: CertificatePlan, name: str, kind: str, data: dict[str, bytes],
            current: dict[str, Any] | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": plan.namespace,
                                "labels": {"app.kubernetes.io/managed-by": "gatekeeper-certs"}}
    if current is not None:
        metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        metadata["labels"] = {**(current["metadata"].get("labels") or {}), **metadata["labels"]}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": kind,
            "data": {k: base64.b64encode(v).decode("ascii") for k, v in data.items()}}


def _write(client: KubeClient, plan: CertificatePlan, name: str, kind: str,
           data: dict[str, bytes], current: dict[str, Any] | None) -> None:
    collection = f"/api/v1/namespaces/{plan.namespace}/secrets"
    body = _secret(plan, name, kind, data, current)
    if current is None:
        client.create(collection, body)
    else:
        client.replace(f"{collection}/{name}", body)


def ensure(client: KubeClient, plan: CertificatePlan, now: datetime) -> EnsureResult:
    """Create or renew the CA and the serving certificate; see the module documentation."""
    plan.check()
    result = EnsureResult()
    limit = now + timedelta(days=plan.renew_before_days)
    secrets = f"/api/v1/namespaces/{plan.namespace}/secrets"
    ca_current = client.get(f"{secrets}/{plan.ca_secret}")
    tls_current = client.get(f"{secrets}/{plan.tls_secret}")

    cas = _pem_certs(_decode(ca_current, "ca.crt"))
    ca_key = _decode(ca_current, "ca.key")
    ca = cas[0] if cas and ca_key else None
    previous: x509.Certificate | None = None
    if ca is None or ca.not_valid_after_utc <= limit:
        result.ca = "created" if ca is None else "rotated"
        previous = ca if ca is not None and ca.not_valid_after_utc > now else None
        ca, ca_key = _new_ca(f"{plan.dns_names[0]}-ca", now, plan.ca_days)
    else:
        # A CA rotated at an earlier run stays trusted until it expires.
        previous = next((c for c in _pem_certs(_decode(tls_current, "ca.crt"))
                         if c != ca and c.not_valid_after_utc > now), None)
    bundle = b"".join(c.public_bytes(serialization.Encoding.PEM)
                      for c in (ca, previous) if c is not None)

    if result.ca != "kept" and plan.webhook_name:
        # Trust the new CA before any Pod can serve a certificate it signed.
        updated = set_ca_bundle(client, plan.webhook_name, bundle)
        result.webhooks_updated = [f"{r.kind}/{r.name}" for r in updated]
    if result.ca != "kept":
        _write(client, plan, plan.ca_secret, "Opaque",
               {"ca.crt": ca.public_bytes(serialization.Encoding.PEM), "ca.key": ca_key},
               ca_current)

    leaf_pem, leaf_key = _decode(tls_current, "tls.crt"), _decode(tls_current, "tls.key")
    if (result.ca != "kept" or not leaf_key
            or not _leaf_usable(leaf_pem, ca, plan, limit)):
        result.certificate = "created" if tls_current is None else "renewed"
        leaf_pem, leaf_key = _new_leaf(ca, ca_key, plan.dns_names, now, plan.certificate_days)
    if result.certificate != "kept" or _decode(tls_current, "ca.crt") != bundle:
        _write(client, plan, plan.tls_secret, "kubernetes.io/tls",
               {"ca.crt": bundle, "tls.crt": leaf_pem, "tls.key": leaf_key}, tls_current)
    result.not_after = _pem_certs(leaf_pem)[0].not_valid_after_utc
    return result
