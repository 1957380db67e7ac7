"""Private files: the data dir 0700, the SQLite database and its
WAL/SHM 0600, and the managed Redis writing only its AOF (no dump.rdb)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis
import sqlalchemy as sa

from appliance.db import migrate
from appliance.db.engine import create_db_engine
from appliance.errors import ConfigError
from appliance.paths import secure_data_dir
from appliance.settings import Settings
from tests.fixtures.settings import database_url_under_test
from tests.fixtures.stack import StackDir, start_stack

sqlite_only = pytest.mark.skipif(
    database_url_under_test() is not None, reason="the database file is SQLite's"
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The usual 022: what SQLite and mkdir would otherwise give is world-readable."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _sqlite_settings(data_dir: Path) -> Settings:
    return Settings(general={"data_dir": str(data_dir)})


@sqlite_only
@pytest.mark.usefixtures("loose_umask")
async def test_a_new_database_and_its_wal_and_shm_are_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    settings = _sqlite_settings(data_dir)
    await migrate.upgrade(settings)
    engine = create_db_engine(settings)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            db = data_dir / "wapp.db"
            # Both exist while a connection is open in WAL mode.
            for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                assert _mode(path) == 0o600, path
    finally:
        await engine.dispose()
    assert _mode(data_dir) == 0o700


@sqlite_only
@pytest.mark.usefixtures("loose_umask")
async def test_a_wider_data_dir_and_database_are_tightened_at_the_next_connection(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "restored"
    settings = _sqlite_settings(data_dir)
    await migrate.upgrade(settings)
    db = data_dir / "wapp.db"
    # As a backup restored with `cp` or an operator's chmod leaves them.
    os.chmod(data_dir, 0o755)
    os.chmod(db, 0o644)
    wal = Path(f"{db}-wal")
    os.close(os.open(wal, os.O_WRONLY | os.O_CREAT, 0o644))
    os.chmod(wal, 0o644)
    engine = create_db_engine(settings)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT 1"))).scalar() == 1
            assert _mode(data_dir) == 0o700
            assert _mode(db) == 0o600
            # The last connection's close removes the WAL: look while this one is open.
            assert _mode(wal) == 0o600
    finally:
        await engine.dispose()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a dir to another user needs root")
def test_a_wide_data_dir_of_another_user_is_refused_with_a_clear_message(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "theirs"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    os.chown(data_dir, 54321, 54321)
    with pytest.raises(ConfigError) as refused:
        secure_data_dir(data_dir)
    assert "0755" in refused.value.message
    assert "uid 54321" in refused.value.message
    assert _mode(data_dir) == 0o755  # not ours: left alone, and refused


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a dir to another user needs root")
def test_a_private_data_dir_of_another_user_is_accepted(tmp_path: Path) -> None:
    data_dir = tmp_path / "theirs"
    data_dir.mkdir(mode=0o700)
    os.chown(data_dir, 54321, 54321)
    secure_data_dir(data_dir)
    assert _mode(data_dir) == 0o700


@pytest.mark.usefixtures("loose_umask")
def test_a_stack_keeps_its_files_private_and_redis_writes_only_its_aof(
    stack_dir: StackDir,
) -> None:
    os.chmod(stack_dir.data_dir, 0o755)
    start_stack(stack_dir)
    data = stack_dir.data_dir
    assert _mode(data) == 0o700
    if database_url_under_test() is None:
        assert _mode(data / "wapp.db") == 0o600
        for side in ("-wal", "-shm"):
            if Path(f"{data / 'wapp.db'}{side}").exists():
                assert _mode(Path(f"{data / 'wapp.db'}{side}")) == 0o600
    client = sync_redis.Redis(unix_socket_path=str(data / "redis" / "redis.sock"))
    try:
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.set("wapp:test:file-modes", "1")
    finally:
        client.close()
    # redis-server writes dump.rdb at shutdown whenever save points are configured.
    result = stack_dir.wapp("down", timeout=150)
    assert result.returncode == 0, result.stdout + result.stderr
    redis_dir = data / "redis"
    assert not list(redis_dir.glob("*.rdb")), sorted(p.name for p in redis_dir.iterdir())
    assert (redis_dir / "appendonlydir").is_dir()
