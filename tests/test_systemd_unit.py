"""The shipped systemd unit passes `systemd-analyze verify` and is sandboxed as promised."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import smlogger

UNIT = Path(smlogger.__file__).resolve().parent / "systemd" / "smlogger.service"


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key, []).append(value)
    return found


@pytest.mark.slow  # runs systemd-analyze (Debian package systemd)
def test_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is required (Debian package systemd)"
    # verify checks that ExecStart's program exists: point it at the installed entry point
    script = shutil.which("smlogger") or str(Path(sys.executable).with_name("smlogger"))
    assert Path(script).exists(), "the smlogger entry point is not installed"
    text = UNIT.read_text().replace("/usr/local/bin/smlogger", script)
    copy = tmp_path / "smlogger.service"
    copy.write_text(text)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    # in a container without systemd as PID 1 verify still works offline on a unit file;
    # any complaint about this unit (unknown keys, bad values) counts as a failure
    complaints = [
        line for line in (result.stdout + result.stderr).splitlines() if "smlogger" in line
    ]
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints == [], complaints


def test_unit_runs_unprivileged_and_sandboxed() -> None:
    d = directives()
    assert d["Type"] == ["notify"] and d["WatchdogSec"] and d["Restart"] == ["on-failure"]
    assert d["User"] == ["smlogger"] and d["SupplementaryGroups"] == ["dialout"]
    assert d["StateDirectory"] == ["smlogger"]
    assert d["Environment"][0] == "SMLOGGER_DATA_DIR=%S/smlogger"
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "RestrictSUIDSGID": "yes",
        "ProtectKernelModules": "yes",
    }.items():
        assert d[key] == [value], key
    assert d["CapabilityBoundingSet"] == [""]
    assert "char-ttyUSB rw" in d["DeviceAllow"]
    assert d["ExecStart"][0].startswith("/usr/local/bin/smlogger run")
