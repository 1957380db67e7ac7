"""install.sh's system (VPS) mode, for real, as root, into a throwaway root (`--root`):
install, a second run that changes nothing, an upgrade whose migration fails and rolls
back, `--uninstall` (keeps data and config), `--uninstall --purge` (removes them).

The tests share one install (building a venv and the engine takes most of a minute) and
run in the order written: the rollback leaves a working install for the uninstall.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.vps_install import (
    failing_tree,
    install_sh,
    listing,
    source_tree,
    sqlite_dump,
)

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="install.sh's system mode needs root (it creates the wapp user and chowns)",
    ),
    pytest.mark.timeout(400),
]


class Install:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.tree = source_tree(work / "src")
        self.root = work / "root"
        self.config = self.root / "etc/wapp/config.toml"
        self.data = self.root / "var/lib/wapp"
        self.opt = self.root / "opt/wapp"


@pytest.fixture(scope="module")
def installed() -> Iterator[Install]:
    # Not pytest's tmp_path: its base is 0700 (reset by every pytest run), and the service
    # user must reach the root through every parent.
    work = Path(tempfile.mkdtemp(prefix="wapp-vps-"))
    work.chmod(0o755)
    try:
        box = Install(work)
        result = install_sh(box.tree, box.root, "--sandbox", "--port", "18631")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "first admin API key" in result.stdout
        yield box
    finally:
        shutil.rmtree(work)


def test_install_lays_out_code_config_data_and_the_cli(installed: Install) -> None:
    assert installed.opt.is_symlink()
    assert (installed.opt / ".venv/bin/wapp").exists()
    assert (installed.opt / "engine/dist").is_dir()
    config = installed.config.stat()
    assert (stat.S_IMODE(config.st_mode), config.st_uid) == (0o640, 0)
    assert stat.S_IMODE(installed.data.stat().st_mode) == 0o700
    assert stat.S_IMODE((installed.data / "master.key").stat().st_mode) == 0o600
    assert (installed.root / "usr/local/bin/wapp").exists()
    assert (installed.root / "etc/systemd/system/wapp.service").exists()


def test_a_second_install_run_changes_nothing(installed: Install) -> None:
    # The code, the unit, the CLI, the config and the master key: same files, modes,
    # owners and mtimes. (The database and run dir are the service's to change.)
    tops = ["opt", "etc", "usr"]
    before = {top: listing(installed.root / top) for top in tops}
    key_before = listing(installed.data, skip=("backups", "run", "logs"))["master.key"]
    result = install_sh(installed.tree, installed.root, "--sandbox", "--port", "18631")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kept" in result.stdout + result.stderr
    assert {top: listing(installed.root / top) for top in tops} == before
    assert listing(installed.data, skip=("backups", "run", "logs"))["master.key"] == key_before
    assert "first admin API key" not in result.stdout


def test_a_failed_migration_rolls_back_code_data_and_config(installed: Install) -> None:
    release = installed.opt.resolve()
    releases = sorted(p.name for p in (installed.root / "opt/wapp.d").iterdir())
    config = (installed.config.read_bytes(), listing(installed.root / "etc")["wapp/config.toml"])
    database = sqlite_dump(installed.data / "wapp.db")

    bad = failing_tree(installed.work / "bad")
    result = install_sh(bad, installed.root, "--upgrade")
    out = result.stdout + result.stderr

    assert result.returncode != 0, out
    assert "MIGRATION FAILED" in out
    assert f"rolled back: the previous code ({release.name}) runs again" in out
    assert installed.opt.resolve() == release
    # The half-built release is gone: only what was there before.
    assert sorted(p.name for p in (installed.root / "opt/wapp.d").iterdir()) == releases
    # The half-applied migration's table came back out with the backup.
    assert sqlite_dump(installed.data / "wapp.db") == database
    assert not any("half_migrated" in line for line in sqlite_dump(installed.data / "wapp.db"))
    assert (
        installed.config.read_bytes(),
        listing(installed.root / "etc")["wapp/config.toml"],
    ) == config


def test_uninstall_keeps_data_and_config_and_purge_removes_them(installed: Install) -> None:
    kept = installed.config.read_bytes()
    result = install_sh(installed.tree, installed.root, "--uninstall")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not installed.opt.exists()
    assert not installed.opt.is_symlink()
    assert not (installed.root / "opt/wapp.d").exists()
    assert not (installed.root / "usr/local/bin/wapp").exists()
    assert not (installed.root / "etc/systemd/system/wapp.service").exists()
    assert installed.config.read_bytes() == kept
    assert (installed.data / "wapp.db").exists()
    assert (installed.data / "master.key").exists()

    purged = install_sh(installed.tree, installed.root, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert list((installed.root / "opt").iterdir()) == []
    assert not (installed.root / "etc/wapp").exists()
    assert not installed.data.exists()
