"""Command line: `smlogger run|config|decode|bench|db-init|export`, `--version`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, Optional

from smlogger import __version__
from smlogger import config as cfgmod
from smlogger.config import Config, ConfigError, MeterConfig

log = logging.getLogger("smlogger")

SHUTDOWN_BUDGET_S = 4.0  # SIGTERM to exit; systemd and the tests allow 5 s
LEVELS = ["debug", "info", "warning", "error"]


# ---- logging -------------------------------------------------------------------------------


class _JournalFormatter(logging.Formatter):
    """`<N>` syslog priority prefixes, which journald turns into the entry's priority."""

    PRIORITIES: ClassVar[dict[str, int]] = {
        "DEBUG": 7,
        "INFO": 6,
        "WARNING": 4,
        "ERROR": 3,
        "CRITICAL": 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{self.PRIORITIES.get(record.levelname, 6)}>"
        return "\n".join(prefix + line for line in text.splitlines())


def setup_logging(level: str, verbosity: int, secrets: Sequence[str] = ()) -> None:
    index = min(len(LEVELS) - 1, max(0, LEVELS.index(level) - verbosity))
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(cfgmod.RedactingFilter(list(secrets)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[index].upper())
    # third-party chatter stays at warning unless debugging
    for name in ("peewee", "cheroot", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG if index == 0 else logging.WARNING)


def _verbosity(args: argparse.Namespace) -> int:
    return int(getattr(args, "verbose", 0) or 0) - int(getattr(args, "quiet", 0) or 0)


# ---- parser --------------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("output")
    group.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (repeatable)"
    )
    group.add_argument(
        "-q", "--quiet", action="count", default=0, help="less log output (repeatable)"
    )
    return common


class _Subparsers:
    """Hands out sub-parsers that all know -v/-q, also to commands registered elsewhere."""

    def __init__(self, action: Any, common: argparse.ArgumentParser) -> None:
        self._action = action
        self._common = common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parents = list(kwargs.pop("parents", []))
        if self._common not in parents:
            parents.append(self._common)
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        parser: argparse.ArgumentParser = self._action.add_parser(name, parents=parents, **kwargs)
        return parser

    def __getattr__(self, name: str) -> Any:
        return getattr(self._action, name)


def _register_external(subparsers: _Subparsers, module: str) -> None:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        # modules still being written / not installed must not break the other commands
        logging.getLogger(__name__).debug("%s not available: %s", module, exc)
        return
    mod.register_cli(subparsers)


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="smlogger",
        description="Smart-meter logger: reads SML from an IR head, shows it live, stores it.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"smlogger {__version__}")
    action = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers = _Subparsers(action, common)

    run = subparsers.add_parser(
        "run",
        help="read a meter (serial, tcp, replay or simulation) and log it",
        description="Read one or more meters and feed the live page, the database and CSV files.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  smlogger run --port /dev/ttyUSB0\n  smlogger run --simulate\n"
        "  smlogger run --config /etc/smlogger.toml\n"
        "  smlogger run --replay capture.txt --speed max --no-http",
    )
    cfgmod.add_arguments(run)
    run.set_defaults(func=cmd_run)

    conf = subparsers.add_parser(
        "config",
        help="print the effective configuration (secrets masked) or an example file",
        description="Print the effective configuration (file + environment + flags, secrets "
        "masked), or with --example a commented example config file.",
    )
    conf.add_argument("--example", action="store_true", help="print an example config file")
    cfgmod.add_arguments(conf)
    conf.set_defaults(func=cmd_config)

    _register_external(subparsers, "smlogger.tools")
    _register_external(subparsers, "smlogger.dbcli")
    return parser


# ---- commands ------------------------------------------------------------------------------


def cmd_config(args: argparse.Namespace) -> int:
    if args.example:
        sys.stdout.write(cfgmod.example())
        return 0
    config = cfgmod.load(args, require_meter=False)
    sys.stdout.write(cfgmod.dump(config))
    return 0


def build_meter(meter: MeterConfig, live: Any) -> Any:
    """MeterSpec for one configured meter."""
    from smlogger.capture import CaptureWriter
    from smlogger.pipeline import MeterSpec
    from smlogger.sources import (
        ReplaySource,
        SerialSettings,
        SerialSource,
        SimulatedSource,
        Source,
        TcpSource,
        parse_speed,
    )

    source: Source
    kind = meter.source_kind
    if kind == "port":
        settings = SerialSettings(
            port=meter.port,
            baudrate=meter.baudrate,
            bytesize=meter.bytesize,
            parity=meter.parity,
            stopbits=meter.stopbits,
            xonxoff=meter.xonxoff,
            rtscts=meter.rtscts,
        )
        source = SerialSource(settings, reconnect_max=meter.reconnect_max)
    elif kind == "tcp":
        host, port = cfgmod.split_host_port(meter.tcp)
        source = TcpSource(host, port, reconnect_max=meter.reconnect_max)
    elif kind == "replay":
        path = Path(os.path.expanduser(meter.replay))
        if not path.is_file():
            raise ConfigError(f"{meter.name}: replay file {path} not found")
        source = ReplaySource(
            path, speed=parse_speed(meter.speed), interval=meter.replay_interval, loop=meter.loop
        )
    else:
        from smlogger.simulate import make_meter

        simulated = make_meter(meter.profile, seed=meter.seed)
        live.add_meter(meter.id or simulated.meter_id)
        source = SimulatedSource(simulated, interval=meter.interval)
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


def build_sinks(config: Config) -> tuple[list[Any], Any]:
    """(sinks, store reader for the web app or None)."""
    sinks: list[Any] = []
    reader = None
    if config.database_enabled:
        from smlogger.store import Store, StoreReader, open_database

        db = open_database(config.database_url or None, config.data_path)
        store = Store(
            db,
            spool_dir=config.data_path / "spool",
            max_spool_age_days=config.database_spool_max_age_days,
            legacy_table=config.database_legacy_table,
            batch_size=config.database_batch_size,
        )
        sinks.append(store)
        reader = StoreReader(db)
    if config.csv_enabled:
        from smlogger.csvlog import CsvLog

        sinks.append(
            CsvLog(
                config.csv_path,
                rotate=config.csv_rotate,
                max_size=int(config.csv_max_size_mb * 1024 * 1024),
                compress=config.csv_compress,
                keep_days=config.csv_keep_days,
                tz=config.csv_timezone,
                aggregated=config.store_interval > 0,
            )
        )
    return sinks, reader


def start_web(config: Config, live: Any, store: Any, extra: Any) -> Any:
    address = config.http_address
    if address is None:
        log.info("web page disabled (http.listen = off)")
        return None
    try:
        web = importlib.import_module("smlogger.web")
    except ImportError as exc:
        log.warning("web page not available (smlogger.web cannot be imported: %s)", exc)
        return None
    app = web.build_app(live, store, token=config.http_token or None, status_extra=extra)
    server = web.WebServer(app, address[0], address[1])
    server.start()
    log.debug("web server started on %s", server.url)
    return server


def status_line(live: Any) -> str:
    """One line for `systemctl status`: state and reading count per source."""
    parts = []
    for name, source in live.source_status().items():
        readings = source.get("stats", {}).get("readings", 0)
        parts.append(f"{name}: {source['state']}, {readings} readings")
    return "; ".join(parts) or "starting"


class _Signals:
    """SIGTERM/SIGINT set the stop event; a second one exits at once."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.received: Optional[int] = None

    def __call__(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.stop.is_set():
            log.error("second signal: exiting without flushing")
            os._exit(1)
        self.received = signum
        self.stop.set()

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self)


def cmd_run(args: argparse.Namespace) -> int:
    from smlogger.live import LiveState
    from smlogger.pipeline import Pipeline
    from smlogger.sdnotify import Notifier

    config = cfgmod.load(args)
    setup_logging(config.log_level, _verbosity(args), config.secrets())
    stop = threading.Event()
    signals = _Signals(stop)
    signals.install()
    notifier = Notifier()
    started = time.monotonic()

    live = LiveState()
    try:
        meters = [build_meter(m, live) for m in config.meters]
    except OSError as exc:
        log.error("cannot set up the meters: %s", exc)
        return 1
    try:
        if config.database_enabled or config.csv_enabled:
            config.data_path.mkdir(parents=True, exist_ok=True)
        sinks, store = build_sinks(config)
    except Exception as exc:
        # a data dir we may not write, a database driver that is missing, ...
        log.error("cannot set up storage: %s: %s", type(exc).__name__, exc)
        return 1
    pipeline = Pipeline(meters, sinks, live, store_interval=config.store_interval)

    def status_extra() -> dict[str, Any]:
        # uptime, versions and sinks come from the web app itself
        return {
            "store_interval_s": config.store_interval,
            "meters_configured": [
                {"name": m.name, "source": m.describe_source()} for m in config.meters
            ],
        }

    pipeline.start()
    web = None
    try:
        web = start_web(config, live, store, status_extra)
    except OSError as exc:
        log.error("cannot serve the web page on %s: %s", config.http_listen, exc)
        pipeline.stop(SHUTDOWN_BUDGET_S)
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
        notifier.watchdog(pipeline.healthy())
        if notifier.enabled and time.monotonic() - last_status[0] >= 10.0:
            last_status[0] = time.monotonic()
            notifier.status(status_line(live))

    pipeline.run(stop, on_tick)
    if signals.received is not None:
        log.info("%s received: flushing and exiting", signal.Signals(signals.received).name)
    else:
        log.info("all sources finished: flushing and exiting")
    notifier.stopping()
    web_stopper = None
    if web is not None:
        web_stopper = threading.Thread(target=web.stop, name="web-stop", daemon=True)
        web_stopper.start()
    clean = pipeline.stop(SHUTDOWN_BUDGET_S - 0.5)
    if web_stopper is not None:
        web_stopper.join(max(0.1, SHUTDOWN_BUDGET_S - (time.monotonic() - started)))
    notifier.close()
    if pipeline.errors():
        return 1
    if not clean:
        # whatever a sink still held is on durable storage (disk queue) or was logged as lost
        log.warning("shutdown finished with sinks still busy")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    setup_logging("warning" if args.command != "run" else "info", _verbosity(args))
    try:
        result = args.func(args)
    except ConfigError as exc:
        parser.exit(2, f"smlogger: error: {exc}\n")
    except KeyboardInterrupt:
        return 130
    return int(result or 0)
