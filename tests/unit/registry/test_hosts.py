"""Per-host state of the registry client: request slots and remembered capabilities."""

from __future__ import annotations

import time

import pytest

from gatekeeper.errors import ConfigurationError, UpstreamUnavailableError
from gatekeeper.registry.hosts import HostCapabilities, HostSlots
from gatekeeper.registry.settings import RegistryClientSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_request_without_a_free_slot_fails_at_the_deadline_naming_the_host() -> None:
    slots = HostSlots(1, time.monotonic)
    with slots.slot("ghcr.io", deadline=None, default_wait=1.0, what="fetching blob a@sha256:1"):
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailableError) as caught:
            with slots.slot("ghcr.io", deadline=time.monotonic() + 0.05, default_wait=1.0,
                            what="fetching blob a@sha256:2"):  # fmt: skip
                pass
        assert time.monotonic() - started < 0.5
        with slots.slot("quay.io", deadline=None, default_wait=1.0, what="another host"):
            pass  # hosts do not share slots
    assert caught.value.message == (
        "registry ghcr.io timed out fetching blob a@sha256:2: its 1 request slots "
        "(max_concurrent_requests) stayed busy"
    )
    with slots.slot("ghcr.io", deadline=None, default_wait=0.05, what="released"):
        pass


def test_a_free_slot_is_taken_even_past_the_deadline() -> None:
    # A spent budget is not a busy host: the caller names the spent budget, not the slots.
    clock = Clock()
    slots = HostSlots(1, clock)
    with slots.slot("ghcr.io", deadline=clock.now - 1, default_wait=1.0, what="resolving a:1"):
        with pytest.raises(UpstreamUnavailableError) as caught:
            with slots.slot("ghcr.io", deadline=clock.now - 1, default_wait=1.0,
                            what="resolving a:2"):  # fmt: skip
                pass
    assert caught.value.message == (
        "registry ghcr.io timed out resolving a:2: its 1 request slots "
        "(max_concurrent_requests) stayed busy"
    )


def test_the_referrers_api_answer_is_remembered_until_it_expires() -> None:
    clock = Clock()
    capabilities = HostCapabilities(60.0, clock)
    assert capabilities.has_referrers_api("registry.local") is None

    capabilities.remember_referrers_api("registry.local", False)
    clock.now += 59

    assert capabilities.has_referrers_api("registry.local") is False
    assert capabilities.has_referrers_api("ghcr.io") is None
    clock.now += 1
    assert capabilities.has_referrers_api("registry.local") is None


def test_a_ttl_of_zero_remembers_nothing() -> None:
    capabilities = HostCapabilities(0.0, Clock())
    capabilities.remember_referrers_api("registry.local", True)
    assert capabilities.has_referrers_api("registry.local") is None


def test_the_settings_are_checked_by_name() -> None:
    settings = RegistryClientSettings.from_mapping(
        {"max_concurrent_requests": 4, "capability_ttl_seconds": 600}
    )
    assert (settings.max_concurrent_requests, settings.capability_ttl_seconds) == (4, 600.0)
    with pytest.raises(ConfigurationError, match=r"registry.max_concurrent_requests must be an integer >= 1"):
        RegistryClientSettings.from_mapping({"max_concurrent_requests": 0})
    with pytest.raises(ConfigurationError, match=r"registry.capability_ttl_seconds must be a number >= 0"):
        RegistryClientSettings.from_mapping({"capability_ttl_seconds": -1})
