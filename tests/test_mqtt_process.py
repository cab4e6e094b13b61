"""`smlogger run --simulate --mqtt ...` as a real process against a real mosquitto: values
arrive and match what is stored, kill -9 leaves `offline`, a broker that is down at start or
restarts, TLS, a wrong password; /api/status, /healthz and /metrics show the MQTT state."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import HTTP_TROUBLE, counter, free_port, wait_for
from mqtt_broker import CertAuthority, Mosquitto, retained
from test_run_process import csv_rows, get_json, start, stop

pytestmark = pytest.mark.slow

CLIENT = "smlogger-proc"
LOGGER_AVAILABILITY = f"smlogger/logger/{CLIENT}/availability"


def run_args(data_dir: Path, http_port: int, url: str, *extra: str) -> list[str]:
    return [
        "--simulate", "--profile", "full", "--interval", "0.5", "--data-dir", str(data_dir),
        "--http", f"127.0.0.1:{http_port}", "--mqtt", url, "--mqtt-client-id", CLIENT,
        "--meter-name", "house",
        # every reading reaches CSV and SQLite at once (default: RAM for a minute, the
        # database every 5): what the broker shows can be compared with what is stored
        "--sync-interval", "0", *extra,
    ]  # fmt: skip


def mqtt_status(http_port: int) -> dict[str, object]:
    status: dict[str, object] = get_json(f"http://127.0.0.1:{http_port}/api/status")["sinks"][
        "mqtt"
    ]
    return status


def test_states_arrive_match_storage_and_kill_9_leaves_offline(tmp_path: Path) -> None:
    with Mosquitto.running(tmp_path / "broker") as broker:
        http_port = free_port()
        data_dir = tmp_path / "data"
        proc, log_path = start(run_args(data_dir, http_port, broker.url()), tmp_path)
        try:
            keys = ("e_sum", "e_export", "p_sum", "p_L3", "u_L2", "i_L1", "freq")

            def everything(r: dict[str, str]) -> bool:
                # a reading's topics are published one after the other: a snapshot taken
                # in between has some of them
                wanted = ("smlogger/house/p_sum", "smlogger/house/state", LOGGER_AVAILABILITY)
                configs = [t for t in r if t.startswith("homeassistant/sensor/")]
                return all(t in r for t in (*wanted, "smlogger/house/availability")) and all(
                    any(t.endswith(f"/{key}/config") for t in configs) for key in keys
                )

            now = wait_for(
                lambda: everything(r := retained(broker, "#")) and r,
                20,
                "values, state, availability and discovery on the broker",
            )
            assert now[LOGGER_AVAILABILITY] == "online"
            assert now["smlogger/house/availability"] == "online"
            state = json.loads(now["smlogger/house/state"])
            # /api/status and /healthz serve a snapshot of the sinks refreshed every second
            wait_for(
                lambda: (
                    (s := mqtt_status(http_port))["state"] == "connected" and s["degraded"] is False
                ),
                what="connected in /api/status",
                ignore=(*HTTP_TROUBLE, KeyError),
            )
            wait_for(
                lambda: get_json(f"http://127.0.0.1:{http_port}/healthz")["status"] == "ok",
                what="healthy",
                ignore=(*HTTP_TROUBLE, KeyError),
            )
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics") as response:
                metrics = response.read().decode()
            assert 'smlogger_sink_stat{sink="mqtt",stat="connected"} 1' in metrics
            assert 'smlogger_sink_stat{sink="mqtt",stat="published"}' in metrics
            # the row of that state reaches the CSV file (in the page cache) before the kill
            stamp = state["time"].replace("+00:00", "")[:23]
            wait_for(
                lambda: any(
                    r["time"].rstrip("Z").startswith(stamp) for r in csv_rows(data_dir / "csv")
                ),
                what="the state's row in the CSV file",
                ignore=(OSError,),
            )
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        # the broker publishes the Last Will for the killed logger
        gone = wait_for(
            lambda: retained(broker, LOGGER_AVAILABILITY).get(LOGGER_AVAILABILITY) == "offline",
            15,
            "offline after kill -9",
        )
        assert gone
        assert "Traceback" not in log_path.read_text()
    # the state on the broker is a reading the logger also stored
    rows = {r["time"]: r for r in csv_rows(data_dir / "csv")}
    stamp = state["time"].replace("+00:00", "")
    match = [r for t, r in rows.items() if t.rstrip("Z").startswith(stamp[:23])]
    assert match, (state["time"], sorted(rows)[-3:])
    for name in ("e_sum", "p_sum", "p_L1", "u_L1", "i_L1", "freq"):
        assert float(match[0][name]) == pytest.approx(state[name], abs=1e-3), name


def test_broker_down_at_start_then_up_then_restarted(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    http_port = free_port()
    data_dir = tmp_path / "data"
    # attempts at most 2 s apart (default: up to 60 s), so "up again" is seen within seconds
    args = run_args(data_dir, http_port, broker.url(), "--mqtt-reconnect-max", "2")
    proc, log_path = start(args, tmp_path)
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_for(
            lambda: mqtt_status(http_port)["state"] == "unreachable",
            20,
            "unreachable broker in /api/status",
            ignore=(OSError, KeyError),
        )
        health = wait_for(
            lambda: (h := get_json(f"{base}/healthz"))["status"] == "degraded" and h,
            what="degraded health",
            ignore=(*HTTP_TROUBLE, KeyError),  # (503 until the first frame)
        )
        assert "unreachable" in health["degraded"]["mqtt"]
        # the meter is still read and stored meanwhile
        wait_for(
            lambda: get_json(f"{base}/api/status")["sinks"]["sql"]["written"] >= 3,
            20,
            "rows in SQLite without a broker",
            ignore=(*HTTP_TROUBLE, KeyError),
        )
        broker.start()
        wait_for(
            lambda: retained(broker, "smlogger/house/p_sum"),
            20,
            "values once the broker is up",
        )
        wait_for(
            lambda: get_json(f"{base}/healthz")["status"] == "ok",
            10,
            "healthy again",
            ignore=(*HTTP_TROUBLE, KeyError),
        )
        # restart without persistence: every retained message is gone with it
        broker.stop()
        time.sleep(5)
        broker.start()

        def back() -> bool:
            now = retained(broker, "#")
            return bool(
                now.get(LOGGER_AVAILABILITY) == "online"
                and now.get("smlogger/house/state")
                and [t for t in now if t.endswith("/e_sum/config")]
            )

        wait_for(back, 15, "discovery and states back after the broker restart")
        # /api/status refreshes sink figures every second
        wait_for(
            # reconnected after every loss (a loaded machine may see more than the restart)
            lambda: (
                counter(s := mqtt_status(http_port), "disconnects") >= 1
                and s["connects"] == counter(s, "disconnects") + 1
            ),
            5,
            "reconnect counted",
            ignore=(*HTTP_TROUBLE, KeyError),
        )
    finally:
        code, _ = stop(proc)
        broker.stop()
    assert code == 0
    assert len(csv_rows(data_dir / "csv")) >= 3
    stderr = log_path.read_text()
    # one line per change of state, not per retry
    assert stderr.count("mqtt: unreachable") <= 2, stderr


def test_tls_with_test_ca_via_the_command_line(tmp_path: Path) -> None:
    ca = CertAuthority.create(tmp_path / "ca")
    with Mosquitto.running(tmp_path / "broker", tls=ca) as broker:
        http_port = free_port()
        proc, _ = start(
            run_args(tmp_path / "data", http_port, broker.url(), "--mqtt-ca-file",
                     str(ca.ca_cert), "--no-csv", "--no-db"),
            tmp_path,
        )  # fmt: skip
        try:
            assert broker.url().startswith("mqtts://")
            wait_for(lambda: retained(broker, "smlogger/house/p_sum"), 20, "values over TLS")
        finally:
            code, _ = stop(proc)
        assert code == 0


def test_wrong_password_is_not_authorised_and_never_logged(tmp_path: Path) -> None:
    secret = "Wr0ng%Pass"
    with Mosquitto.running(tmp_path / "broker", users={"smlogger": "right"}) as broker:
        http_port = free_port()
        proc, log_path = start(
            run_args(tmp_path / "data", http_port, "mqtt://smlogger@" + broker.url()[7:],
                     "--no-csv", "--no-db", "-v"),
            tmp_path,
            env={"SMLOGGER_MQTT_PASSWORD": secret},
        )  # fmt: skip
        try:
            status = wait_for(
                lambda: (s := mqtt_status(http_port))["state"] == "not authorised" and s,
                20,
                "not authorised",
                ignore=(OSError, KeyError),
            )
            assert "password" in str(status["detail"])
            time.sleep(6)
            failures = mqtt_status(http_port)["connect_failures"]
            assert isinstance(failures, int) and 2 <= failures <= 8  # backoff, not a busy loop
            whole = json.dumps(get_json(f"http://127.0.0.1:{http_port}/api/status"))
            assert secret not in whole
        finally:
            code, _ = stop(proc)
        assert code == 0
        stderr = log_path.read_text()
        assert "not authorised" in stderr
        assert secret not in stderr
        assert broker.log_text().count("not authorised") >= 2


def test_mqtt_test_command(tmp_path: Path) -> None:
    def mqtt_test(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "smlogger", "mqtt-test", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    with Mosquitto.running(tmp_path / "broker") as broker:
        result = mqtt_test("--mqtt", broker.url(), "--simulate", "--meter-name", "house",
                           "--meter-model", "MT631")  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "publishes under smlogger/house/" in result.stdout
        assert "manufacturer Iskraemeco, model MT631" in result.stdout
        assert "Energy import" in result.stdout and result.stdout.rstrip().endswith("OK")
        on_broker = retained(broker, "homeassistant/#")
        assert [t for t in on_broker if t.endswith("/e_sum/config")]
    result = mqtt_test("--mqtt", broker.url(), "--timeout", "3")
    assert result.returncode == 2
    assert "NOT CONNECTED: unreachable" in result.stdout
    result = mqtt_test("--simulate")
    assert result.returncode == 2 and "no broker" in result.stderr
