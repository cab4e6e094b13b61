"""The running logger: meters, sinks and the web page built from a `Config`, and the run loop.

`smlogger.cli` parses arguments and loads the configuration; everything that turns that
configuration into running parts lives here, one function per part, so a new sink or a new
supervisor (MQTT, diagnosis, a journal) has one obvious place to be added:

* `build_meter` -- a `MeterSpec` (source, decoder options, capture) for one configured meter
* `open_store` -- the SQL sink (the web page reads the same database through a `StoreReader`)
* `build_sinks` -- every sink the pipeline feeds, one block per sink
* `mqtt_settings` -- the [mqtt] section as the MQTT sink's settings
* `start_web` -- the web page and API
* `run` -- start it all, wait for a signal or the end of every source, shut down in budget
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any, Optional, TextIO
from urllib.parse import urlsplit

from smlogger import __version__, preflight, sml
from smlogger.capture import CaptureWriter
from smlogger.config import Config, ConfigError, MeterConfig, split_host_port
from smlogger.csvlog import CsvLog
from smlogger.diskqueue import DiskQueue, QueueLockedError
from smlogger.live import LiveState
from smlogger.logutil import describe
from smlogger.names import NAMES_FILE, MeterNames, is_automatic_name, write_names_file
from smlogger.pipeline import MeterSpec, Pipeline, Sink
from smlogger.reading import Reading, readings_from_frame
from smlogger.sdnotify import Notifier
from smlogger.sources import (
    ReplaySource,
    SerialSettings,
    SerialSource,
    SimulatedSource,
    Source,
    TcpSource,
)
from smlogger.store import Store, StoreReader, open_database

if TYPE_CHECKING:
    # imported where used: a replay with http off and no MQTT (the benchmark, a batch import)
    # should not load the web stack (bottle, h11, asyncio), the MQTT settings or the simulator
    from smlogger.mqtt.settings import MqttSettings
    from smlogger.web import WebServer

log = logging.getLogger("smlogger")

CSV_CATCH_UP_S = 30.0  # at most this long at start for the previous run's journal (catch_up_csv)
COUNTERS_DIR = "counters"  # in the RAM tier's directory: the simulated meters' counters
SETUP_FAILURE_BUDGET_S = 4.0  # stopping after a failed start: nothing worth waiting for
STATUS_EVERY_S = 10.0  # how often `systemctl status` gets a fresh line
BULK_GC_EVERY_S = 60.0  # a replay at full speed: collections this often instead (BulkCollector)

StatusExtra = Callable[[], dict[str, Any]]


# ---- meters ----------------------------------------------------------------------------------


def _source(
    meter: MeterConfig, live: LiveState, data_dir: Optional[Path], ram_dir: Optional[Path]
) -> Source:
    kind = meter.source_kind
    if kind == "port":
        # every serial setting is the meter option of the same name (tests/test_service.py)
        serial = {f.name: getattr(meter, f.name) for f in fields(SerialSettings)}
        return SerialSource(SerialSettings(**serial), reconnect_max=meter.reconnect_max)
    if kind == "tcp":
        host, port = split_host_port(meter.tcp)
        return TcpSource(host, port, reconnect_max=meter.reconnect_max)
    if kind == "replay":
        path = Path(os.path.expanduser(meter.replay))
        if not path.is_file():
            raise ConfigError(f"{meter.name}: replay file {path} not found")
        start = None
        if meter.replay_start:
            start = datetime.fromisoformat(meter.replay_start.replace("Z", "+00:00"))
            if start.tzinfo is None:
                start = start.replace(tzinfo=timezone.utc)  # documented: no zone = UTC
        return ReplaySource(
            path,
            speed=meter.speed_factor,
            interval=meter.replay_interval,
            loop=meter.loop,
            start=start,
        )
    from smlogger.simulate import CounterFile, make_meter

    simulated = make_meter(meter.profile, seed=meter.seed)
    # the page lists the simulated meter before its first frame, like a configured meter id
    live.add_meter(meter.id or simulated.meter_id)
    counters = None
    if data_dir is not None:
        # its counters continue after a restart, as a real meter's do; saved every minute in
        # the RAM directory (free) and every 15 minutes in the data dir (the SD card)
        name = f"simulated-{simulated.meter_id}.json"
        counters = CounterFile(
            data_dir / name, ram_path=None if ram_dir is None else ram_dir / name
        )
        counters.restore(simulated)
    return SimulatedSource(simulated, interval=meter.interval, counters=counters)


def build_meter(
    meter: MeterConfig,
    live: LiveState,
    data_dir: Optional[Path] = None,
    ram_dir: Optional[Path] = None,
) -> MeterSpec:
    """The pipeline's description of one configured meter (opens its capture file, if any).

    `data_dir` keeps a simulated meter's counters across restarts (None: start afresh), with
    a more frequent copy in `ram_dir` (the RAM tier's directory, when there is one).
    """
    source = _source(meter, live, data_dir, ram_dir)
    capture = CaptureWriter(Path(os.path.expanduser(meter.capture))) if meter.capture else None
    return MeterSpec(
        key=meter.name,
        source=source,
        crc=meter.crc,
        direction_from_status=meter.direction_from_status,
        accept_bad_msg_crc=meter.accept_bad_msg_crc,
        meter_id=meter.id or None,
        watchdog_s=meter.watchdog,
        max_power_w=meter.max_power_kw * 1000.0,
        capture=capture,
    )


# ---- sinks -----------------------------------------------------------------------------------


def ram_base(config: Config) -> Optional[Path]:
    """Where the RAM tier lives (see `storage.ram_dir`), one directory per data dir; None
    when it is off or no tmpfs is at hand."""
    setting = config.storage_ram_dir.strip()
    if setting in ("", "off") or config.storage_sync_interval <= 0:
        return None
    if setting == "auto":
        runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        if runtime:
            root = Path(runtime)
        elif os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
            root = Path("/dev/shm")
        else:
            log.warning("no tmpfs for storage.ram_dir: every reading is written to disk at once")
            return None
    else:
        root = Path(os.path.expanduser(setting))
    tag = hashlib.sha1(str(config.data_path.resolve()).encode()).hexdigest()[:10]
    return root / f"smlogger-{os.getuid()}-{tag}"


def remove_empty_ram_tier(base: Optional[Path]) -> None:
    """After the sinks closed: remove the RAM tier's directory when nothing waits in it.

    A tmpfs is memory and every data dir gets its own directory there, so empty ones would
    pile up (tests, tried-out data dirs). Readings a sink could not write stay, for the next
    start; a journal still held (a sink that did not finish closing) is left alone."""
    if base is None or not base.is_dir():
        return
    for sub in sorted(p for p in base.iterdir() if p.is_dir()):
        if sub.name == COUNTERS_DIR:
            # the simulator's counters: it saved them to the data dir too when it stopped
            shutil.rmtree(sub, ignore_errors=True)
            continue
        try:
            # opening takes the journal's lock and reads its acknowledged position
            ram = DiskQueue(sub, max_age_s=None, sync_interval=3600.0, persist_interval=0.0)
        except (OSError, QueueLockedError) as exc:
            log.debug("RAM tier %s kept: %s", sub, exc)
            continue
        try:
            empty = ram.depth == 0
        finally:
            ram.close()
        if empty:
            shutil.rmtree(sub, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty: kept for the next start (the sink said so)
        base.rmdir()


def open_store(config: Config) -> Optional[Store]:
    """The SQL sink, or None when the database is off."""
    if not config.database_enabled:
        return None
    db = open_database(config.database_url or None, config.data_path)
    return Store(
        db,
        spool_dir=config.data_path / "spool",
        max_spool_age_days=config.database_spool_max_age_days,
        legacy_table=config.database_legacy_table,
        legacy_local_time=config.database_legacy_local_time,
        batch_size=config.database_batch_size,
        sync_interval=config.storage_sync_interval,
        shutdown_timeout=config.shutdown_timeout,
        ram_dir=None if (base := ram_base(config)) is None else base / "sql",
        commit_interval=config.storage_commit_interval,
    )


def meter_names(config: Config) -> MeterNames:
    """Meter id -> name from the `meter_names` table and the [[meter]] names (smlogger.names)."""
    return MeterNames.from_config(config.meter_name_table, [(m.name, m.id) for m in config.meters])


def _csv_sink(config: Config, names: MeterNames) -> CsvLog:
    return CsvLog(
        config.csv_path,
        rotate=config.csv_rotate,
        max_size=int(config.csv_max_size_mb * 1024 * 1024),
        compress=config.csv_compress,
        keep_days=config.csv_keep_days,
        tz=config.csv_timezone,
        aggregated=config.store_interval > 0,
        names=names.name,
        sync_interval=config.storage_sync_interval,
        ram_dir=None if (base := ram_base(config)) is None else base / "csv",
        write_interval=config.storage_commit_interval,
    )


def mqtt_settings(config: Config) -> Optional[MqttSettings]:
    """The [mqtt] section as MqttSettings, None when MQTT is off; ConfigError when invalid."""
    if not config.mqtt_url:
        return None
    from smlogger.mqtt.settings import MqttSettings, MqttSettingsError, default_client_id

    # the meter_names table names ids on a bus; [[meter]] names follow below
    names: dict[str, str] = dict(config.meter_name_table)
    models: dict[str, str] = {}
    for meter in config.meters:
        keys = [meter.name] + ([meter.id] if meter.id else [])
        for key in keys:
            if not is_automatic_name(meter.name):  # topics then use the unique meter id
                names[key] = meter.name
            if meter.model:
                models[key] = meter.model
    try:
        return MqttSettings(
            url=config.mqtt_url,
            password=config.mqtt_password or None,
            password_file=_path(config.mqtt_password_file),
            prefix=config.mqtt_prefix,
            discovery=config.mqtt_discovery,
            discovery_prefix=config.mqtt_discovery_prefix,
            qos=config.mqtt_qos,
            retain=config.mqtt_retain,
            ca_file=_path(config.mqtt_ca_file),
            client_cert=_path(config.mqtt_client_cert),
            client_key=_path(config.mqtt_client_key),
            client_id=config.mqtt_client_id or default_client_id(),
            interval=config.mqtt_interval,
            deadband=config.mqtt_deadband,
            heartbeat=config.mqtt_heartbeat,
            queue_size=config.mqtt_queue_size,
            offline_after=config.mqtt_offline_after,
            remove_after=config.mqtt_remove_after,
            reconnect_max=config.mqtt_reconnect_max,
            meter_names=MappingProxyType(names),
            meter_models=MappingProxyType(models),
        )
    except MqttSettingsError as exc:
        raise ConfigError(str(exc)) from None


def _path(text: str) -> Optional[Path]:
    return Path(os.path.expanduser(text)) if text else None


def _mqtt_sink(settings: MqttSettings, live: LiveState) -> Sink:
    from smlogger.mqtt.sink import MqttSink  # paho only when MQTT is on
    from smlogger.web.payload import link_for_meter

    def diagnostics(meter_id: str) -> dict[str, Any]:
        """The link diagnosis of the source that feeds `meter_id`."""
        return link_for_meter(live.source_status(), meter_id)

    def source_of(meter_id: str) -> Optional[str]:
        """Name of the source that feeds `meter_id`, or None."""
        for name, source in live.source_status().items():
            if meter_id in source.get("meters", ()):
                return name
        return None

    return MqttSink(settings, diagnostics=diagnostics, source_of=source_of)


def build_sinks(
    config: Config, store: Optional[Store], live: Optional[LiveState] = None
) -> list[Sink]:
    """Every sink the pipeline feeds, in this order: SQL (`store`), CSV, MQTT (which needs
    `live` for the link diagnostics it publishes; `live.names` names the meters)."""
    sinks: list[Sink] = []
    if store is not None:
        sinks.append(store)
    try:
        if config.csv_enabled:
            names = live.names if live is not None else meter_names(config)
            sinks.append(_csv_sink(config, names))
        settings = mqtt_settings(config)
        if settings is not None:
            sinks.append(_mqtt_sink(settings, live or LiveState(names=meter_names(config))))
    except BaseException:
        # those built here (the store is the caller's to close)
        _close_after_failure([s for s in sinks if s is not store])
        raise
    return sinks


def catch_up_csv(store: Optional[Store], sinks: Sequence[Sink], timeout: float) -> int:
    """Write the rows the CSV files lack but the database has; returns how many.

    CSV rows wait in a RAM journal for `storage.commit_interval` (10 minutes) before they
    reach the card; a power cut (or reboot without a clean stop) loses them there, while the
    SQL sink's disk journal, fsync'ed every `sync_interval`, kept the same readings. So at
    start, once the previous run's journal is in the database (waiting up to `timeout`),
    each meter's files get the stored readings newer than their newest row (at most two
    write intervals of them). After a clean stop or a kill -9 there are none: the CSV files
    were complete or the RAM journal was kept.
    """
    csv = next((s for s in sinks if isinstance(s, CsvLog)), None)
    if store is None or csv is None:
        return 0
    store.flush(timeout=timeout)  # the readings of the previous run into the database first
    reader = StoreReader(store.db)
    added = 0
    try:
        for meter in reader.meters():
            newest = reader.newest_time(meter)
            if newest is None:
                continue
            # what the RAM journal can have held: the last write interval before the newest
            # stored reading (twice, for margin), never older history (CSV turned on later)
            since = newest - timedelta(seconds=2 * csv.write_interval)
            last = csv.last_row_time(meter)
            if last is not None:
                since = max(since, last + timedelta(milliseconds=1))
            newer = reader.export(meter, since, newest + timedelta(milliseconds=1))
            for reading in newer:
                csv.write(reading)
                added += 1
    except Exception as exc:
        # a database that is down now: the CSV files stay as they are, nothing else waits
        log.warning("csv: cannot compare the CSV files with the database: %s", describe(exc))
    finally:
        reader.close()  # this thread's connection; the web and the writer have their own
    if added:
        csv.drain()  # these belong in the files now, not an interval later
        log.warning(
            "csv: %d rows the files lacked (lost with the RAM journal, e.g. by a power cut) "
            "written from the database",
            added,
        )
    return added


def first_reading(config: Config, timeout: float) -> tuple[Optional[Reading], Optional[str]]:
    """The first reading of the configured meters and the name of the meter (source) that
    sent it ((None, None) if none came within `timeout`); without a configured meter, one
    from the simulated meter. For `smlogger mqtt-test`."""
    live = LiveState()
    if not config.meters:
        from smlogger.simulate import make_meter

        simulated = make_meter("full")
        frame = sml.decode(simulated.frame(datetime.now(timezone.utc)))[0]
        return readings_from_frame(frame, datetime.now(timezone.utc))[0], None
    pipeline = Pipeline([build_meter(m, live) for m in config.meters], [], live)
    pipeline.start()
    try:
        deadline = time.monotonic() + timeout
        reading = live.latest()
        while reading is None and time.monotonic() < deadline and not pipeline.finished:
            time.sleep(0.1)
            reading = live.latest()
    finally:
        pipeline.stop(2.0)
    if reading is None:
        return None, None
    for name, source in live.source_status().items():
        if reading.meter_id in source.get("meters", ()):
            return reading, name
    return reading, None


# ---- web page --------------------------------------------------------------------------------


def start_web(
    config: Config, live: LiveState, reader: Optional[StoreReader], extra: StatusExtra
) -> Optional[WebServer]:
    """The web page and API, serving; None when http.listen is off. OSError when it cannot bind."""
    address = config.http_address
    if address is None:
        log.info("web page disabled (http.listen = off)")
        return None
    from smlogger.web import ServerLimits, WebServer, build_app

    app = build_app(live, reader, token=config.http_token or None, status_extra=extra)
    limits = ServerLimits(max_per_client=config.http_max_connections_per_client)
    server = WebServer(app, address[0], address[1], limits=limits)
    server.start()
    log.info("web page: %s", page_url(server.url, bool(config.http_token)))
    return server


def page_url(url: str, token: bool) -> str:
    """The address to open in a browser: a wildcard listen address is not one, so it becomes
    this machine's host name; the token itself is never logged."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in ("0.0.0.0", "::", ""):
        url = parts._replace(netloc=f"{socket.gethostname()}:{parts.port}").geturl()
    return url + (" (add ?token=... : http.token is set)" if token else "")


