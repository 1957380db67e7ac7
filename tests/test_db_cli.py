"""`wapp db upgrade|current` as an operator runs them: the installed script, a config file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from appliance.db import migrate
from tests.fixtures.settings import database_url_under_test

WAPP = Path(sys.executable).parent / "wapp"


def _wapp(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WAPP_")}
    return subprocess.run(
        [str(WAPP), "--config", str(config), *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
    )


def _config(tmp_path: Path, database_url: str | None) -> Path:
    path = tmp_path / "config.toml"
    lines = ["[general]", f'data_dir = "{tmp_path / "data"}"']
    if database_url is not None:
        lines += ["[database]", f'url = "{database_url}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def test_wapp_db_upgrade_migrates_and_a_second_run_changes_nothing(
    tmp_path: Path, empty_database_url: str
) -> None:
    config = _config(tmp_path, empty_database_url)
    head = migrate.head_revision()
    assert head is not None

    before = _wapp(config, "db", "current")
    assert before.returncode == 1, before.stderr
    assert "none" in before.stdout

    for _ in range(2):
        result = _wapp(config, "db", "upgrade")
        assert result.returncode == 0, result.stderr
        assert head in result.stdout

    after = _wapp(config, "db", "current")
    assert after.returncode == 0, after.stderr
    assert f"{head} (head)" in after.stdout


def test_wapp_db_upgrade_creates_the_default_sqlite_database_in_the_data_dir(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, None)
    result = _wapp(config, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "wapp.db").is_file()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root@localhost/wapp",  # a driver we do not support
        "postgresql+asyncpg://postgres@127.0.0.1:notaport/test",  # not a URL
        "sqlite+aiosqlite:////dev/null/wapp.db",  # a file that cannot exist
    ],
)
def test_wapp_db_upgrade_exits_3_on_a_bad_database_url(tmp_path: Path, url: str) -> None:
    result = _wapp(_config(tmp_path, url), "db", "upgrade")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert re.search(r"database\W+(\w+\W+)*url", result.stderr), result.stderr


@pytest.mark.skipif(database_url_under_test() is None, reason="needs the Postgres of the run")
def test_a_missing_postgres_database_is_a_configuration_error(tmp_path: Path) -> None:
    server = database_url_under_test()
    assert server is not None
    url = make_url(server).set(database="wapp_no_such_database").render_as_string(False)
    result = _wapp(_config(tmp_path, url), "db", "upgrade")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "does not exist" in result.stderr


def test_an_unreachable_database_server_is_a_failure_not_a_configuration_error(
    tmp_path: Path,
) -> None:
    # Port 1: nothing listens; the configuration may be right and the server down.
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/test"
    result = _wapp(_config(tmp_path, url), "db", "upgrade")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "unavailable" in result.stderr
