"""The one SSRF guard (appliance/ssrf.py) and both of its callers: webhooks and media URLs."""

from __future__ import annotations

import socket
import uuid

import pytest

from appliance import ssrf
from appliance.services import media
from appliance.webhooks import ssrf as webhook_ssrf
from tests.fixtures.settings import MakeSettings


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("172.16.5.4", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),  # cloud metadata
        ("100.64.0.1", True),  # carrier-grade NAT
        ("100.100.100.200", True),  # Alibaba metadata
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),  # reserved
        ("::1", True),
        ("::", True),
        ("fe80::1", True),
        ("fc00::1", True),  # unique local
        ("fd00:ec2::254", True),  # AWS metadata over IPv6
        ("ff02::1", True),  # multicast
        # IPv4-mapped IPv6: judged as the IPv4 address it reaches.
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", True),
        ("::ffff:169.254.169.254", True),
        ("::ffff:8.8.8.8", False),
        # Zone ids (as getaddrinfo may report link-local addresses): stripped, then judged.
        ("fe80::1%eth0", True),
        ("fe80::1%2", True),
        ("::ffff:10.0.0.1%1", True),
        ("2606:4700:4700::1111%eth0", False),
        # What does not parse is refused, never an exception on the request path.
        ("not-an-address", True),
        ("", True),
        ("%eth0", True),
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_only_public_addresses_pass(address: str, blocked: bool) -> None:
    assert ssrf.is_blocked(address) is blocked


@pytest.mark.parametrize("host", ["localhost", "127.1", "0x7f000001", "::ffff:127.0.0.1"])
async def test_a_name_or_spelling_resolving_to_a_private_address_is_not_public(host: str) -> None:
    with pytest.raises(ssrf.NotPublic) as refused:
        await ssrf.public_addresses(host, 80)
    assert refused.value.blocked
    assert all(ssrf.is_blocked(a) for a in refused.value.blocked)


async def test_a_public_literal_passes_and_resolution_keeps_the_resolver_order() -> None:
    assert await ssrf.public_addresses("8.8.8.8", 443) == ["8.8.8.8"]
    assert await ssrf.resolve("127.0.0.1", 80) == ["127.0.0.1"]


async def test_a_name_that_does_not_resolve_raises_oserror() -> None:
    with pytest.raises(socket.gaierror):
        await ssrf.public_addresses("nonexistent.invalid", 80)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/hook",
        "http://127.1:8080/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fe80::1%lo]/hook",
    ],
)
async def test_webhook_urls_and_media_urls_are_refused_alike(
    url: str, make_settings: MakeSettings
) -> None:
    with pytest.raises(webhook_ssrf.BlockedAddress) as hook:
        await webhook_ssrf.check_url(url, allow_private=False)
    assert hook.value.code == "WEBHOOK_URL_REFUSED"

    settings = make_settings()
    assert not settings.media.allow_private
    with pytest.raises(media.MediaUrlRefused) as fetched:
        await media.fetch_url(url, settings=settings, message_id=uuid.uuid4())
    assert fetched.value.code == "MEDIA_URL_REFUSED"
    assert fetched.value.details["addresses"] == hook.value.details["addresses"]


async def test_an_unresolvable_host_is_each_callers_own_error(make_settings: MakeSettings) -> None:
    with pytest.raises(webhook_ssrf.BlockedAddress, match="does not resolve"):
        await webhook_ssrf.check_url("http://nonexistent.invalid/", allow_private=False)
    with pytest.raises(media.MediaFetchFailed, match="cannot resolve"):
        await media.fetch_url(
            "http://nonexistent.invalid/a.png", settings=make_settings(), message_id=uuid.uuid4()
        )