# ---- running ---------------------------------------------------------------------------------


def status_line(live: LiveState) -> str:
    """One line for `systemctl status`: state and reading count per source."""
    parts = []
    for name, source in live.source_status().items():
        readings = source.get("stats", {}).get("readings", 0)
        code = (source.get("diagnosis") or {}).get("code")
        why = f" ({code})" if code not in (None, "ok", "listening") else ""
        parts.append(f"{name}: {source['state']}{why}, {readings} readings")
    return "; ".join(parts) or "starting"


def _replays_had_frames(config: Config, pipeline: Pipeline) -> bool:
    """False (and one error line each) when a replay ended without a single valid frame."""
    replays = {m.name: m.replay for m in config.meters if m.replay}
    found = True
    for runner in pipeline.runners:
        path = replays.get(runner.spec.key)
        if path is None or runner.decoder_stats.get("frames_ok", 0):
            continue
        size = runner.decoder_stats.get("bytes", 0)
        log.error("%s: no valid SML frame in %s (%d bytes)", runner.spec.key, path, size)
        found = False
    return found


# the decoder's counters of frames it could not use, by reason
ERROR_FRAME_STATS = ("crc_errors", "truncated", "escape_errors", "too_long", "parse_errors")


def meter_summary(name: str, stats: dict[str, Any]) -> str:
    """One line accounting for every frame of a meter: what came in and where it went.

    frames in = readings accepted + rejected as implausible + damaged frames + good frames that
    carried no meter data (e.g. only an attention message); the soak test reconciles it.
    """
    good = int(stats.get("frames_ok", 0) or 0)
    damaged = {k: int(stats.get(k, 0) or 0) for k in ERROR_FRAME_STATS}
    readings = int(stats.get("readings", 0) or 0)
    rejected = int(stats.get("rejected", 0) or 0)
    no_data = good - readings - rejected
    reasons = ", ".join(f"{k} {v}" for k, v in damaged.items() if v) or "none"
    return (
        f"{name}: {good + sum(damaged.values())} frames in = {readings} readings accepted"
        f" + {rejected} rejected + {sum(damaged.values())} damaged ({reasons})"
        f" + {no_data} without meter data"
    )


