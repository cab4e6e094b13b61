"""Building the running logger from a loaded configuration: meters, sinks, web page."""

from __future__ import annotations

import dataclasses
import socket
import threading
from pathlib import Path

import pytest
from helpers import load_config as load
from helpers import wait_for

from smlogger import config, service
from smlogger.config import ConfigError
from smlogger.csvlog import CsvLog
from smlogger.live import LiveState
from smlogger.sources import ReplaySource, SerialSettings, SerialSource, SimulatedSource, TcpSource
from smlogger.store import Store


def test_serial_meter_gets_every_configured_setting() -> None:
    serial = ["--port", "/dev/ttyUSB7", "--baudrate", "2400", "--parity", "E", "--bytesize", "7"]
    more = ["--stopbits", "2", "--rtscts", "--reconnect-max", "5", "--watchdog", "12"]
    meter = ["--crc", "kermit", "--max-power-kw", "3", "--meter-id", "house"]
    cfg = load([*serial, *more, *meter])
    spec = service.build_meter(cfg.meters[0], LiveState())
    assert isinstance(spec.source, SerialSource)
    settings = spec.source.settings
    assert (settings.port, settings.baudrate, settings.parity, settings.bytesize) == (
        "/dev/ttyUSB7",
        2400,
        "E",
        7,
    )
    assert (settings.stopbits, settings.rtscts, settings.xonxoff) == (2.0, True, False)
    assert spec.source._backoff.maximum == 5.0
    assert (spec.key, spec.crc, spec.watchdog_s, spec.max_power_w, spec.meter_id) == (
        "meter",
        "kermit",
        12.0,
        3000.0,
        "house",
    )


def test_serial_settings_are_meter_options() -> None:
    meter_keys = {o.key for o in config.METER_OPTIONS}
    assert {f.name for f in dataclasses.fields(SerialSettings)} <= meter_keys


def test_tcp_replay_and_simulated_meters(tmp_path: Path) -> None:
    tcp = service.build_meter(load(["--tcp", "[::1]:8888"]).meters[0], LiveState())
    assert isinstance(tcp.source, TcpSource)
    assert (tcp.source.host, tcp.source.port) == ("::1", 8888)

    recording = tmp_path / "dump.bin"
    recording.write_bytes(b"")
    cfg = load(["--replay", str(recording), "--speed", "max", "--replay-interval", "2", "--loop"])
    replay = service.build_meter(cfg.meters[0], LiveState()).source
    assert isinstance(replay, ReplaySource)
    assert (replay.speed, replay.interval, replay.loop) == (None, 2.0, True)

    live = LiveState()
    sim = service.build_meter(load(["--simulate", "--interval", "0.5"]).meters[0], live)
    assert isinstance(sim.source, SimulatedSource) and sim.source.interval == 0.5
    # the simulated meter is on the page before its first frame
    assert live.meters() == [sim.source.meter.meter_id]


def test_missing_replay_file_is_a_config_error(tmp_path: Path) -> None:
    cfg = load(["--replay", str(tmp_path / "nope.bin")])
    with pytest.raises(ConfigError, match=r"meter: replay file .*nope\.bin not found"):
        service.build_meter(cfg.meters[0], LiveState())


def test_sinks_follow_the_configuration(tmp_path: Path) -> None:
    data = ["--simulate", "--data-dir", str(tmp_path)]
    cfg = load([*data, "--store-interval", "10", "--csv-rotate", "hourly"])
    store = service.open_store(cfg)
    assert isinstance(store, Store)
    try:
        sinks = service.build_sinks(cfg, store)
        assert [s.name for s in sinks] == ["sql", "csv"] and sinks[0] is store
        csv = sinks[1]
        assert isinstance(csv, CsvLog)
        assert (csv.directory, csv.rotate, csv.aggregated) == (tmp_path / "csv", "hourly", True)
    finally:
        store.close()
    assert (tmp_path / "smlogger.db").is_file()

    off = load([*data, "--no-db", "--no-csv"])
    assert service.open_store(off) is None
    assert service.build_sinks(off, None) == []


def test_web_page_off_or_on(tmp_path: Path) -> None:
    live = LiveState()
    off = load(["--simulate", "--http", "off"])
    assert service.start_web(off, live, None, dict) is None

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    on = load(["--simulate", "--http", f"127.0.0.1:{port}"])
    server = service.start_web(on, live, None, dict)
    assert server is not None
    try:
        assert server.url == f"http://127.0.0.1:{port}/"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        server.stop()


def test_connection_limit_per_client_is_configurable() -> None:
    cfg = load(["--simulate", "--http", "127.0.0.1:0", "--http-max-connections-per-client", "2"])
    server = service.start_web(cfg, LiveState(), None, dict)
    assert server is not None

    def third_refused() -> bool:
        # the held connections count once the server has accepted them
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as third:
            third.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            return third.recv(100).startswith(b"HTTP/1.1 503")

    try:
        assert server.limits.max_per_client == 2
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]
        try:
            wait_for(third_refused, 10, "the third connection refused")
        finally:
            for sock in held:
                sock.close()
    finally:
        server.stop()
    with pytest.raises(ConfigError, match=r"--http-max-connections-per-client.*at least 1"):
        load(["--http-max-connections-per-client", "0"])


def test_status_line_names_each_source() -> None:
    live = LiveState()
    assert service.status_line(live) == "starting"
    live.set_source("meter", "waiting", detail="no device")
    assert service.status_line(live) == "meter: waiting, 0 readings"
    missing = {"code": "missing", "sentence": "/dev/x does not exist", "hint": ""}
    live.set_diagnosis("meter", missing)
    assert service.status_line(live) == "meter: waiting (missing), 0 readings"


def test_signals_set_the_stop_event() -> None:
    stop = threading.Event()
    signals = service.Signals(stop)
    signals(15, None)
    assert stop.is_set() and signals.received == 15
