"""The SSRF guard: webhook URLs must not reach the box itself or its private networks.

Checked when an endpoint is created (syntax and resolution), and again by the
dispatcher's network backend (`http_client.AsyncioBackend`) each time it opens a
connection: it resolves the host, checks every address, and connects to a checked one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from appliance.errors import ValidationFailed

# Cloud metadata services that are not already in a private or link-local range.
_METADATA = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}


class BlockedAddress(ValidationFailed):
    code = "WEBHOOK_URL_REFUSED"


def is_blocked(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip in ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
        or ip in _METADATA
    )


def check_url_syntax(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL, or ValidationFailed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed("webhook url must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise ValidationFailed("webhook url must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValidationFailed(f"webhook url has a bad port: {exc}") from exc
    return parts.hostname, port


async def resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL any of whose addresses is loopback, private, link-local or metadata."""
    host, port = check_url_syntax(url)
    if allow_private:
        return
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise BlockedAddress(f"webhook host {host} does not resolve: {exc}") from exc
    blocked = [a for a in addresses if is_blocked(a)]
    if blocked:
        raise BlockedAddress(
            f"webhook host {host} resolves to a private or local address",
            details={"addresses": blocked},
        )