class Signals:
    """SIGTERM/SIGINT set the stop event; a second one exits at once."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: Optional[FrameType]) -> None:
        """The signal handler: stop gracefully, or at once on the second signal."""
        if self.stop.is_set():
            log.error("second signal: exiting without flushing")
            os._exit(1)
        self.received = signum
        self.stop.set()

    def install(self) -> None:
        """Handle SIGTERM and SIGINT in this (the main) thread."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self)

    def restore(self) -> None:
        """Put back the handlers `install` replaced: a program (or test) that runs the logger
        in-process keeps its own Ctrl-C, not one that sets an event nobody waits for."""
        for sig, handler in self._previous.items():
            # None: a handler not set from Python, which cannot be put back from here; the
            # default action then, rather than ours, whose stop event nobody waits for
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()


def _close_after_failure(sinks: Sequence[Sink]) -> None:
    """Close the sinks set up before the set-up failed (a failure here is logged: the
    first one is what the caller sees)."""
    for sink in sinks:
        try:
            if isinstance(sink, Store):
                sink.close(SETUP_FAILURE_BUDGET_S)
            else:
                sink.close()
        except Exception:
            log.exception("closing sink %s after a failure failed too", sink.name)


def _stop_after_failure(
    pipeline: Pipeline, web: Optional[WebServer], web_stopper: Optional[threading.Thread]
) -> None:
    """Stop what `run` started before it failed, within SETUP_FAILURE_BUDGET_S: the
    pipeline first (its sinks hold the readings), then the web server unless `web_stopper`
    stops it already. A failure here is logged, so that the first one is what the caller sees."""
    try:
        pipeline.stop(SETUP_FAILURE_BUDGET_S)
    except Exception:
        log.exception("stopping the pipeline after a failure failed too")
    try:
        if web_stopper is not None:
            web_stopper.join(SETUP_FAILURE_BUDGET_S)
        elif web is not None:
            web.stop()
    except Exception:
        log.exception("stopping the web server after a failure failed too")


