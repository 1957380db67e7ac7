"""sd_notify(3) in a few lines of stdlib: one datagram to $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket

NOTIFY_ENV = "NOTIFY_SOCKET"


def notify_address() -> str | None:
    address = os.environ.get(NOTIFY_ENV)
    if not address:
        return None
    # A leading '@' names a socket in the abstract namespace.
    return "\0" + address[1:] if address.startswith("@") else address


def notify(message: str, address: str | None) -> bool:
    """Send e.g. "READY=1"; False when there is no socket to send to (not under systemd)
    or it refused: a lost notification must never take the stack down with it."""
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True
