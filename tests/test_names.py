"""Meter names from the config on every surface: /api/meters, /api/live, /metrics, CSV folders
and `smlogger export` -- against a real `smlogger run` process with two meters, one named by
its [[meter]] table and one (an unnamed source) by the `meter_names` table."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port, wait_for
from test_run_process import get_json, start, stop

from smlogger import config
from smlogger.simulate import make_meter

REPLAY_ID = "090149534b000403df63"  # the server id in ISKRA_MT175_eHZ.bin


def export(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "smlogger", "export", "--config", str(conf), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode("utf-8"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, recordings_dir: Path) -> Any:
    tmp = tmp_path_factory.mktemp("names")
    data = tmp / "data"
    port = free_port()
    conf = tmp / "smlogger.toml"
    conf.write_text(
        f'data_dir = "{data}"\n'
        f'[meter_names]\n"{REPLAY_ID}" = "heat pump"\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\n'
        # rows reach the CSV files within a second and the database every 10 readings
        # (defaults: 10 minutes), through a RAM tier inside the test's directory
        f'[storage]\nsync_interval = 1\ncommit_interval = 0\nram_dir = "{tmp / "ram"}"\n'
        "[database]\nbatch_size = 10\n"
        '[[meter]]\nname = "house"\nsimulate = true\nseed = "names"\ninterval = 0.2\n'
        f'[[meter]]\nreplay = "{recordings_dir / "ISKRA_MT175_eHZ.bin"}"\n'
        'speed = "10"\nloop = true\n',
        encoding="utf-8",
    )
    proc, log_path = start(["--config", str(conf)], tmp)
    base = f"http://127.0.0.1:{port}"
    house = make_meter("household", seed="names").meter_id
    try:
        wait_for(
            lambda: (
                {m["id"] for m in get_json(f"{base}/api/meters")["meters"] if m["live"]}
                == {house, REPLAY_ID}
            ),
            what="both meters live",
            ignore=(OSError,),
        )
        # rows of both meters in the CSV files and the database (every sync_interval)
        wait_for(
            lambda: (
                len(list((data / "csv").iterdir())) == 2
                and get_json(f"{base}/api/status")["sinks"]["sql"]["written"] >= 20
            ),
            what="rows of both meters written",
            ignore=(OSError,),
        )
        yield {"base": base, "house": house, "data": data, "conf": conf}
    finally:
        code, _ = stop(proc, signal.SIGTERM)
        assert code == 0, log_path.read_text()


@pytest.mark.slow  # smlogger run as a process
def test_api_meters_carry_name_and_label(run: Any) -> None:
    meters = {m["id"]: m for m in get_json(f"{run['base']}/api/meters")["meters"]}
    assert meters[run["house"]]["name"] == "house"
    assert meters[run["house"]]["label"] == "house \u00b7 1 ISK00 8235 0363"
    assert meters[REPLAY_ID]["name"] == "heat pump"
    assert meters[REPLAY_ID]["label"].startswith("heat pump \u00b7 ")


@pytest.mark.slow  # smlogger run as a process
def test_api_live_accepts_the_name(run: Any) -> None:
    body = get_json(f"{run['base']}/api/live?meter=heat%20pump")
    assert body["meter"] == REPLAY_ID and body["name"] == "heat pump"


@pytest.mark.slow  # smlogger run as a process
def test_metrics_have_a_name_label_on_every_meter_series(run: Any) -> None:
    text = _text(f"{run['base']}/metrics")
    meter_lines = [line for line in text.splitlines() if 'meter="' in line]
    assert meter_lines
    for line in meter_lines:
        assert 'name="house"' in line or 'name="heat pump"' in line, line
    assert f'smlogger_power_watts{{meter="{REPLAY_ID}",name="heat pump",phase="total"}}' in text


@pytest.mark.slow  # smlogger run as a process
def test_csv_folders_and_files_have_name_and_id(run: Any) -> None:
    expected = {f"house_{run['house']}", f"heat_pump_{REPLAY_ID}"}

    def folders() -> set[str]:
        return {p.name for p in (run["data"] / "csv").iterdir()}

    # rows reach the files a sync_interval after the meters went live
    wait_for(lambda: len(folders()) >= 2, what="both meters' CSV folders", ignore=(OSError,))
    assert folders() == expected
    files = [p.name for p in (run["data"] / "csv" / f"heat_pump_{REPLAY_ID}").iterdir()]
    assert files and all(f.startswith(f"heat_pump_{REPLAY_ID}_") for f in files)


@pytest.mark.slow  # smlogger run as a process
def test_export_by_name_with_names_and_z_times(run: Any) -> None:
    # `--from -5m` as two words: argparse alone would take -5m for a flag
    def stored() -> bool:  # both meters reach the database a batch after they went live
        done = export(run["conf"], "--from", "-5m", "--meter", REPLAY_ID, "--format", "ndjson")
        return done.returncode == 0 and bool(done.stdout)

    wait_for(stored, what="both meters in the database")
    out = export(run["conf"], "--from", "-5m", "--meter", "house", "--format", "ndjson")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows and {r["meter_id"] for r in rows} == {run["house"]}
    assert {r["name"] for r in rows} == {"house"}
    assert all(r["time"].endswith("Z") for r in rows)
    for row in rows:  # no binary float noise such as 12339.700400000002
        assert len(repr(row["e_sum"]).split(".")[-1]) <= 7, row["e_sum"]
    csv_out = export(run["conf"], "--from", "-5m", "--meter", REPLAY_ID)
    assert csv_out.returncode == 0, csv_out.stderr
    lines = csv_out.stdout.splitlines()
    assert lines[0].startswith("time,meter_id,name,e_sum,")
    assert lines[1].split(",")[1:3] == [REPLAY_ID, "heat pump"]


def test_meter_names_option_parsing() -> None:
    assert config.parse_meter_names({"0A01": " house "}) == "0a01=house"
    assert config.parse_meter_names("0a01=house, 0b02=garage") == "0a01=house,0b02=garage"
    with pytest.raises(ValueError, match="not ID=NAME"):
        config.parse_meter_names("house")
    with pytest.raises(ValueError, match="may not contain"):
        config.parse_meter_name("a/b")


@pytest.mark.slow  # smlogger run as a process
def test_bad_meter_name_exits_2_naming_the_key(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text('[[meter]]\nname = "up/down"\nsimulate = true\n', encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "smlogger", "run", "--config", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "meter[1].name" in out.stderr and "may not contain" in out.stderr
    assert "Traceback" not in out.stderr