def _show_progress(meters: list[MeterSpec]) -> bool:
    return sys.stderr.isatty() and any(isinstance(m.source, ReplaySource) for m in meters)


class ReplayProgress:
    """A one-line progress bar on a terminal while a replay runs: frames read, readings
    written per sink."""

    WIDTH = 30

    def __init__(self, pipeline: Pipeline, stream: TextIO) -> None:
        self.pipeline = pipeline
        self.stream = stream
        self._last = 0.0

    def line(self) -> str:
        """The bar's text."""
        done = total = 0
        for runner in self.pipeline.runners:
            source = runner.spec.source
            if isinstance(source, ReplaySource):
                done += source.done
                total += source.total or 0
        share = min(1.0, done / total) if total else 0.0
        bar = "#" * int(share * self.WIDTH)
        sinks = ", ".join(f"{w.name} {w.written}" for w in self.pipeline.workers)
        return f"replay [{bar:<{self.WIDTH}}] {done}/{total or '?'} frames; {sinks}"

    def show(self) -> None:
        """Redraw (at most twice a second)."""
        if time.monotonic() - self._last < 0.5:
            return
        self._last = time.monotonic()
        self.stream.write("\r" + self.line())
        self.stream.flush()

    def finish_line(self) -> None:
        """Draw the final state and end the line, so log lines start on their own."""
        self.stream.write("\r" + self.line() + "\n")
        self.stream.flush()


