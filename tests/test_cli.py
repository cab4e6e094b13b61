"""The command line: commands, --version, config output, errors, python -m smlogger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smlogger import __version__, config
from smlogger.cli import main


def smlogger(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smlogger", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_version_and_module_entry_point() -> None:
    result = smlogger("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"smlogger {__version__}"


def test_help_lists_every_command() -> None:
    result = smlogger("--help")
    assert result.returncode == 0
    for command in ("run", "config", "decode", "bench", "db-init", "export"):
        assert command in result.stdout, command


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_run_help_names_flags_keys_and_variables() -> None:
    result = smlogger("run", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option in config.ALL_OPTIONS:
        assert option.flag in text and option.env in text, option.key
    assert "--verbose" in text and "--quiet" in text


def test_config_example_is_a_valid_config(tmp_path: Path) -> None:
    result = smlogger("config", "--example")
    assert result.returncode == 0
    path = tmp_path / "example.toml"
    path.write_text(result.stdout)
    shown = smlogger("config", "--config", str(path))
    assert shown.returncode == 0, shown.stderr
    assert 'port = "/dev/ttyUSB0"' in shown.stdout


def test_config_output_masks_secrets(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[database]\nurl = "mysql://meter:hunter2-secret@db.lan/smart_meter"\n'
        '[[meter]]\nport = "/dev/ttyUSB0"\n'
    )
    result = smlogger(
        "config", "--config", str(path), "-v", env={"SMLOGGER_HTTP_TOKEN": "tok-987-secret"}
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2-secret" not in result.stdout + result.stderr
    assert "tok-987-secret" not in result.stdout + result.stderr
    assert "mysql://meter:***@db.lan/smart_meter" in result.stdout
    assert 'token = "***"' in result.stdout


def test_config_without_meter_is_fine_for_config_but_not_for_run() -> None:
    assert smlogger("config").returncode == 0
    result = smlogger("run", "--http", "off")
    assert result.returncode == 2
    assert "no meter: give a source" in result.stderr


def test_bad_config_key_exits_2_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[csv]\nkeep_dayz = 3\n")
    result = smlogger("run", "--config", str(path))
    assert result.returncode == 2
    assert f"{path}: unknown key 'csv.keep_dayz'; did you mean 'keep_days'?" in result.stderr
    result = smlogger("run", "--simulate", "--watchdog", "soon")
    assert result.returncode == 2
    assert "option --watchdog: invalid value 'soon': expected a number" in result.stderr


def test_password_in_a_bad_db_url_is_not_echoed() -> None:
    result = smlogger("config", env={"SMLOGGER_DB_URL": "mssql://sa:pa55-word@host/db"})
    assert result.returncode == 2
    assert "pa55-word" not in result.stderr and "SMLOGGER_DB_URL" in result.stderr


def test_unknown_flag_is_an_argparse_error() -> None:
    result = smlogger("run", "--prot", "/dev/ttyUSB0")
    assert result.returncode == 2 and "--prot" in result.stderr


def test_decode_command_is_wired(recordings_dir: Path) -> None:
    result = smlogger("decode", str(recordings_dir / "ISKRA_MT175_eHZ.bin"))
    assert result.returncode == 0, result.stderr
    assert "1-0:1.8.0*255" in result.stdout


def test_quiet_run_logs_only_problems(tmp_path: Path, recordings_dir: Path) -> None:
    args = [
        "run",
        "--replay",
        str(recordings_dir / "ISKRA_MT175_eHZ.bin"),
        "--speed",
        "max",
        "--data-dir",
        str(tmp_path),
        "--http",
        "off",
        "--no-db",
    ]
    quiet = smlogger(*args, "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""
    verbose = smlogger(*args, "-v")
    assert verbose.returncode == 0 and "DEBUG" in verbose.stderr
