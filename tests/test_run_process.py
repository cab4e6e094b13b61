"""`smlogger run` as a real process: fresh-install demo, SIGTERM/SIGINT flush, kill -9 recovery,
systemd notifications."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import csv_texts, free_port, wait_for

from smlogger import sml
from smlogger.capture import CaptureWriter
from smlogger.csvlog import columns
from smlogger.simulate import make_meter

pytestmark = pytest.mark.slow  # long `smlogger run` processes, killed and restarted

EVER = (datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc))


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def start(
    args: list[str], tmp_path: Path, env: dict[str, str] | None = None, name: str = "stderr"
) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = tmp_path / f"{name}.txt"
    # a fresh HOME: the default data dir ~/.local/share/smlogger starts empty
    full_env = {**os.environ, "HOME": str(tmp_path / "home")}
    # the RAM tier (storage.ram_dir = auto) inside the test's directory, not in /dev/shm
    full_env["RUNTIME_DIRECTORY"] = str(tmp_path / "run")
    for inherited in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
        full_env.pop(inherited, None)
    full_env.update(env or {})
    err = open(log_path, "wb")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [sys.executable, "-m", "smlogger", "run", *args], stderr=err, env=full_env
    )
    err.close()
    return proc, log_path


# the longest a clean shutdown may take: the service needs well under 5 s, but a loaded CI
# machine (2 cores, servers, a browser) can stall a process for seconds
SHUTDOWN_S = 20.0


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> tuple[int, float]:
    """Sends `sig` and waits for the exit: (exit code, seconds it took). A process that does not
    exit within 30 s is killed (so no test leaves it behind) and fails the test."""
    began = time.monotonic()
    proc.send_signal(sig)
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError(f"smlogger did not exit within 30 s of signal {sig}") from None
    return code, time.monotonic() - began


def csv_row_count(folder: Path) -> int:
    """Rows (header lines not counted) in every CSV file under `folder`, of every day."""
    return sum(len(text.splitlines()) - 1 for _, text in csv_texts(folder))


def csv_rows(folder: Path) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for path in sorted(folder.rglob("*.csv*")):
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode()
        assert text.endswith("\n"), f"{path} ends in a partial line"
        rows = list(csv.DictReader(io.StringIO(text)))
        for row in rows:
            assert None not in row and None not in row.values(), f"bad row in {path}: {row}"
        assert rows == [] or list(rows[0]) == columns(False)
        out += rows
    return out


def db_times(data_dir: Path) -> list[str]:
    from smlogger.store import StoreReader, open_database

    db = open_database(None, data_dir)
    try:
        readings = list(StoreReader(db).export(None, *EVER))
    finally:
        db.close()
    return [
        r.time.strftime("%Y-%m-%dT%H:%M:%S.") + f"{r.time.microsecond // 1000:03d}Z"
        for r in readings
    ]


def test_fresh_install_simulate_fills_sqlite_csv_and_serves_the_page(tmp_path: Path) -> None:
    port = free_port()
    proc, log_path = start(
        ["--simulate", "--interval", "0.2", "--http", f"127.0.0.1:{port}"], tmp_path
    )
    base = f"http://127.0.0.1:{port}"
    try:
        live = wait_for(lambda: get_json(f"{base}/api/live"), what="live data", ignore=(OSError,))
        wait_for(
            lambda: get_json(f"{base}/api/live")["fields"]["p_sum"] is not None,
            what="a reading",
            ignore=(OSError,),
        )
        with urllib.request.urlopen(f"{base}/", timeout=5) as response:
            page = response.read().decode()
            assert response.status == 200 and "<html" in page.lower()
        assert live["meter"].startswith("0a0149534b")
        status = get_json(f"{base}/api/status")
        assert status["sources"]["meter"]["state"] == "connected"
        # readings reach the journal at once and the database in batches (a minute by
        # default, and at shutdown: the database holds every CSV row then, see below)
        wait_for(
            lambda: get_json(f"{base}/api/status")["sinks"]["sql"]["queue_depth"] >= 5,
            what="readings in the SQL sink's journal",
            ignore=(OSError,),
        )
        assert status["sinks"]["csv"]["last_error"] is None
    finally:
        code, took = stop(proc)
    stderr = log_path.read_text()
    assert code == 0 and took < SHUTDOWN_S, stderr
    data_dir = tmp_path / "home" / ".local" / "share" / "smlogger"  # the default data dir
    assert (data_dir / "smlogger.db").is_file()
    rows = csv_rows(data_dir / "csv")
    assert len(rows) >= 5
    assert sorted(r["time"] for r in rows) == sorted(db_times(data_dir))


def _capture(tmp_path: Path, frames: int) -> Path:
    meter = make_meter("household")
    path = tmp_path / "recording.txt"
    writer = CaptureWriter(path)
    start_time = datetime(2024, 3, 9, 23, 59, tzinfo=timezone.utc)
    for i in range(frames):
        at = start_time + timedelta(seconds=i)
        writer.write(at, meter.frame(at))
    writer.close()
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_flushes_sinks_and_exits_0_within_5_s(tmp_path: Path, sig: int) -> None:
    # 1000 frames at speed 40 take 25 s: the signal comes in the middle of the replay
    recording = _capture(tmp_path, 1000)
    data_dir = tmp_path / "data"
    port = free_port()
    args = ["--replay", str(recording), "--speed", "40", "--data-dir", str(data_dir)]
    proc, log_path = start([*args, "--http", f"127.0.0.1:{port}"], tmp_path)

    def readings() -> int:
        sources = get_json(f"http://127.0.0.1:{port}/api/status")["sources"]
        return sum(int(s["stats"]["readings"]) for s in sources.values())

    try:
        # past frame 60 (midnight in the recording), so both days have rows
        wait_for(lambda: readings() > 70, what="70 readings", ignore=(OSError,))
    except BaseException:
        stop(proc)
        raise
    # readings wait in the RAM tier (RUNTIME_DIRECTORY, see `start`) ...
    [ram] = (tmp_path / "run").glob("smlogger-*")
    assert {p.name for p in ram.iterdir()} == {"sql", "csv"}
    code, took = stop(proc, sig)
    stderr = log_path.read_text()
    assert code == 0, stderr
    assert took < SHUTDOWN_S, stderr
    assert "received: flushing and exiting" in stderr
    # ... which a clean shutdown empties into the sinks and removes
    assert not ram.exists()
    rows = csv_rows(data_dir / "csv")
    assert 70 < len(rows) < 1000
    # the replay crossed midnight: two day files
    assert len(list((data_dir / "csv").rglob("*.csv*"))) == 2
    times = [r["time"] for r in rows]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert sorted(db_times(data_dir)) == times  # every reading in both, no more


def test_replay_to_the_end_exits_0(tmp_path: Path) -> None:
    recording = _capture(tmp_path, 30)
    data_dir = tmp_path / "data"
    proc, log_path = start(
        [
            "--replay",
            str(recording),
            "--speed",
            "max",
            "--data-dir",
            str(data_dir),
            "--http",
            "off",
            "--store-interval",
            "10",
        ],
        tmp_path,
    )
    code = proc.wait(30)
    stderr = log_path.read_text()
    assert code == 0, stderr
    assert "all sources finished" in stderr
    rows = list(csv.DictReader(io.StringIO(next((data_dir / "csv").rglob("*.csv")).read_text())))
    # 30 frames from 23:59:00: buckets of 10 s
    assert [r["samples"] for r in rows] == ["10", "10", "10"]
    assert len(db_times(data_dir)) == 3


def test_kill_9_then_restart_leaves_csv_and_db_consistent(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    args = ["--simulate", "--interval", "0.05", "--data-dir", str(data_dir), "--http", "off"]
    # rows reach the CSV file every sync_interval (commit_interval 0); between, they wait in
    # the RAM journal, which a kill -9 does not lose (the next start writes them)
    args += ["--sync-interval", "1", "--commit-interval", "0"]
    proc, _ = start(args, tmp_path, name="first")
    # rows of every day file: the run may cross a real midnight
    wait_for(lambda: csv_row_count(data_dir / "csv") > 20, what="rows", ignore=(OSError,))
    proc.kill()
    proc.wait(10)
    path = max((data_dir / "csv").rglob("*.csv"), key=lambda p: p.name)  # today's file
    # a kill -9 leaves the RAM tier for the next start (and the simulated meter's counters)
    tier = sorted(p.name for p in (tmp_path / "run").glob("smlogger-*/*"))
    assert tier == ["counters", "csv", "sql"]
    # the worst moment for a crash: in the middle of a row
    with open(path, "ab") as fh:
        fh.write(b"2099-01-01T00:00:00.000Z,0a0149534b0001d53531,12339.8")
    killed_at = datetime.now(timezone.utc)
    proc, log_path2 = start(args, tmp_path, name="second")
    wait_for(
        lambda: csv_row_count(data_dir / "csv") > 60,
        what="rows after restart",
        ignore=(OSError,),
    )
    code, took = stop(proc)
    stderr = log_path2.read_text()
    assert code == 0 and took < SHUTDOWN_S, stderr
    assert "removed a partial last line" in stderr
    rows = csv_rows(data_dir / "csv")
    times = [r["time"] for r in rows]
    assert "2099-01-01T00:00:00.000Z" not in times
    assert times == sorted(times) and len(set(times)) == len(times)
    stored = db_times(data_dir)
    assert len(set(stored)) == len(stored), "duplicates in the database"
    # both sinks agree, except at most the readings in flight when the process was killed
    differ = set(times) ^ set(stored)
    assert len(differ) <= 5, sorted(differ)
    cutoff = (killed_at - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S")
    assert all(t >= cutoff for t in differ), sorted(differ)
    assert all(t in set(stored) for t in times if t > killed_at.strftime("%Y-%m-%dT%H:%M:%S.%f"))


def test_power_cut_csv_rows_come_back_from_the_database(tmp_path: Path) -> None:
    """CSV rows wait in RAM for commit_interval; a power cut loses them there (and the last
    sync_interval of readings everywhere). The next start writes what the database has."""
    data_dir = tmp_path / "data"
    args = ["--simulate", "--interval", "0.05", "--data-dir", str(data_dir), "--http", "off"]
    args += ["--sync-interval", "1", "--commit-interval", "3600"]
    proc, _ = start(args, tmp_path, name="first")
    try:
        # the CSV file gets its header (and no row: they wait an hour), the disk journal rows
        wait_for(
            lambda: sum(p.stat().st_size for p in (data_dir / "spool").glob("seg-*")) > 2000,
            what="readings in the disk journal",
            ignore=(OSError,),
        )
    finally:
        proc.kill()  # the power cut: no clean stop ...
        proc.wait(10)
    shutil.rmtree(tmp_path / "run")  # ... and the RAM directory is gone with the power
    assert csv_rows(data_dir / "csv") == []
    proc, log_path = start(args, tmp_path, name="second")
    try:
        wait_for(lambda: "rows the files lacked" in log_path.read_text(), what="the catch-up")
        # in the file at once, not an hour later
        assert len(csv_rows(data_dir / "csv")) > 5
    finally:
        code, _ = stop(proc)
    assert code == 0, log_path.read_text()
    times = [r["time"] for r in csv_rows(data_dir / "csv")]
    stored = db_times(data_dir)
    assert times == sorted(times) and len(set(times)) == len(times)
    assert times == stored  # every reading the database kept is in the CSV file once


def test_sd_notify_ready_watchdog_stopping(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(20)
    messages: list[str] = []
    proc, log_path = start(
        ["--simulate", "--data-dir", str(tmp_path / "data"), "--http", "off", "--no-db"],
        tmp_path,
        env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"},
    )
    try:
        while not any("WATCHDOG=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert "READY=1" in messages[0] and f"MAINPID={proc.pid}" in messages[0]
    finally:
        code, _ = stop(proc)
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except socket.timeout:
            break
        if "STOPPING=1" in messages[-1]:
            break
    sock.close()
    assert code == 0, log_path.read_text()
    assert any("STOPPING=1" in m for m in messages)


def test_bad_option_exits_2_naming_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "smlogger", "run", "--simulate", "--csv-rotate", "weekly"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "option --csv-rotate: invalid value 'weekly'" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "smlogger", "run", "--replay", str(tmp_path / "none.bin")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "none.bin not found" in proc.stderr


def test_frames_in_capture_are_real_sml(tmp_path: Path) -> None:
    path = _capture(tmp_path, 3)
    lines = path.read_text().splitlines()[1:]
    frames = [f for line in lines for f in sml.decode(bytes.fromhex(line.split()[1]))]
    assert len(frames) == 3 and all(f["ok"] for f in frames)


def test_several_meters_in_one_process(tmp_path: Path, recordings_dir: Path) -> None:
    data_dir = tmp_path / "data"
    conf = tmp_path / "smlogger.toml"
    conf.write_text(
        f'data_dir = "{data_dir}"\n[http]\nlisten = "off"\n'
        f'[[meter]]\nname = "house"\nreplay = "{recordings_dir / "ISKRA_MT175_eHZ.bin"}"\n'
        'speed = "max"\n'
        f'[[meter]]\nname = "garage"\nreplay = "{recordings_dir / "EMH-ED300L_delivery.bin"}"\n'
        'speed = "max"\ndirection_from_status = true\nid = "garage"\n'
    )
    proc, log_path = start(["--config", str(conf)], tmp_path)
    code = proc.wait(30)
    assert code == 0, log_path.read_text()
    rows = csv_rows(data_dir / "csv")
    by_meter: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_meter.setdefault(row["meter_id"], []).append(row)
    assert {k: len(v) for k, v in by_meter.items()} == {"090149534b000403df63": 10, "garage": 2}
    assert all(float(r["p_sum"]) < 0 for r in by_meter["garage"])
    assert len(db_times(data_dir)) == 12


def test_http_token_protects_the_page(tmp_path: Path) -> None:
    port = free_port()
    proc, log_path = start(
        ["--simulate", "--no-db", "--no-csv", "--http", f"127.0.0.1:{port}"],
        tmp_path,
        env={"SMLOGGER_HTTP_TOKEN": "letmein-42"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: get_json(f"{base}/api/live?token=letmein-42"), what="page up", ignore=(OSError,)
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/api/live", timeout=5)
        assert info.value.code == 401
        info.value.close()  # the error holds the response and its socket
    finally:
        code, _ = stop(proc)
    stderr = log_path.read_text()
    assert code == 0, stderr
    assert "letmein-42" not in stderr