class BulkCollector:
    """Garbage collection while a replay runs at full speed (`active`; else it does nothing).

    The objects of the start-up never need scanning again (`gc.freeze`), and the readings,
    freed by reference counting (they form no cycles: a 60,000-frame replay leaves 33
    unreachable objects), need not set off collections at all: at the default rate the
    collector took a fifth of such a replay's time, at a 50,000 threshold still a tenth. So
    automatic collection is off and `tick` collects every BULK_GC_EVERY_S instead; `end`
    puts the collector back (run() may be called again in one process). A program embedding
    run() that froze objects of its own keeps them frozen: `unfreeze` cannot tell theirs from
    ours, so then nothing is frozen here.
    """

    def __init__(self, active: bool) -> None:
        self.active = active
        self._last = time.monotonic()
        self._froze = active and gc.get_freeze_count() == 0
        if active:
            if self._froze:
                gc.freeze()
            gc.disable()

    def tick(self) -> None:
        """The collection a full-speed replay still gets, every BULK_GC_EVERY_S."""
        if self.active and time.monotonic() - self._last >= BULK_GC_EVERY_S:
            gc.collect()
            self._last = time.monotonic()

    def end(self) -> None:
        """The collector as before (once)."""
        if self.active:
            self.active = False
            if self._froze:
                gc.unfreeze()
            gc.enable()


