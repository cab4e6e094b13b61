"""Command line: `smlogger run|config|scan|decode|bench|db-init|export`, `--version`.

Only argument parsing and logging set-up live here; `smlogger.service` runs the logger.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, ClassVar, Optional

from smlogger import __version__, dbcli, scan, tools
from smlogger import config as cfgmod
from smlogger.config import ConfigError

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
        """The formatted record with the priority prefix on every line."""
        text = super().format(record)
        prefix = f"<{self.PRIORITIES.get(record.levelname, 6)}>"
        return "\n".join(prefix + line for line in text.splitlines())


def setup_logging(level: str, verbosity: int, secrets: Sequence[str] = ()) -> None:
    """Log to stderr (journald priorities under systemd) with secrets redacted."""
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
    for name in ("peewee", "asyncio", "urllib3"):
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

    def __init__(
        self,
        action: argparse._SubParsersAction[argparse.ArgumentParser],
        common: argparse.ArgumentParser,
    ) -> None:
        self._action = action
        self._common = common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A sub-parser that also has the common options and shows defaults in --help."""
        parents = list(kwargs.pop("parents", []))
        if self._common not in parents:
            parents.append(self._common)
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        return self._action.add_parser(name, parents=parents, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The `smlogger` parser with every subcommand."""
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
        epilog="examples:\n"
        "  smlogger run --port /dev/ttyUSB0\n"
        "  smlogger run --port /dev/serial/by-id/usb-FTDI_FT232R-if00-port0 --meter-name house\n"
        "  smlogger run --simulate\n"
        "  smlogger run --config /etc/smlogger.toml\n"
        "  smlogger run --port /dev/ttyUSB0 --capture capture.txt.gz\n"
        "  smlogger run --replay capture.txt.gz --speed max --no-http\n"
        "  smlogger run --port /dev/ttyUSB0 --db-url mysql://smlogger:PW@localhost/smart_meter "
        "--legacy-table",
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

    check = subparsers.add_parser(
        "mqtt-test",
        help="connect to the MQTT broker, publish one reading with its discovery, show what "
        "Home Assistant will see",
        description="Connect to the broker of [mqtt] url / --mqtt, publish one reading of the "
        "configured meter (or of the simulated meter when none is configured) with its Home "
        "Assistant discovery, read it back from the broker and print it. Uses its own client id "
        "(<client_id>-check) and leaves availability alone, so a running logger is not "
        "disturbed. Exit code 0: all good, 1: something missing on the broker, 2: no "
        "connection, 3: no reading.",
    )
    check.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for a reading / the broker"
    )
    cfgmod.add_arguments(check)
    check.set_defaults(func=cmd_mqtt_test)

    tools.register_cli(subparsers)
    scan.register_cli(subparsers)
    dbcli.register_cli(subparsers)
    return parser


# ---- commands ------------------------------------------------------------------------------


def cmd_config(args: argparse.Namespace) -> int:
    """Print the effective configuration (secrets masked) or the example file."""
    if args.example:
        sys.stdout.write(cfgmod.example())
        return 0
    config = cfgmod.load(args, require_meter=False)
    sys.stdout.write(cfgmod.dump(config))
    for warning in config.warnings:
        logging.getLogger("smlogger").warning("%s", warning)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Load the configuration and run the logger (see `smlogger.service`)."""
    # imported here: the web and database stacks are only needed by `run`
    from smlogger import service
    from smlogger.secretfiles import apply_umask

    # before anything is created: the database, CSV files, disk queue and captures are private
    # (set here, for the process, rather than per file, so no sink can forget it)
    apply_umask()
    config = cfgmod.load(args)
    setup_logging(config.log_level, _verbosity(args), config.secrets())
    return service.run(config)


def cmd_mqtt_test(args: argparse.Namespace) -> int:
    """Publish one reading with discovery and print what Home Assistant will see."""
    from smlogger import service
    from smlogger.mqtt.check import run_check

    config = cfgmod.load(args, require_meter=False)
    setup_logging(config.log_level, _verbosity(args) - 1, config.secrets())
    settings = service.mqtt_settings(config)
    if settings is None:
        raise ConfigError("no broker: set [mqtt] url, --mqtt URL or SMLOGGER_MQTT")
    reading, source = service.first_reading(config, args.timeout)
    if reading is None:
        sys.stderr.write(f"no reading from the meter within {args.timeout:g} s\n")
        return 3
    return run_check(settings, reading, sys.stdout, timeout=min(args.timeout, 15.0), source=source)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the `smlogger` command; the process exit code."""
    parser = build_parser()
    args = parser.parse_args(
        dbcli.join_relative_times(list(sys.argv[1:] if argv is None else argv))
    )
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


def console() -> int:
    """`main` as the installed command runs it: the process ends right after."""
    try:
        code = main()
    except SystemExit as done:
        # --help and --version leave from inside argparse, with nothing open: their exit
        # collection is skipped too (14 ms of their ~80 ms)
        if done.code in (0, None):
            gc.freeze()
        raise
    # The interpreter's last act is a full collection over every object still alive, of
    # which a long replay leaves hundreds of thousands (0.1 s of a 60,000-frame replay):
    # frozen objects are skipped, and the process frees its memory by ending anyway.
    gc.freeze()
    return code
