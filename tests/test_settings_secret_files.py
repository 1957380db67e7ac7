"""Every `<name>_file` setting goes through the one secret-file validator (settings.Section)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from appliance.settings import DatabaseSettings, RedisSettings, Section, Settings


def _secret_file_fields() -> list[tuple[type[Section], str]]:
    """(section, secret) for each `<secret>_file` field beside a `<secret>` field."""
    found = []
    for field in Settings.model_fields.values():
        section = field.annotation
        assert isinstance(section, type)
        assert issubclass(section, Section)
        names = section.model_fields
        found += [(section, n) for n in names if f"{n}_file" in names]
    return found


FIELDS = _secret_file_fields()


def test_the_known_secret_files_are_all_found() -> None:
    names = {(s.__name__, n) for s, n in FIELDS}
    assert {
        ("DatabaseSettings", "url"),
        ("RedisSettings", "url"),
        ("WebhooksSettings", "smtp_password"),
    } <= names


def _valid(section: type[Section], secret: str) -> str:
    # A value each section's own rules accept (database and redis urls have schemes).
    return "sqlite+aiosqlite:////tmp/x.db" if section is DatabaseSettings else "redis://h:6379/0"


@pytest.mark.parametrize(("section", "secret"), FIELDS, ids=lambda v: getattr(v, "__name__", v))
def test_a_secret_is_read_from_its_file_stripped(
    tmp_path: Path, section: type[Section], secret: str
) -> None:
    path = tmp_path / "secret"
    path.write_text(_valid(section, secret) + "\n", encoding="utf-8")
    loaded = section.model_validate({f"{secret}_file": path})
    assert getattr(loaded, secret) == _valid(section, secret)


@pytest.mark.parametrize(("section", "secret"), FIELDS, ids=lambda v: getattr(v, "__name__", v))
def test_a_secret_and_its_file_together_are_refused(
    tmp_path: Path, section: type[Section], secret: str
) -> None:
    path = tmp_path / "secret"
    path.write_text(_valid(section, secret), encoding="utf-8")
    with pytest.raises(ValidationError, match=f"set either {secret} or {secret}_file"):
        section.model_validate({secret: _valid(section, secret), f"{secret}_file": path})


@pytest.mark.parametrize(("section", "secret"), FIELDS, ids=lambda v: getattr(v, "__name__", v))
def test_an_unreadable_secret_file_names_the_field(
    tmp_path: Path, section: type[Section], secret: str
) -> None:
    with pytest.raises(ValidationError, match=f"cannot read {secret}_file .*absent"):
        section.model_validate({f"{secret}_file": tmp_path / "absent"})


def test_the_sections_own_rules_see_the_value_read_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("mysql://nope", encoding="utf-8")
    with pytest.raises(ValidationError, match="url must start with"):
        DatabaseSettings(url_file=path)
    path.write_text("redis://elsewhere:6379/0", encoding="utf-8")
    assert RedisSettings(managed=False, url_file=path).url == "redis://elsewhere:6379/0"