def run(config: Config) -> int:
    """Run the logger until a signal or the end of every source; the process exit code.

    Raises `preflight.StartupError` (exit 2 in the CLI) for mistakes waiting cannot fix.
    """
    preflight.check(config)
    stop = threading.Event()
    signals = Signals(stop)
    signals.install()
    try:
        return _serve(config, stop, signals)
    finally:
        signals.restore()


def _serve(config: Config, stop: threading.Event, signals: Signals) -> int:
    """`run` once the signal handlers are in place."""
    notifier = Notifier()

    for warning in config.warnings:
        log.warning("%s", warning)

    live = LiveState(names=meter_names(config))
    if config.database_enabled or config.csv_enabled:
        names_path = config.data_path / NAMES_FILE
        live.names.on_learn = lambda learned: write_names_file(names_path, learned)
    try:
        keep = config.database_enabled or config.csv_enabled
        data_dir = config.data_path if keep else None
        base = ram_base(config)
        counters = None if base is None or data_dir is None else base / COUNTERS_DIR
        meters = [build_meter(m, live, data_dir, counters) for m in config.meters]
    except OSError as exc:
        log.error("cannot set up the meters: %s", exc)
        return 1
    # until the pipeline owns them, what is opened (the SQL writer thread, the MQTT client)
    # is closed on every way out: run()'s caller may carry on
    with contextlib.ExitStack() as until_owned:
        try:
            if config.database_enabled or config.csv_enabled:
                config.data_path.mkdir(parents=True, exist_ok=True)
            store = open_store(config)
            if store is not None:
                until_owned.callback(_close_after_failure, [store])
            sinks = build_sinks(config, store, live)
            until_owned.callback(_close_after_failure, [s for s in sinks if s is not store])
            catch_up_csv(store, sinks, min(config.shutdown_timeout, CSV_CATCH_UP_S))
        except (ImportError, ConfigError):
            raise  # a broken installation is a bug to see in full, not a storage problem
        except Exception as exc:
            # a data dir we may not write, a database URL naming no database, ...
            log.error("cannot set up storage: %s", exc)
            return 2
        pipeline = Pipeline(meters, sinks, live, store_interval=config.store_interval)
        until_owned.pop_all()

    def status_extra() -> dict[str, Any]:
        """Run-time settings that /api/status adds to its own fields."""
        # uptime, versions and sinks come from the web app itself
        return {
            "store_interval_s": config.store_interval,
            "meters_configured": [
                {"name": m.name, "source": m.describe_source()} for m in config.meters
            ],
            # set-up problems an operator should fix (secrets others can read, ...)
            "warnings": list(config.warnings),
        }

    collector = BulkCollector(any(m.source.bulk for m in meters))
    if store is not None and all(m.source.bulk for m in meters):
        # replays at full speed only: the files are the source of the readings until the
        # database has them, so batches need not be journalled first (see Store.write_many)
        store.direct_batches = True
    # (the collector as before on every way out: run() may be called again in one process)
    web = None
    web_stopper = None
    try:
        pipeline.start()
        try:
            web = start_web(
                config,
                live,
                None if store is None else StoreReader(store.db, store.pending),
                status_extra,
            )
        except OSError as exc:
            log.error("cannot serve the web page on %s: %s", config.http_listen, exc)
            pipeline.stop(SETUP_FAILURE_BUDGET_S)
            return 1
        described = ", ".join(f"{m.name} ({m.describe_source()})" for m in config.meters)
        log.info(
            "smlogger %s running: %s; sinks: %s",
            __version__,
            described,
            ", ".join(s.name for s in sinks) or "none",
        )
        notifier.ready(f"reading {described}")

        last_status = [0.0]

        def on_tick() -> None:
            """Ping the systemd watchdog (only while healthy) and refresh the status text."""
            notifier.watchdog(pipeline.healthy())
            if notifier.enabled and time.monotonic() - last_status[0] >= STATUS_EVERY_S:
                last_status[0] = time.monotonic()
                notifier.status(status_line(live))

        progress = ReplayProgress(pipeline, sys.stderr) if _show_progress(meters) else None

        def tick() -> None:
            """Per-tick work of the main loop, plus the replay progress bar."""
            on_tick()
            if progress is not None:
                progress.show()
            collector.tick()

        pipeline.run(stop, tick)
        if signals.received is not None:
            log.info("%s received: flushing and exiting", signal.Signals(signals.received).name)
        else:
            log.info("all sources finished: flushing and exiting")
        notifier.stopping()
        if web is not None:
            web_stopper = threading.Thread(target=web.stop, name="web-stop", daemon=True)
            web_stopper.start()
        if progress is not None:
            progress.finish_line()
        # sinks write what they hold as long as they make progress (replays must end complete;
        # a slow database on SIGTERM gets its time), up to shutdown_timeout
        clean = pipeline.stop(config.shutdown_timeout)
    except BaseException:
        # anything else that fails once the pipeline runs (a bug, a web server that raises
        # more than OSError): the sink workers and the SQL writer must not outlive run(),
        # whose caller may carry on (tests, a second run in one process)
        _stop_after_failure(pipeline, web, web_stopper)
        raise
    finally:
        collector.end()
    if config.database_enabled or config.csv_enabled:
        remove_empty_ram_tier(ram_base(config))
    for runner in pipeline.runners:
        log.info("%s", meter_summary(runner.spec.key, runner.stats()))
    if web_stopper is not None:
        web_stopper.join(5.0)
    if any(not m.source.endless for m in meters):
        summary = pipeline.summary()
        log.info("%s", summary)
        print(summary, flush=True)
    notifier.close()
    if pipeline.errors():
        return 1
    if signals.received is None and not _replays_had_frames(config, pipeline):
        return 1
    if not clean:
        # whatever a sink still held is on durable storage (disk queue) or was logged as lost
        log.warning("shutdown finished with sinks still busy")
    return 0
