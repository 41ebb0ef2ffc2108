"""``OciRegistryClient`` against the real loopback ``docker-registry`` and, for behaviours a
healthy registry cannot show (500s, hangs, token challenges, lying digests), against tiny
loopback HTTP servers started by the test."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gatekeeper.domain.ports import EvidenceContext
from gatekeeper.domain.reference import Digest, parse_image_reference
from gatekeeper.errors import NotFoundError, UpstreamUnavailableError, VerificationError
from gatekeeper.registry import (
    DockerConfigCredentials,
    OciRegistryClient,
    RegistryClientSettings,
)
from gatekeeper.verify import SignatureEvidenceCollector, SignaturePolicySettings, TrustRoot
from tests.integration.cosign_fixtures import (
    cosign_binary,
    cosign_sign,
    generate_key_pair,
    push_image,
    registry_client,
    registry_host,
    unique_repository,
)

pytestmark = pytest.mark.integration

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


# -- the real registry -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host() -> str:
    return registry_host()


def test_tag_resolves_to_the_digest_skopeo_pushed(host: str, tmp_path: Path) -> None:
    repository = unique_repository()
    pushed = push_image(host, f"{repository}:1.0", "resolve", tmp_path)
    client = registry_client(host)

    reference = parse_image_reference(f"{host}/{repository}:1.0")
    digest = client.resolve_digest(reference)
    manifest = client.get_manifest(reference, digest)

    assert digest == pushed
    assert manifest.media_type == OCI_MANIFEST
    assert hashlib.sha256(manifest.content).hexdigest() == pushed.hex
    assert client.list_tags(reference) == ("1.0",)
    assert client.resolve(reference, EvidenceContext("test", None)) == pushed


def test_missing_tag_names_registry_and_reference(host: str) -> None:
    client = registry_client(host)
    reference = parse_image_reference(f"{host}/{unique_repository()}:nope")

    with pytest.raises(NotFoundError) as caught:
        client.resolve_digest(reference)

    assert caught.value.message == (
        f"registry {host}: image {reference.repository}:nope not found"
    )


def test_blob_larger_than_the_limit_is_refused(host: str, tmp_path: Path) -> None:
    repository = unique_repository()
    incompressible = os.urandom(4096).hex()  # skopeo compresses layers; stay above 1 KiB
    digest = push_image(host, f"{repository}:1.0", incompressible, tmp_path)
    client = registry_client(host, max_blob_bytes=1024)
    reference = parse_image_reference(f"{host}/{repository}:1.0")
    layer = client.get_manifest(reference, digest).layers[0]

    with pytest.raises(VerificationError) as caught:
        client.get_blob(reference, layer.digest, size=layer.size)

    assert caught.value.message == (
        f"registry {host}: blob {layer.digest} is {layer.size} bytes, more than the limit of 1024"
    )


def test_referrers_fall_back_to_the_tag_scheme(host: str, tmp_path: Path) -> None:
    repository = unique_repository()
    digest = push_image(host, f"{repository}:1.0", "referrers", tmp_path)
    client = registry_client(host)
    reference = parse_image_reference(f"{host}/{repository}:1.0")

    assert client.get_referrers(reference, digest).via == "none"


def _put(host: str, repository: str, tag: str, document: dict[str, object], media: str) -> Digest:
    content = json.dumps(document).encode()
    request = urllib.request.Request(
        f"http://{host}/v2/{repository}/manifests/{tag}", data=content, method="PUT",
        headers={"Content-Type": media},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
        assert answer.status == 201
    return Digest("sha256", hashlib.sha256(content).hexdigest())


def test_multi_arch_index_is_verified_at_the_digest_the_workload_names(
    host: str, tmp_path: Path
) -> None:
    cosign = cosign_binary("v2")
    repository = unique_repository()
    amd64 = push_image(host, f"{repository}:amd64", "amd64", tmp_path)
    arm64 = push_image(host, f"{repository}:arm64", "arm64", tmp_path)
    client = registry_client(host)
    reference = parse_image_reference(f"{host}/{repository}:amd64")
    sizes = {d: len(client.get_manifest(reference, d).content) for d in (amd64, arm64)}
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": str(d), "size": sizes[d],
             "platform": {"architecture": arch, "os": "linux"}}
            for d, arch in ((amd64, "amd64"), (arm64, "arm64"))
        ],
    }  # fmt: skip
    index_digest = _put(host, repository, "multi", index, OCI_INDEX)
    keys = generate_key_pair(cosign, tmp_path / "keys")
    cosign_sign(cosign, keys, f"{host}/{repository}@{index_digest}", tmp_path)
    settings = SignaturePolicySettings.from_mapping(
        {
            "authorities": [{"name": "release", "keys": [keys.public_pem], "tlog": False}],
            "images": [{"glob": f"{host}/**", "authorities": ["release"]}],
        }
    )
    collector = SignatureEvidenceCollector(settings, client, TrustRoot.none())
    multi = parse_image_reference(f"{host}/{repository}:multi")

    resolved = client.resolve_digest(multi)
    evidence = collector.collect(multi, resolved, EvidenceContext("test", None))
    platform_evidence = collector.collect(
        parse_image_reference(f"{host}/{repository}@{amd64}"), amd64, EvidenceContext("t", None)
    )

    assert resolved == index_digest
    assert client.get_manifest(multi, resolved).is_index
    assert evidence["status"] == "verified"
    # The signature covers the index, not each platform manifest.
    assert platform_evidence["reason"] == "no signature found"


# -- loopback servers for what a healthy registry never does -----------------------------------

Handler = Callable[[BaseHTTPRequestHandler], object]


class _Server:
    def __init__(self, handle: Handler) -> None:
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                owner.requests.append((self.command, self.path, dict(self.headers)))
                handle(self)

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], _Server]]:
    servers: list[_Server] = []

    def _start(handle: Handler) -> _Server:
        server = _Server(handle)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.close()


def _settings(server: _Server, **overrides: object) -> RegistryClientSettings:
    return RegistryClientSettings.from_mapping(
        {"hosts": [{"host": server.host, "plain_http": True}], "backoff_initial": 0.01,
         **overrides}
    )  # fmt: skip


def _client(server: _Server, **overrides: object) -> OciRegistryClient:
    return OciRegistryClient(_settings(server, **overrides))


def _answer(
    request: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str
) -> None:
    request.send_response(status)
    for name, value in headers.items():
        request.send_header(name.replace("_", "-"), value)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(body)


MANIFEST = json.dumps(
    {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
     "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest()}}
).encode()  # fmt: skip
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


def test_registry_answering_500_fails_after_retries_naming_registry(serve: Callable[[Handler], _Server]) -> None:  # noqa: ANN001
    server = serve(lambda request: _answer(request, 500, b"boom"))
    client = _client(server, max_retries=2)

    with pytest.raises(UpstreamUnavailableError) as caught:
        client.resolve_digest(parse_image_reference(f"{server.host}/app:1.2"))

    assert caught.value.message == (
        f"registry {server.host} answered 500 resolving app:1.2 (after 3 attempts)"
    )
    assert len(server.requests) == 3


def test_429_with_retry_after_is_retried(serve: Callable[[Handler], _Server]) -> None:  # noqa: ANN001
    answers = iter([429, 200])

    def handle(request: BaseHTTPRequestHandler) -> None:
        status = next(answers)
        if status == 429:
            _answer(request, 429, Retry_After="0")
        else:
            _answer(request, 200, MANIFEST, Content_Type=OCI_MANIFEST,
                    Docker_Content_Digest=MANIFEST_DIGEST)  # fmt: skip

    server = serve(handle)

    digest = _client(server).resolve_digest(parse_image_reference(f"{server.host}/app:1.2"))

    assert str(digest) == MANIFEST_DIGEST


def test_hanging_registry_ends_within_the_budget(serve: Callable[[Handler], _Server]) -> None:  # noqa: ANN001
    release = threading.Event()

    def handle(request: BaseHTTPRequestHandler) -> None:
        release.wait(10)

    server = serve(handle)
    round_trips: list[tuple[str, str]] = []
    client = OciRegistryClient(
        _settings(server, read_timeout=30), on_request=lambda *trip: round_trips.append(trip)
    )
    started = time.monotonic()

    try:
        with pytest.raises(UpstreamUnavailableError) as caught:
            client.resolve_digest(
                parse_image_reference(f"{server.host}/app:1.2"), deadline=started + 0.5
            )
    finally:
        release.set()
    elapsed = time.monotonic() - started

    assert elapsed < 1.0
    # The HEAD is sent and times out at the deadline. On a starved machine this thread can
    # lose the whole 0.5 s before sending it; the user is then told the budget was spent
    # before the lookup (nothing was asked of the registry), never that a slot was busy.
    expected = {
        (("head", "timeout"),):
            f"registry {server.host} timed out resolving app:1.2; "
            "no time left in the budget to retry",
        (): f"registry {server.host}: time budget exhausted before resolving app:1.2",
    }  # fmt: skip
    assert caught.value.message == expected[tuple(round_trips)]


class _Clock:
    """A ``monotonic`` for the client that moves only when told: the deadline races below
    happen on every run, not only on a loaded machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_spent_before_the_lookup_is_not_called_a_busy_registry(serve: Callable[[Handler], _Server]) -> None:  # noqa: ANN001
    server = serve(lambda request: _answer(request, 500))
    clock = _Clock()
    client = OciRegistryClient(_settings(server), monotonic=clock)
    deadline = clock.now + 0.5
    clock.now += 0.6  # the caller's thread was descheduled for longer than its budget

    with pytest.raises(UpstreamUnavailableError) as caught:
        client.resolve_digest(parse_image_reference(f"{server.host}/app:1.2"), deadline=deadline)

    assert caught.value.message == (
        f"registry {server.host}: time budget exhausted before resolving app:1.2"
    )
    assert server.requests == []


