"""Per-registry TLS: a loopback HTTPS registry whose certificate comes from a private CA."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import logging
import ssl
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gatekeeper.domain.reference import parse_image_reference
from gatekeeper.errors import ConfigurationError, UpstreamUnavailableError
from gatekeeper.registry import OciRegistryClient, RegistryClientSettings
from tests.helpers.net import serving_in_thread

pytestmark = pytest.mark.integration

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "layers": []}).encode()  # fmt: skip
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_name: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatekeeper test CA")])
    ca = _certificate("gatekeeper test CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 - http.server API
            self.send_response(200)
            self.send_header("Docker-Content-Digest", DIGEST)
            self.send_header("Content-Length", str(len(MANIFEST)))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    with serving_in_thread(httpd):
        yield f"127.0.0.1:{httpd.server_address[1]}", ca_file


def _client(host: str, **host_settings: object) -> OciRegistryClient:
    return OciRegistryClient(
        RegistryClientSettings.from_mapping(
            {"hosts": [{"host": host, **host_settings}], "max_retries": 0}
        )
    )


def test_ca_bundle_of_the_registry_is_trusted(tls_registry: tuple[str, Path]) -> None:
    host, ca_file = tls_registry

    digest = _client(host, ca_bundle=str(ca_file)).resolve_digest(
        parse_image_reference(f"{host}/app:1.0")
    )

    assert str(digest) == DIGEST


def test_the_ca_bundle_is_loaded_once_per_host(
    tls_registry: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's TLS context is built at its first https connection and kept: the server
    closes every connection (HTTP/1.0), and the bundle is still read once."""
    host, ca_file = tls_registry
    loaded: list[object] = []
    original = ssl.SSLContext.load_verify_locations

    def counting(context: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loaded.append(kwargs.get("cafile", args[0] if args else None))
        original(context, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    client = _client(host, ca_bundle=str(ca_file))
    assert loaded == []

    digests = {str(client.resolve_digest(parse_image_reference(f"{host}/app:1.0")))
               for _ in range(3)}  # fmt: skip

    assert digests == {DIGEST}
    assert loaded == [str(ca_file)]


def test_unknown_ca_is_refused_naming_the_registry(tls_registry: tuple[str, Path]) -> None:
    host, _ = tls_registry

    with pytest.raises(UpstreamUnavailableError) as caught:
        _client(host).resolve_digest(parse_image_reference(f"{host}/app:1.0"))

    assert caught.value.message == (
        f"registry {host} unreachable (ConnectError) resolving app:1.0 (after 1 attempts)"
    )


def test_insecure_is_named_and_logged_on_every_use(
    tls_registry: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    host, _ = tls_registry
    client = _client(host, insecure_skip_tls_verify=True)

    with caplog.at_level(logging.WARNING, logger="gatekeeper.registry.client"):
        client.resolve_digest(parse_image_reference(f"{host}/app:1.0"))
        client.resolve_digest(parse_image_reference(f"{host}/app:1.0"))

    warnings = [r.getMessage() for r in caplog.records]
    assert (
        warnings
        == [f"registry {host}: TLS verification is DISABLED (insecure_skip_tls_verify)"] * 2
    )


def test_missing_ca_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    client = _client("127.0.0.1:1", ca_bundle=str(tmp_path / "absent.pem"))

    with pytest.raises(ConfigurationError, match="CA bundle .* cannot be loaded"):
        client.resolve_digest(parse_image_reference("127.0.0.1:1/app:1.0"))
