"""The shipped systemd unit passes `systemd-analyze verify` and is sandboxed as promised."""

from __future__ import annotations

import re
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


def exposure(unit: Path) -> float:
    """The overall exposure `systemd-analyze security` gives `unit` (offline: no systemd needed)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is required (Debian package systemd)"
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for smlogger\.service: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    return float(match.group(1))


def test_unit_exposure_is_at_most_1_5(tmp_path: Path) -> None:
    # the unit is analysed under its installed name: the score names the unit it read
    copy = tmp_path / "smlogger.service"
    copy.write_text(UNIT.read_text())
    score = exposure(copy)
    assert score <= 1.5, score
    # the README states the figure the unit gets
    readme = (UNIT.parents[2] / "README.md").read_text()
    assert f"exposure {score:.1f}" in readme, f"README does not state the exposure {score:.1f}"
    # and the check can fail: the unit without its sandboxing scores far worse
    bare = "\n".join(
        line
        for line in UNIT.read_text().splitlines()
        if not line.startswith(("Protect", "Private", "SystemCall", "Restrict", "IPAddress"))
    )
    copy.write_text(bare)
    assert exposure(copy) > 1.5


def test_unit_network_and_sandbox_settings() -> None:
    d = directives()
    assert d["IPAddressDeny"] == ["any"]
    allowed = " ".join(d["IPAddressAllow"]).split()
    # loopback for a local database/broker, the private LAN ranges for everything on the LAN
    for net in ("localhost", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"):
        assert net in allowed, net
    assert d["PrivateUsers"] == ["yes"] and d["PrivateMounts"] == ["yes"]
    assert d["MemoryDenyWriteExecute"] == ["yes"] and d["UMask"] == ["0077"]
    assert "~@privileged @resources" in d["SystemCallFilter"]