def test_back_off_overrunning_the_deadline_reports_what_the_registry_did(serve: Callable[[Handler], _Server]) -> None:  # noqa: ANN001
    server = serve(lambda request: _answer(request, 503))
    clock = _Clock()

    def oversleep(seconds: float) -> None:
        clock.now += seconds + 1.0  # a loaded machine wakes the thread up late

    client = OciRegistryClient(_settings(server), monotonic=clock, sleep=oversleep)

    with pytest.raises(UpstreamUnavailableError) as caught:
        client.resolve_digest(
            parse_image_reference(f"{server.host}/app:1.2"), deadline=clock.now + 0.5
        )

    assert caught.value.message == (
        f"registry {server.host} answered 503 resolving app:1.2; "
        "no time left in the budget to retry"
    )
    assert caught.value.context["attempts"] == 1
    assert len(server.requests) == 1


def test_hanging_registry_through_the_collector_fails_in_budget(serve: Callable[[Handler], _Server]) -> None:  # noqa: ANN001
    release = threading.Event()
    server = serve(lambda request: release.wait(10))
    client = _client(server, read_timeout=30)
    settings = SignaturePolicySettings.from_mapping(
        {
            "authorities": [{"name": "release", "keys": [_any_public_key()], "tlog": False}],
            "images": [{"glob": "**", "authorities": ["release"]}],
        }
    )
    collector = SignatureEvidenceCollector(settings, client, TrustRoot.none())
    reference = parse_image_reference(f"{server.host}/app@{MANIFEST_DIGEST}")
    started = time.monotonic()

    try:
        with pytest.raises(UpstreamUnavailableError) as caught:
            collector.collect(
                reference, reference.digest, EvidenceContext("prod", None, deadline=started + 0.5)
            )
    finally:
        release.set()

    assert time.monotonic() - started < 1.0
    assert caught.value.message.startswith(f"registry {server.host}")
    assert "app:sha256-" in caught.value.message  # names the .sig lookup that was cut off


