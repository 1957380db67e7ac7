"""The one SSRF guard: which addresses a client-given URL may reach, and how hosts resolve.

Webhook targets (webhooks/ssrf.py, webhooks/http_client.py) and media URLs
(services/media.py) both come from API clients, so both refuse the same addresses and
connect only to an address that was checked (no second DNS lookup to rebind). Each
caller raises its own error (its code is part of the API), from the same answer here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Final

# Carrier-grade NAT is not "private" to ipaddress, but it is someone's internal network.
_SHARED_ADDRESS_SPACE: Final = ipaddress.ip_network("100.64.0.0/10")
# Cloud metadata services, named even where a range above already covers them, so a
# change in ipaddress' tables cannot quietly open them.
_METADATA: Final = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
    }
)


def is_blocked(address: str) -> bool:
    """True for anything that is not a public internet address.

    A zone id (`fe80::1%eth0`, as getaddrinfo reports link-local addresses) is stripped
    and the bare address judged: the zone only picks an interface, never makes an
    address public. An IPv4-mapped IPv6 address is judged as the IPv4 address it
    reaches. Whatever does not parse as an address is blocked (fail closed, never an
    exception on the request path).
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE)
        or ip in _METADATA
    )


async def resolve(host: str, port: int) -> list[str]:
    """Every address of `host`, in the resolver's order (the order to try them in).

    Raises OSError (socket.gaierror) when the name does not resolve; callers turn that
    into their own error.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class NotPublic(Exception):
    """Some address of `host` is not public: the URL must not be fetched at all."""

    def __init__(self, host: str, blocked: list[str]) -> None:
        super().__init__(f"{host} resolves to a non-public address")
        self.host = host
        self.blocked = blocked


async def public_addresses(host: str, port: int) -> list[str]:
    """The addresses of `host`, all public; NotPublic if any one is not (a host with one
    private address among public ones could be steered to it), OSError if none resolve."""
    addresses = await resolve(host, port)
    blocked = [a for a in addresses if is_blocked(a)]
    if blocked or not addresses:
        raise NotPublic(host, blocked)
    return addresses
