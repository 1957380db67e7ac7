"""`wapp backup` on a live box and `wapp restore` onto a new one (the real `wapp`, real
stacks, the run's database): the sessions come back connected without a QR, the messages
are kept; a used box, a wrong passphrase, a damaged file and a newer schema are refused
before anything changes."""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.fixtures.box import PASSPHRASE, Box, passphrase_file, populate
from tests.fixtures.stack import StackDir, stack_directory, start_stack
from tests.fixtures.waiting import wait_for


@pytest.fixture(scope="module")
def source() -> Iterator[tuple[Box, Path]]:
    """A live box with two paired sessions, and a backup of it taken while it runs."""
    with stack_directory() as stack:
        box = populate(stack)
        backup = stack.root / "box.wappbak"
        done = stack.wapp(
            "backup", str(backup), "--passphrase-file", str(passphrase_file(stack.root))
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "backup written" in done.stdout
        yield box, backup


def _states_since(stack: StackDir, since_ms: int) -> list[str]:
    """Every session state the engines reported since `since_ms` (from `wapp:events`)."""
    client = redis.Redis(unix_socket_path=str(stack.data_dir / "redis" / "redis.sock"))
    try:
        entries = client.xrange("wapp:events", min=f"{since_ms}-0")
    finally:
        client.close()
    envelopes = [json.loads(fields[b"data"]) for _id, fields in entries]
    return [e["payload"]["state"] for e in envelopes if e["type"] == "session.state"]


def _restore(stack: StackDir, backup: Path, *args: str) -> tuple[int, str]:
    done = stack.wapp(
        "restore", str(backup), "--passphrase-file", str(passphrase_file(stack.root)), *args
    )
    return done.returncode, done.stdout + done.stderr


def test_backup_file_is_private_and_lists_its_parts(source: tuple[Box, Path]) -> None:
    _box, backup = source
    assert backup.stat().st_mode & 0o777 == 0o600
    with tarfile.open(backup) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert {"master-key.json", "redis.bin", manifest["database"]["file"]} <= set(names)
    assert manifest["migration"]
    assert manifest["app_version"]
    assert set(manifest["files"]) == set(names) - {"manifest.json"}
    # The master key is only there wrapped: its plaintext is nowhere in the file.
    key = (_box.stack.data_dir / "master.key").read_bytes().strip()
    assert key not in backup.read_bytes()


def test_restore_onto_a_new_box_brings_sessions_back_without_a_qr(
    source: tuple[Box, Path],
) -> None:
    old, backup = source
    with stack_directory() as stack:
        fresh_key = (stack.data_dir / "master.key").read_bytes()
        code, out = _restore(stack, backup)
        assert code == 0, out
        assert (stack.data_dir / "master.key").read_bytes() != fresh_key
        assert (stack.data_dir / "master.key").stat().st_mode & 0o777 == 0o600
        restored_at = int(time.time() * 1000)
        start_stack(stack)
        box = Box(stack, key=old.key, sessions=old.sessions, messages=old.messages)
        for name in box.sessions:
            wait_for(f"{name} connected", lambda n=name: box.state(n) == "connected")
        for message_id in box.messages:
            assert box.status(message_id) in ("delivered", "read")
        states = _states_since(stack, restored_at)
        assert "connected" in states
        assert "qr" not in states
        assert "pairing_code" not in states

        # The box is now in use: running, then stopped, a second restore is refused.
        code, out = _restore(stack, backup)
        assert code == 1
        assert "running" in out
        assert stack.wapp("down", timeout=150).returncode == 0
        code, out = _restore(stack, backup)
        assert code == 1
        assert "in use" in out
        assert "--force" in out
        code, out = _restore(stack, backup, "--force")
        assert code == 0, out


def _untouched(stack: StackDir, key_before: bytes) -> None:
    assert (stack.data_dir / "master.key").read_bytes() == key_before
    assert not (stack.data_dir / "wapp.db").exists()
    assert not list(stack.data_dir.glob(".wapp-restore-*"))


@pytest.fixture
def empty_box() -> Iterator[StackDir]:
    with stack_directory() as stack:
        yield stack


def test_wrong_passphrase_changes_nothing(source: tuple[Box, Path], empty_box: StackDir) -> None:
    _box, backup = source
    before = (empty_box.data_dir / "master.key").read_bytes()
    done = empty_box.wapp(
        "restore", str(backup), env={"WAPP_BACKUP_PASSPHRASE": PASSPHRASE + " not"}
    )
    assert done.returncode == 1
    assert "wrong passphrase" in done.stderr
    _untouched(empty_box, before)


def test_truncated_or_altered_file_is_refused(
    source: tuple[Box, Path], empty_box: StackDir
) -> None:
    _box, backup = source
    before = (empty_box.data_dir / "master.key").read_bytes()
    data = backup.read_bytes()
    truncated = empty_box.root / "truncated.wappbak"
    truncated.write_bytes(data[: len(data) // 2])
    code, out = _restore(empty_box, truncated)
    assert code == 1, out
    assert "not a readable" in out or "incomplete" in out, out
    # One byte flipped inside the Redis part: its checksum no longer matches.
    with tarfile.open(backup) as tar:
        member = tar.getmember("redis.bin")
    altered = bytearray(data)
    altered[member.offset_data + 10] ^= 0xFF
    flipped = empty_box.root / "flipped.wappbak"
    flipped.write_bytes(bytes(altered))
    code, out = _restore(empty_box, flipped)
    assert code == 1, out
    assert "redis.bin does not match its checksum" in out, out
    not_a_backup = empty_box.root / "notes.txt"
    not_a_backup.write_text("hello")
    code, out = _restore(empty_box, not_a_backup)
    assert code == 1, out
    assert "not a readable wapp backup" in out, out
    _untouched(empty_box, before)


def test_a_backup_from_a_newer_schema_is_refused(
    source: tuple[Box, Path], empty_box: StackDir
) -> None:
    _box, backup = source
    before = (empty_box.data_dir / "master.key").read_bytes()
    newer = empty_box.root / "newer.wappbak"
    with tarfile.open(backup) as src, tarfile.open(newer, "w") as dst:
        for member in src.getmembers():
            body = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "manifest.json":
                manifest = json.loads(body)
                manifest["migration"] = "9999_from_the_future"
                body = json.dumps(manifest).encode()
                member.size = len(body)
            dst.addfile(member, io.BytesIO(body))
    code, out = _restore(empty_box, newer)
    assert code == 3, out
    assert "9999_from_the_future" in out
    assert "newer wapp" in out
    _untouched(empty_box, before)


def test_backup_refuses_a_short_passphrase_and_an_existing_file(
    source: tuple[Box, Path],
) -> None:
    box, backup = source
    short = box.stack.wapp("backup", env={"WAPP_BACKUP_PASSPHRASE": "short"})
    assert short.returncode == 2
    assert "at least 8" in short.stderr
    again = box.stack.wapp("backup", str(backup), env={"WAPP_BACKUP_PASSPHRASE": PASSPHRASE})
    assert again.returncode == 2
    assert "exists" in again.stderr
