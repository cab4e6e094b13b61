"""`smlogger run --help`: defaults and allowed choices shown, and every example in it works."""

from __future__ import annotations

import shlex
import subprocess
import sys

from smlogger import config as cfgmod
from smlogger.cli import build_parser


def _run_help() -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "smlogger", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "PYTHONPATH": sys.path[0]},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_help_shows_defaults_and_choices() -> None:
    text = " ".join(_run_help().split())
    for expected in (
        "--crc {auto,x25,kermit}",
        "(default: auto)",
        "--csv-rotate {hourly,daily,size}",
        "(default: daily)",
        "--log-level {debug,info,warning,error}",
        "(default: info)",
        "--speed {1,10,FACTOR,max}",
        "(default: 1)",
        "--watchdog SECONDS",
        "(default: 30)",
        "--parity {N,E,O,M,S}",
        "--no-http",
    ):
        assert expected in text, expected


def test_every_example_in_the_help_parses_and_loads() -> None:
    text = _run_help()
    examples = [line.strip() for line in text.split("examples:")[1].splitlines() if line.strip()]
    assert len(examples) >= 5
    parser = build_parser()
    for example in examples:
        words = shlex.split(example)
        assert words[:2] == ["smlogger", "run"], example
        args = parser.parse_args(words[1:])
        if "--config" in words:
            continue  # names a file on the user's machine; parsing it is what we can check
        config = cfgmod.load(args, env={})
        assert config.meters, example


def test_no_http_turns_the_page_off() -> None:
    args = build_parser().parse_args(["run", "--simulate", "--no-http"])
    assert cfgmod.load(args, env={}).http_address is None
