"""One recipient pattern: the contract's digits (contracts.PHONE_DIGITS) are the api's too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

import appliance
from appliance import phones
from appliance.contracts import PHONE_DIGITS, PhoneDigits, Recipient

APPLIANCE = Path(appliance.__file__).parent
# A run of at least 5 digits as a regular expression spells it, e.g. \d{5,20} or [0-9]{7,}
# (shorter runs are device suffixes and stream ids, not numbers).
DIGIT_RULE = re.compile(r"(\\d|\[0-9\])\{([5-9]|[1-9]\d),\d*\}")
# phones.py keeps one rule of its own: what a person writes has at least 7 digits.
ALLOWED = {("contracts.py", r"\d{5,20}"), ("phones.py", r"\d{7,20}")}


def test_no_module_defines_its_own_phone_digits() -> None:
    found = {
        (path.relative_to(APPLIANCE).as_posix(), m.group(0))
        for path in APPLIANCE.rglob("*.py")
        for m in DIGIT_RULE.finditer(path.read_text(encoding="utf-8"))
    }
    assert found <= ALLOWED
    assert ("contracts.py", PHONE_DIGITS) in found


@pytest.mark.parametrize(
    "written",
    [
        "+49 151 1234-5678",
        "4915112345678@c.us",
        "4915112345678:12@s.whatsapp.net",
        "12345678901234567890@lid",
        "120363025246125486@g.us",
        "4915112345678-1600000000@g.us",
        "status@broadcast",
    ],
)
def test_whatever_the_api_accepts_the_contract_accepts(written: str) -> None:
    kept = phones.normalise_recipient(written)
    assert TypeAdapter(Recipient).validate_python(kept) == kept


@pytest.mark.parametrize("user", ["1234", "123456789012345678901"])
def test_the_api_and_the_contract_refuse_the_same_digit_counts(user: str) -> None:
    assert phones.normalise_jid(f"{user}@s.whatsapp.net") is None
    with pytest.raises(ValidationError):
        TypeAdapter(PhoneDigits).validate_python(user)