def _any_public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_bearer_token_challenge_with_docker_config_credentials(serve: Callable[[Handler], _Server]) -> None:  # noqa: ANN001
    expected_basic = "Basic " + base64.b64encode(b"robot:s3cret").decode()

    def handle(request: BaseHTTPRequestHandler) -> None:
        if request.path.startswith("/token"):
            if request.headers.get("Authorization") != expected_basic:
                _answer(request, 401)
                return
            assert "scope=repository%3Aapp%3Apull" in request.path
            _answer(request, 200, json.dumps({"token": "t0k3n", "expires_in": 300}).encode())
            return
        if request.headers.get("Authorization") != "Bearer t0k3n":
            realm = f"http://{server.host}/token"
            _answer(request, 401, WWW_Authenticate=(
                f'Bearer realm="{realm}",service="test",scope="repository:app:pull"'))  # fmt: skip
            return
        _answer(request, 200, MANIFEST, Content_Type=OCI_MANIFEST,
                Docker_Content_Digest=MANIFEST_DIGEST)  # fmt: skip

    server = serve(handle)
    config = {"auths": {server.host: {"auth": base64.b64encode(b"robot:s3cret").decode()}}}
    client = OciRegistryClient(
        RegistryClientSettings.from_mapping({"hosts": [{"host": server.host,
                                                         "plain_http": True}]}),
        credentials=DockerConfigCredentials.from_json(json.dumps(config)),
    )  # fmt: skip
    reference = parse_image_reference(f"{server.host}/app:1.2")

    first = client.resolve_digest(reference)
    second = client.get_manifest(reference, first)

    assert str(first) == MANIFEST_DIGEST
    assert second.digest == first
    token_requests = [r for r in server.requests if r[1].startswith("/token")]
    assert len(token_requests) == 1  # cached for the second request


