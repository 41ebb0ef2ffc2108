"""ECR authorization tokens through boto3 against ``moto_server`` (GATEKEEPER_TEST_MOTO_URL)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from gatekeeper.errors import UpstreamUnavailableError
from gatekeeper.registry import EcrCredentials

pytestmark = pytest.mark.integration

HOST = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"


def _factory(url: str, created: list[str]) -> Callable[[str], Any]:
    def factory(region: str) -> Any:  # a boto3 ECR client (boto3 is untyped here)
        created.append(region)
        return boto3.client(
            "ecr", region_name=region, endpoint_url=url,
            aws_access_key_id="testing", aws_secret_access_key="testing",  # noqa: S106
        )  # fmt: skip

    return factory


def test_token_from_ecr_is_cached_until_its_expiry(moto_url: str) -> None:
    # moto answers expiresAt = 2015-01-01T00:00Z; the provider's wall clock is set around it.
    expiry = datetime(2015, 1, 1, tzinfo=UTC).timestamp()
    now = [expiry - 3600]
    created: list[str] = []
    provider = EcrCredentials(_factory(moto_url, created), wall_clock=lambda: now[0])

    first = provider.credentials_for(HOST)
    second = provider.credentials_for(HOST)
    now[0] = expiry - 60  # inside the 300 s refresh margin
    third = provider.credentials_for(HOST)

    assert first is not None and first.username == "AWS" and first.password
    assert second == first == third
    assert created == ["eu-west-1", "eu-west-1"]  # fetched, cached, refreshed before expiry


def test_unreachable_token_service_is_transient() -> None:
    provider = EcrCredentials(_factory("http://127.0.0.1:9", []))

    with pytest.raises(UpstreamUnavailableError) as caught:
        provider.credentials_for(HOST)

    assert caught.value.message == f"registry {HOST}: could not get an ECR authorization token"
