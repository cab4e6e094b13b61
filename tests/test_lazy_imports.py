"""What `smlogger run` loads: the web stack, the MQTT code and the simulator only when used.

A replay with the web page off and no broker (the issue-8 benchmark, a batch import) must not
pay for importing bottle, h11, asyncio and the rest at start and tearing them down at exit;
the same command with the web page on must still load and serve it. Each run is a fresh
interpreter, since the test process itself has long imported everything.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from helpers import csv_texts, free_port

from smlogger.simulate import make_meter

FRAMES = 20

# runs the real CLI, then reports the exit code and every module the process loaded
SCRIPT = """
import json, sys
from smlogger.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

NOT_FOR_A_PLAIN_REPLAY = (
    "smlogger.web",
    "smlogger.web.server",
    "smlogger.web.api",
    "bottle",
    "h11",
    "asyncio",
    "smlogger.mqtt",
    "smlogger.mqtt.settings",
    "paho",
    "smlogger.simulate",
)


def _recording(path: Path) -> Path:
    meter = make_meter("household", seed="lazy-imports", tz=timezone.utc)
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    path.write_bytes(b"".join(meter.frame(start + timedelta(seconds=i)) for i in range(FRAMES)))
    return path


def _run(*args: str) -> tuple[int, set[str], str]:
    """Exit code, loaded modules and what the command printed."""
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stdout.strip(), result.stderr
    *printed, last = result.stdout.strip().splitlines()
    report = json.loads(last)
    return int(report["code"]), set(report["modules"]), "\n".join(printed)


def _replay(tmp_path: Path, *options: str) -> tuple[int, set[str], str]:
    """`_run` of a full-speed replay of a fresh recording into tmp_path/data."""
    recording = str(_recording(tmp_path / "rec.bin"))
    data = str(tmp_path / "data")
    return _run("run", "--replay", recording, "--speed", "max", "--data-dir", data, *options)


def test_replay_with_http_off_loads_no_web_mqtt_or_simulator(tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, modules, _ = _replay(tmp_path, "--replay-start", "2024-05-01T00:00:00Z", "--http", "off")
    assert code == 0
    assert sorted(m for m in NOT_FOR_A_PLAIN_REPLAY if m in modules) == []
    # what it does need is there, and did its work: every reading in both sinks
    assert {"smlogger.service", "smlogger.store", "smlogger.csvlog"} <= modules
    con = sqlite3.connect(data / "smlogger.db")
    try:
        assert con.execute("SELECT count(*) FROM readings").fetchone()[0] == FRAMES
    finally:
        con.close()
    rows = sum(len(text.splitlines()) - 1 for _, text in csv_texts(data / "csv"))
    assert rows == FRAMES


def test_replay_with_the_web_page_on_loads_and_serves_it(tmp_path: Path) -> None:
    code, modules, _ = _replay(tmp_path, "--http", f"127.0.0.1:{free_port()}")
    assert code == 0
    assert {"smlogger.web", "smlogger.web.server", "bottle"} <= modules
    assert "smlogger.simulate" not in modules  # a replay still needs no simulator


def test_a_simulated_meter_loads_the_simulator_when_its_source_is_built() -> None:
    script = (
        "import argparse, sys\n"
        "from smlogger import config, service\n"
        "from smlogger.live import LiveState\n"
        "parser = argparse.ArgumentParser()\n"
        "config.add_arguments(parser)\n"
        "cfg = config.load(parser.parse_args(['--simulate']), {})\n"
        "before = 'smlogger.simulate' in sys.modules\n"
        "spec = service.build_meter(cfg.meters[0], LiveState())\n"
        "print(before, type(spec.source).__name__, 'smlogger.simulate' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.split() == ["False", "SimulatedSource", "True"], result.stderr


def test_commands_without_a_database_load_no_database_code(tmp_path: Path) -> None:
    code, modules, printed = _run("decode", str(_recording(tmp_path / "rec.bin")))
    assert code == 0
    assert printed.count("1-0:1.8.0*255#") == FRAMES  # one energy total a frame
    assert "smlogger.tools" in modules
    loaded = {"peewee", "pymysql", "psycopg2", "smlogger.store", "smlogger.web"} & modules
    assert sorted(loaded) == []
