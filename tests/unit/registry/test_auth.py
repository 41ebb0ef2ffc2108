"""Registry credentials: challenges, docker config.json, ECR tokens cached until they expire."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.registry import (
    BasicCredentials,
    ChainedCredentials,
    DockerConfigCredentials,
    EcrCredentials,
    StaticCredentials,
    is_ecr_host,
)
from gatekeeper.registry.auth import parse_www_authenticate


def test_parse_bearer_challenge() -> None:
    scheme, params = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull"'
    )

    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/nginx:pull",
    }


def test_parse_basic_challenge_and_escapes() -> None:
    assert parse_www_authenticate('Basic realm="a \\"quoted\\" realm"') == (
        "basic",
        {"realm": 'a "quoted" realm'},
    )


def test_docker_config_auth_and_username_password() -> None:
    document = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
            "ghcr.io": {"username": "bot", "password": "tok"},
            "quay.io": {"identitytoken": "ignored"},
        },
        "credHelpers": {"gcr.io": "gcloud"},
    }
    credentials = DockerConfigCredentials.from_json(json.dumps(document))

    assert credentials.credentials_for("docker.io") == BasicCredentials("hub", "pw")
    assert credentials.credentials_for("GHCR.io") == BasicCredentials("bot", "tok")
    assert credentials.credentials_for("quay.io") is None
    assert credentials.credentials_for("gcr.io") is None  # helpers are never executed


def test_docker_config_errors_name_the_entry() -> None:
    with pytest.raises(ConfigurationError, match=r"auths\['ghcr.io'\].auth is not base64"):
        DockerConfigCredentials({"auths": {"ghcr.io": {"auth": "***"}}})
    with pytest.raises(ConfigurationError, match="docker config is not valid JSON"):
        DockerConfigCredentials.from_json("{")


def test_password_is_not_in_the_repr() -> None:
    assert "pw" not in repr(BasicCredentials("user", "pw"))


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", True),
        ("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com", True),
        ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", True),
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.io", False),
        ("ghcr.io", False),
    ],
)
def test_ecr_hosts(host: str, expected: bool) -> None:
    assert is_ecr_host(host) is expected


class FakeEcrClient:
    """Implements the one boto3 ``ecr`` method the provider calls."""

    def __init__(self, expires_at: datetime) -> None:
        self.calls: list[list[str]] = []
        self.expires_at = expires_at

    def get_authorization_token(self, registryIds: list[str]) -> dict[str, Any]:  # noqa: N803
        self.calls.append(registryIds)
        token = base64.b64encode(f"AWS:secret-{len(self.calls)}".encode()).decode()
        return {"authorizationData": [{"authorizationToken": token, "expiresAt": self.expires_at}]}


def test_ecr_token_is_cached_until_it_expires() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC).timestamp()]
    client = FakeEcrClient(datetime(2026, 1, 1, 12, tzinfo=UTC))
    regions: list[str] = []

    def factory(region: str) -> FakeEcrClient:
        regions.append(region)
        return client

    provider = EcrCredentials(factory, refresh_margin=300, wall_clock=lambda: now[0])
    host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"

    first = provider.credentials_for(host)
    second = provider.credentials_for(host)
    now[0] += 12 * 3600 - 200  # inside the refresh margin
    third = provider.credentials_for(host)

    assert first == second == BasicCredentials("AWS", "secret-1")
    assert third == BasicCredentials("AWS", "secret-2")
    assert client.calls == [["123456789012"], ["123456789012"]]
    assert regions == ["eu-west-1", "eu-west-1"]
    assert provider.credentials_for("ghcr.io") is None


def test_chained_credentials_first_match_wins() -> None:
    chain = ChainedCredentials(
        [StaticCredentials({"ghcr.io": BasicCredentials("a", "1")}),
         StaticCredentials({"ghcr.io": BasicCredentials("b", "2"), "quay.io": BasicCredentials("c", "3")})]
    )  # fmt: skip

    assert chain.credentials_for("ghcr.io") == BasicCredentials("a", "1")
    assert chain.credentials_for("quay.io") == BasicCredentials("c", "3")
    assert chain.credentials_for("docker.io") is None
