"""The SSRF guard as webhooks apply it: the rules are appliance/ssrf.py's, the error is ours.

Checked when an endpoint is created (syntax and resolution), and again by the
dispatcher's network backend (`http_client.AsyncioBackend`) each time it opens a
connection: it resolves the host, checks every address, and connects to a checked one.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from appliance.errors import ValidationFailed
from appliance.ssrf import NotPublic, public_addresses


class BlockedAddress(ValidationFailed):
    code = "WEBHOOK_URL_REFUSED"


def refused(exc: NotPublic) -> BlockedAddress:
    return BlockedAddress(
        f"webhook host {exc.host} resolves to a private or local address",
        details={"addresses": exc.blocked},
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


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL any of whose addresses is loopback, private, link-local or metadata."""
    host, port = check_url_syntax(url)
    if allow_private:
        return
    try:
        await public_addresses(host, port)
    except OSError as exc:
        raise BlockedAddress(f"webhook host {host} does not resolve: {exc}") from exc
    except NotPublic as exc:
        raise refused(exc) from exc