def test_basic_challenge_without_credentials_is_denied(serve: Callable[[Handler], _Server]) -> None:  # noqa: ANN001
    server = serve(lambda request: _answer(request, 401, WWW_Authenticate='Basic realm="x"'))

    with pytest.raises(UpstreamUnavailableError) as caught:
        _client(server).resolve_digest(parse_image_reference(f"{server.host}/app:1.2"))

    assert caught.value.message == f"registry {server.host} denied access (401) resolving app:1.2"


def test_manifest_that_does_not_hash_to_its_digest_is_refused(serve: Callable[[Handler], _Server]) -> None:  # noqa: ANN001
    lie = "sha256:" + "0" * 64

    def handle(request: BaseHTTPRequestHandler) -> None:
        if request.command == "HEAD":
            _answer(request, 405)
            return
        _answer(request, 200, MANIFEST, Content_Type=OCI_MANIFEST, Docker_Content_Digest=lie)

    server = serve(handle)

    with pytest.raises(VerificationError) as caught:
        _client(server).resolve_digest(parse_image_reference(f"{server.host}/app:1.2"))

    assert caught.value.message == (
        f"registry {server.host}: manifest fetching manifest app:1.2 hashes to "
        f"{MANIFEST_DIGEST}, not to {lie}"
    )


def test_registry_answering_500_denies_the_evaluation_with_the_reason(serve: Callable[[Handler], _Server]) -> None:  # noqa: ANN001
    from gatekeeper.domain import EvaluationRequest, Verdict
    from gatekeeper.domain.decision import Source
    from gatekeeper.service import EvaluationService
    from tests.fakes import FakeAuditLog, FakePolicyEngine

    server = serve(lambda request: _answer(request, 500, b"boom"))
    client = _client(server, max_retries=1)
    settings = SignaturePolicySettings.from_mapping(
        {
            "authorities": [{"name": "release", "keys": [_any_public_key()], "tlog": False}],
            "images": [{"glob": "**", "authorities": ["release"]}],
        }
    )
    service = EvaluationService(
        policy_engine=FakePolicyEngine(),
        audit_log=FakeAuditLog(),
        collectors=[SignatureEvidenceCollector(settings, client, TrustRoot.none())],
        digest_resolver=client,
    )
    image = f"{server.host}/app:1.2"
    started = time.monotonic()

    decision = service.evaluate(
        EvaluationRequest(
            images=(parse_image_reference(image),), source=Source.ADMISSION, environment="prod"
        ),
        deadline=started + 2,
    )

    assert decision.verdict is Verdict.DENY
    assert [(v.policy, v.image, v.message) for v in decision.violations] == [
        (
            "gatekeeper.evidence",
            image,
            f"digest not resolved: registry {server.host} answered 500 resolving app:1.2 "
            "(after 2 attempts)",
        ),
        (
            "gatekeeper.evidence",
            image,
            f"signatures evidence not gathered: registry {server.host} answered 500 "
            "resolving app:1.2 (after 2 attempts)",
        ),
    ]
    assert time.monotonic() - started < 2
