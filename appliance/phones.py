"""Phone numbers and recipients as clients write them, and the one form the API keeps.

A client may write a number the way people do: `+1 555-900-0`, `(030) 1234.5678` after
its country code, or digits only; it becomes digits only. A recipient is such a number
or a WhatsApp JID, and is kept as a JID (a number becomes `<digits>@s.whatsapp.net`),
because that is how received messages name their chat: a message's `chat` reads the
same in both directions, and a group or LID chat (which has no number) fits the same
field. A refused value gets one message saying what a valid one looks like, never the
regular expression behind it.

Outside `appliance.api`: the send bodies the services validate, and the CLI, read numbers
the same way.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from appliance.contracts import PHONE_DIGITS

# A number a person writes has at least 7 digits with its country code (the shortest
# E.164 numbers, e.g. +290 XXXX), so `+49 151` is refused as incomplete; at most 20, the
# contract's limit. A JID's user part is the contract's 5 to 20 digits.
_PHONE_DIGITS: Final = re.compile(r"^\d{7,20}$")
_DIGITS: Final = re.compile(rf"^{PHONE_DIGITS}$")
# What people put between digits; a leading `+` is the international prefix.
_SEPARATORS: Final = re.compile(r"[\s().\-]+")
# user[:device]@server; WAHA-style clients write `c.us` for WhatsApp's `s.whatsapp.net`.
_JID: Final = re.compile(r"^(?P<user>[^\s@:]+)(?::\d{1,4})?@(?P<server>[a-z.]+)$")
_GROUP_USER: Final = re.compile(rf"^{PHONE_DIGITS}(-{PHONE_DIGITS})?$")
USER_SERVER: Final = "s.whatsapp.net"
# Status broadcasts and channels, taken as given.
_OTHER_SERVERS: Final = frozenset({"broadcast", "newsletter"})

PHONE_HELP: Final = (
    "a phone number in international form: country code first, e.g. +4915112345678 or "
    "4915112345678 (7 to 20 digits; a leading +, spaces, dashes, dots and parentheses "
    "are ignored)"
)
RECIPIENT_HELP: Final = (
    f"{PHONE_HELP}, or a WhatsApp JID such as 4915112345678@s.whatsapp.net or "
    "120363025246125486@g.us"
)
# For the OpenAPI document: what a client may send (the validator has the last word).
_PHONE_INPUT: Final = r"^\+?[\d\s().\-]{5,40}$"


def phone_digits(value: str) -> str | None:
    """`+49 151 1234-5678` -> `4915112345678`; None when it is no phone number."""
    text = value.strip()
    if text.startswith("+"):
        text = text[1:]
    digits = _SEPARATORS.sub("", text)
    return digits if _PHONE_DIGITS.match(digits) else None


def normalise_phone(value: str) -> str:
    digits = phone_digits(value)
    if digits is None:
        raise PydanticCustomError("phone_number", "must be " + PHONE_HELP)
    return digits


def normalise_jid(value: str) -> str | None:
    """A JID in the one form the API keeps (no device suffix; `c.us` -> `s.whatsapp.net`);
    None when it is no JID."""
    match = _JID.match(value.strip())
    if match is None:
        return None
    user, server = match["user"], match["server"]
    if server in (USER_SERVER, "c.us"):
        return f"{user}@{USER_SERVER}" if _DIGITS.match(user) else None
    if server == "lid":
        return f"{user}@lid" if _DIGITS.match(user) else None
    if server == "g.us":
        return f"{user}@g.us" if _GROUP_USER.match(user) else None
    if server in _OTHER_SERVERS:
        return f"{user}@{server}"
    return None


def normalise_recipient(value: str) -> str:
    jid = normalise_jid(value) if "@" in value else None
    if jid is None and "@" not in value:
        digits = phone_digits(value)
        jid = f"{digits}@{USER_SERVER}" if digits is not None else None
    if jid is None:
        raise PydanticCustomError("recipient", "must be " + RECIPIENT_HELP)
    return jid


Phone = Annotated[
    str,
    Field(
        max_length=40,
        description="A phone number, country code first; returned as digits only",
        examples=["+4915112345678"],
        json_schema_extra={"pattern": _PHONE_INPUT},
    ),
    AfterValidator(normalise_phone),
]

Recipient = Annotated[
    str,
    Field(
        max_length=128,
        description="A phone number (country code first; `+`, spaces, dashes, dots and "
        "parentheses are ignored) or a WhatsApp JID; kept as the chat's JID, "
        "`<digits>@s.whatsapp.net` for a number",
        examples=["+4915112345678"],
    ),
    AfterValidator(normalise_recipient),
]
