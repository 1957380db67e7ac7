from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from appliance import contracts_export
from appliance.contracts import (
    COMMAND_ADAPTER,
    EVENT_ADAPTER,
    SendMediaPayload,
    SendTextCommand,
    SendTextPayload,
    wa_message_id,
)
from appliance.paths import GENERATED_DIR


def test_the_committed_engine_contracts_equal_a_fresh_export() -> None:
    assert contracts_export.stale_files(GENERATED_DIR) == [], "run `wapp contracts export`"


def test_a_changed_generated_file_is_reported_stale(tmp_path: Path) -> None:
    contracts_export.export(tmp_path)
    assert contracts_export.stale_files(tmp_path) == []
    schema = tmp_path / "command.schema.json"
    schema.write_bytes(schema.read_bytes().replace(b"send_text", b"send_txt"))
    (tmp_path / "redis-keys.json").unlink()
    assert sorted(contracts_export.stale_files(tmp_path)) == [
        "command.schema.json",
        "redis-keys.json",
    ]


def test_the_exported_command_schema_requires_every_envelope_field() -> None:
    schema = orjson.loads((GENERATED_DIR / "command.schema.json").read_bytes())
    send_text = schema["$defs"]["SendTextCommand"]
    assert set(send_text["required"]) == {
        "id",
        "version",
        "timestamp",
        "session",
        "trace_id",
        "type",
        "payload",
    }
    assert send_text["additionalProperties"] is False
    assert "discriminator" not in orjson.dumps(schema).decode()


def test_a_command_round_trips_through_json_as_the_engine_receives_it() -> None:
    command = SendTextCommand(
        session="sales-1",
        payload=SendTextPayload(
            message_id=(mid := uuid.uuid4()),
            wa_id=wa_message_id(mid),
            to="4915112345678",
            text="hi",
        ),
    )
    wire = command.model_dump_json()
    decoded = orjson.loads(wire)
    assert decoded["type"] == "send_text"
    assert decoded["payload"]["mentions"] == []
    assert COMMAND_ADAPTER.validate_json(wire) == command


@pytest.mark.parametrize("to", ["", "12", "not a number", "a@b c", "4915112345678@"])
def test_a_bad_recipient_is_refused(to: str) -> None:
    with pytest.raises(ValidationError):
        SendTextPayload(message_id=uuid.uuid4(), wa_id="3EB0AAAAAAAA", to=to, text="x")


def test_media_needs_exactly_one_source() -> None:
    common = {
        "message_id": uuid.uuid4(),
        "wa_id": "3EB0AAAAAAAA",
        "to": "4915112345678",
        "kind": "image",
        "mimetype": "image/png",
    }
    with pytest.raises(ValidationError, match="exactly one"):
        SendMediaPayload(**common)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="exactly one"):
        SendMediaPayload(**common, url="https://x/y.png", blob_path="/tmp/y.png")  # type: ignore[arg-type]
    assert SendMediaPayload(**common, url="https://x/y.png").url  # type: ignore[arg-type]


def test_an_unknown_event_type_is_refused() -> None:
    with pytest.raises(ValidationError):
        EVENT_ADAPTER.validate_python({"type": "session.exploded", "session": "a", "payload": {}})


def test_the_whatsapp_id_is_derived_deterministically_from_our_id() -> None:
    mid = uuid.uuid4()
    assert wa_message_id(mid) == wa_message_id(mid)
    assert wa_message_id(mid) != wa_message_id(uuid.uuid4())
    assert wa_message_id(mid).startswith("3EB0")
    assert len(wa_message_id(mid)) == 22
