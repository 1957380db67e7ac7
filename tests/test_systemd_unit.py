"""systemd/wapp.service: `systemd-analyze verify` is clean and the hardening keeps the
offline exposure score at or under 2.5 (no systemd is booted: these are static checks)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.paths import REPO_DIR

UNIT = REPO_DIR / "systemd" / "wapp.service"
MAX_EXPOSURE = 2.5
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def exposure(unit: Path) -> float:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


def test_the_units_exposure_is_at_most_2_5() -> None:
    assert exposure(UNIT) <= MAX_EXPOSURE


def test_exposure_measures_the_hardening(tmp_path: Path) -> None:
    # The score must move with the unit's settings, or the check above proves nothing.
    bare = tmp_path / "wapp.service"
    bare.write_text(
        "\n".join(
            line
            for line in UNIT.read_text().splitlines()
            if not line.startswith(("Protect", "Private", "SystemCall", "Restrict"))
        )
    )
    assert exposure(bare) > MAX_EXPOSURE


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    # verify needs ExecStart's binary: this checkout's venv stands in for /opt/wapp.
    assert ANALYZE is not None
    venv_wapp = Path(sys.executable).with_name("wapp")
    assert venv_wapp.is_file()
    unit = tmp_path / "wapp.service"
    unit.write_text(UNIT.read_text().replace("/opt/wapp/.venv/bin/wapp", str(venv_wapp)))
    result = subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_the_unit_runs_the_notifying_service_as_the_wapp_user() -> None:
    options = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if re.match(r"^\w+=", line)
    )
    assert options["Type"] == "notify"
    assert options["ExecStart"].endswith("wapp service run")
    assert options["ExecReload"].endswith("wapp reload")
    assert options["User"] == "wapp"
    assert options["Restart"] == "always"
    assert options["RestartPreventExitStatus"] == "3"
    assert options["UMask"] == "0077"
    # Longer than the ordered stop: api 15 s, each engine 20 s, redis 30 s.
    assert int(options["TimeoutStopSec"]) > 15 + 20 + 20 + 30
