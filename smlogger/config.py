"""Configuration: TOML file, environment (SMLOGGER_*) and command-line flags.

Every option exists in all three places; later ones win: defaults < file < environment < flags.
Global options live at the top level or in [database], [csv], [http]; meters are [[meter]] tables.
Meter options given as flags/environment describe one meter: with a source (--port, --tcp,
--replay, --simulate) they replace the configured meters (or update the single configured one);
without a source they apply to every configured meter.

The option table (GLOBAL_OPTIONS, METER_OPTIONS) is the only place that knows a setting's flag,
variable, parser and default. `load` builds the frozen `Config` and its `MeterConfig`s once from
it; nothing changes them afterwards, and the rest of the program receives values, not defaults.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from smlogger.masking import MASK, mask_url
from smlogger.names import check_name, format_name_table, parse_name_table
from smlogger.secretfiles import (
    SecretFile,
    SecretFileError,
    exposure_warnings,
    read_secret_file,
    url_password,
    url_with_password,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on old Pythons only
    import tomli as tomllib

ENV_PREFIX = "SMLOGGER_"
DEFAULT_DATA_DIR = "~/.local/share/smlogger"
DEFAULT_HTTP = "127.0.0.1:8080"
SOURCE_KEYS = ("port", "tcp", "replay", "simulate")


class ConfigError(ValueError):
    """A bad option; the message names the key/flag/variable and what is allowed."""


# ---- value parsers -----------------------------------------------------------------------
Parser = Callable[[Any], Any]


def _type_name(value: Any) -> str:
    return type(value).__name__


def parse_bool(value: Any) -> bool:
    """true/false, 1/0, yes/no, on/off (any case); "" is false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
    raise ValueError("expected true or false (1/0, yes/no, on/off)")


def parse_int(lo: int | None = None, hi: int | None = None) -> Parser:
    """A parser of whole numbers (also "12" and 12.0) within lo..hi."""

    def parse(value: Any) -> int:
        """The value as an int; ValueError for booleans, fractions and non-numbers."""
        if isinstance(value, bool):
            raise ValueError("expected a whole number, not a boolean")
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ValueError(f"expected a whole number, not {value!r}") from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"expected a whole number, not {_type_name(value)}")
        _check_range(value, lo, hi)
        return value

    return parse


def parse_float(lo: float | None = None, hi: float | None = None) -> Parser:
    """A parser of finite numbers (also "1.5") within lo..hi."""

    def parse(value: Any) -> float:
        """The value as a finite float; raises ValueError for booleans, NaN/inf and non-numbers."""
        if isinstance(value, bool):
            raise ValueError("expected a number, not a boolean")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"expected a number, not {value!r}") from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"expected a number, not {value!r}")
        _check_range(float(value), lo, hi)
        return float(value)

    return parse


def _check_range(value: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and value < lo:
        raise ValueError(f"must be at least {lo:g}, not {value:g}")
    if hi is not None and value > hi:
        raise ValueError(f"must be at most {hi:g}, not {value:g}")


def parse_str(value: Any) -> str:
    """A string as given (TOML numbers are not strings)."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, not {_type_name(value)}")
    return value


def parse_choice(*choices: str, case: bool = False) -> Parser:
    """A parser accepting one of `choices` (any case unless `case`), returning its spelling."""

    def parse(value: Any) -> str:
        """The value as one of `choices` (case-folded unless `case`), else ValueError."""
        text = str(value).strip() if isinstance(value, (str, int, float)) else None
        if text is not None and not case:
            matches = [c for c in choices if c.lower() == text.lower()]
            text = matches[0] if matches else None
        if text is None or text not in choices:
            raise ValueError(f"{value!r} is not allowed; use one of: {', '.join(choices)}")
        return text

    parse.choices = choices  # type: ignore[attr-defined]  # shown by --help
    return parse


def parse_stopbits(value: Any) -> float:
    """Serial stop bits: 1, 1.5 or 2."""
    number = float(parse_float()(value))
    if number not in (1.0, 1.5, 2.0):
        raise ValueError(f"{value!r} is not allowed; use one of: 1, 1.5, 2")
    return number


def split_host_port(text: str) -> tuple[str, int]:
    """'host:port' or '[v6addr]:port'."""
    match = re.fullmatch(
        r"\[(?P<v6>[^\]]+)\]:(?P<port>\d+)|(?P<host>[^:\[\]]+):(?P<port2>\d+)", text
    )
    if match is None:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8080), not {text!r}")
    host = match["v6"] or match["host"]
    port = int(match["port"] or match["port2"])
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535, not {port}")
    return host, port


def parse_listen(value: Any) -> str:
    """HOST:PORT of the web page, or "off" (also "", none, no, false)."""
    text = parse_str(value).strip()
    if text.lower() in ("", "off", "none", "no", "false"):
        return "off"
    split_host_port(text)
    return text


def parse_tcp(value: Any) -> str:
    """HOST:PORT of a network IR head with a port above 0, or "" for none."""
    text = parse_str(value).strip()
    if not text:
        return ""
    _host, port = split_host_port(text)
    if port == 0:
        raise ValueError("port must be 1..65535, not 0")
    return text


def parse_speed(value: Any) -> str:
    """Replay speed as normalised text: a factor > 0 ("1", "10", "2.5") or "max".

    The one speed parser; `MeterConfig.speed_factor` reads the result as a number.
    """
    text = str(value).strip().lower() if not isinstance(value, bool) else ""
    if text == "max":
        return text
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{value!r} is not allowed; use 1, 10, another factor > 0, or max")
    return f"{number:g}"


def parse_replay_start(value: Any) -> str:
    """An ISO 8601 time ("2024-05-01T12:00:00+02:00"; no zone = UTC), or "" for "now"."""
    text = parse_str(value).strip()
    if not text:
        return ""
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"expected an ISO 8601 time like 2024-05-01T12:00:00Z or empty, not {text!r}"
        ) from None
    return text


def parse_db_url(value: Any) -> str:
    """A sqlite/mysql/mariadb/postgresql URL, or "" for the SQLite file in the data dir."""
    text = parse_str(value).strip()
    if text == "":
        return ""
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    allowed = ("sqlite", "mysql", "mariadb", "postgresql", "postgres")
    if scheme.split("+")[0] not in allowed:
        raise ValueError(
            f"{mask_url(text)!r} is not a database URL; use sqlite:///PATH, "
            "mysql://USER:PASSWORD@HOST/DB or postgresql://USER:PASSWORD@HOST/DB "
            "(empty: SQLite file in the data dir)"
        )
    return text


def parse_meter_names(value: Any) -> str:
    """Meter id -> name: a TOML table, or "ID=NAME,ID=NAME"; kept as that normalised text."""
    return format_name_table(parse_name_table(value))


def parse_meter_name(value: Any) -> str:
    """A [[meter]] name ("" gives the automatic meter, meter2, ...)."""
    text = parse_str(value).strip()
    return check_name(text) if text else ""


def parse_opt_path(value: Any) -> str:
    """A path or device name, "" for none; `~` is expanded where it is used."""
    return parse_str(value).strip()


# ---- the option table --------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One setting: its TOML key, flag, parser and its default (the only one in the program)."""

    key: str  # TOML key: "section.name" for globals, "name" inside [[meter]]
    flag: str
    parse: Parser
    default: Any
    help: str
    meter: bool = False
    secret: bool = False
    boolean: bool = False
    metavar: Optional[str] = None
    example: Optional[str] = None  # value shown in `config --example` instead of the default
    file_for: Optional[str] = None  # a *_file option: the key whose secret the file holds

    def holds_secret(self, value: Any) -> bool:
        """Whether `value` of this option is (or contains) a secret worth protecting."""
        if not self.secret or not value:
            return False
        if self.key == "database.url":
            return bool(url_password(str(value)))
        return True

    @property
    def env(self) -> str:
        """The environment variable that sets this option (SMLOGGER_ + flag name)."""
        return ENV_PREFIX + self.flag.lstrip("-").upper().replace("-", "_")

    @property
    def attr(self) -> str:
        """The attribute name in the config dataclass (dots become underscores)."""
        return self.key.replace(".", "_")

    @property
    def display(self) -> str:
        """The key as users write it in messages (`meter.` prefix for per-meter keys)."""
        return f"meter.{self.key}" if self.meter else self.key


def _opt(key: str, flag: str, parse: Parser, default: Any, help: str, **kw: Any) -> Option:
    return Option(key, flag, parse, default, help, **kw)


GLOBAL_OPTIONS: tuple[Option, ...] = (
    _opt(
        "data_dir",
        "--data-dir",
        parse_opt_path,
        DEFAULT_DATA_DIR,
        "directory for the SQLite database, CSV files and the disk queue",
        metavar="DIR",
    ),
    _opt(
        "log_level",
        "--log-level",
        parse_choice("debug", "info", "warning", "error"),
        "info",
        "log level (-v/-q shift it)",
    ),
    _opt(
        "store_interval",
        "--store-interval",
        parse_float(0),
        0.0,
        "seconds between stored readings (mean/min/max over the interval); 0 stores every frame",
        metavar="SECONDS",
    ),
    _opt(
        "meter_names",
        "--meter-names",
        parse_meter_names,
        "",
        "names of meter ids, shown on the page, the API, /metrics and CSV folders; for a bus "
        'with several meters: [meter_names] table (id = "name") or ID=NAME,ID=NAME',
        metavar="ID=NAME,...",
    ),
    _opt(
        "shutdown_timeout",
        "--shutdown-timeout",
        parse_float(0),
        120.0,
        "on exit, wait this long at most for the sinks to write what they hold (as long as "
        "they make progress); what is left stays queued on disk",
        metavar="SECONDS",
    ),
    _opt(
        "storage.ram_dir",
        "--ram-dir",
        parse_str,
        "auto",
        "tmpfs directory where readings wait (safe against kill -9) until they are written "
        "every sync_interval: auto = systemd's RuntimeDirectory or /dev/shm; off = write "
        "every reading to the data dir at once",
        metavar="DIR",
    ),
    _opt(
        "storage.sync_interval",
        "--sync-interval",
        parse_float(0, 3600),
        60.0,
        "seconds readings may wait in memory and the page cache before they are fsync'ed to "
        "the disk journal (the power-cut window; 0 = fsync every reading and commit it to the "
        "database at once, costs the SD card far more writes, see README 'SD card')",
        metavar="SECONDS",
    ),
    _opt(
        "storage.commit_interval",
        "--commit-interval",
        parse_float(0, 3600),
        600.0,
        "seconds between database transactions and CSV writes while readings wait in the "
        "RAM journal (storage.ram_dir; they reach the fsync'ed disk journal every "
        "sync_interval meanwhile, and the web page shows them at once); fewer, larger writes "
        "spare the SD card, see README 'SD card'. Shorter than sync_interval = sync_interval",
        metavar="SECONDS",
    ),
    _opt(
        "database.url",
        "--db-url",
        parse_db_url,
        "",
        "database URL: mysql://user:pw@host/db, postgresql://..., sqlite:///file; "
        "empty = SQLite file smlogger.db in the data dir",
        secret=True,
        metavar="URL",
        example="mysql://smlogger:secret@localhost/smart_meter",
    ),
    _opt(
        "database.password_file",
        "--db-password-file",
        parse_opt_path,
        "",
        "read the database password from this file (one line) instead of database.url; "
        "the URL then names only the user: mysql://smlogger@localhost/smart_meter",
        metavar="FILE",
        file_for="database.url",
    ),
    _opt(
        "database.enabled",
        "--db",
        parse_bool,
        True,
        "store readings in the SQL database",
        boolean=True,
    ),
    _opt(
        "database.legacy_table",
        "--legacy-table",
        parse_bool,
        False,
        "also write the old script's smart_meter.values table (time, e_sum, p_sum, p_L1..p_L3)",
        boolean=True,
    ),
    _opt(
        "database.legacy_local_time",
        "--legacy-local-time",
        parse_bool,
        False,
        "write local wall-clock time (not UTC) into the legacy values table, as the old "
        "script's NOW() did",
        boolean=True,
    ),
    _opt(
        "database.spool_max_age_days",
        "--spool-max-age-days",
        parse_float(0.01),
        7.0,
        "keep readings on local disk this long while the database is unreachable",
        metavar="DAYS",
    ),
    _opt(
        "database.batch_size",
        "--db-batch-size",
        parse_int(1, 100_000),
        5000,
        "most readings per database transaction (a batch is committed every "
        "storage.commit_interval, or when this many wait, whichever comes first)",
        metavar="N",
    ),
    _opt("csv.enabled", "--csv", parse_bool, True, "write rolling CSV files", boolean=True),
    _opt(
        "csv.dir",
        "--csv-dir",
        parse_opt_path,
        "",
        "directory for CSV files (empty: csv/ in the data dir)",
        metavar="DIR",
    ),
    _opt(
        "csv.rotate",
        "--csv-rotate",
        parse_choice("hourly", "daily", "size"),
        "daily",
        "start a new CSV file every hour, every day, or when max_size_mb is reached",
    ),
    _opt(
        "csv.max_size_mb",
        "--csv-max-size-mb",
        parse_float(0.01),
        50.0,
        "file size that starts a new file with rotate = size",
        metavar="MB",
    ),
    _opt(
        "csv.compress", "--csv-compress", parse_bool, True, "gzip finished CSV files", boolean=True
    ),
    _opt(
        "csv.keep_days",
        "--csv-keep-days",
        parse_float(0),
        0.0,
        "delete CSV files older than this many days (0 keeps them forever)",
        metavar="DAYS",
    ),
    _opt(
        "csv.timezone",
        "--csv-timezone",
        parse_choice("utc", "local"),
        "utc",
        "day/hour boundaries of CSV files in UTC or local time (rows are always UTC)",
    ),
    _opt(
        "http.max_connections_per_client",
        "--http-max-connections-per-client",
        parse_int(1, 10_000),
        32,
        "open connections one address may hold (more get 503); raise it behind a reverse "
        "proxy on the same host, where every visitor comes from the proxy's address",
        metavar="N",
    ),
    _opt(
        "http.listen",
        "--http",
        parse_listen,
        DEFAULT_HTTP,
        "address of the web page and API, HOST:PORT; 'off' disables it",
        metavar="HOST:PORT",
    ),
    _opt(
        "http.token",
        "--http-token",
        parse_str,
        "",
        "require this token on every HTTP request (header or ?token=)",
        secret=True,
        metavar="TOKEN",
    ),
    _opt(
        "http.token_file",
        "--http-token-file",
        parse_opt_path,
        "",
        "read http.token from this file (one line)",
        metavar="FILE",
        file_for="http.token",
    ),
)


def parse_mqtt_url(value: Any) -> str:
    """mqtt://[user[:password]@]host[:port] or mqtts://..., or "" for no MQTT."""
    from smlogger.mqtt.settings import parse_broker_url

    text = parse_str(value).strip()
    if text:
        try:
            parse_broker_url(text, "URL")
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("URL: ")) from None
    return text


def parse_mqtt_prefix(value: Any) -> str:
    """A topic prefix: levels separated by '/', no empty level, no wildcard."""
    from smlogger.mqtt.settings import check_topic_prefix

    try:
        return check_topic_prefix(parse_str(value), "prefix")
    except ValueError as exc:
        raise ValueError(str(exc).removeprefix("prefix: ")) from None


def parse_deadband(value: Any) -> str:
    """A deadband rule list ("0.5", "1%", "p_sum=10,u_*=1%,0"), kept as text."""
    from smlogger.mqtt.ratelimit import parse_deadband as rules

    text = str(value).strip() if isinstance(value, (str, int, float)) else None
    if text is None or isinstance(value, bool):
        raise ValueError(f"expected a number, a percentage or rules, not {value!r}")
    try:
        rules(text, "deadband")
    except ValueError as exc:
        raise ValueError(str(exc).removeprefix("deadband: ")) from None
    return text


MQTT_OPTIONS: tuple[Option, ...] = (
    _opt(
        "mqtt.url",
        "--mqtt",
        parse_mqtt_url,
        "",
        "publish to this MQTT broker: mqtt://user:pw@host:1883 or mqtts://host:8883 "
        "(empty: no MQTT)",
        secret=True,
        metavar="URL",
        example="mqtt://smlogger:secret@homeassistant.local:1883",
    ),
    _opt(
        "mqtt.password",
        "--mqtt-password",
        parse_str,
        "",
        "broker password (instead of the one in the URL; better: password_file or the environment)",
        secret=True,
        metavar="PASSWORD",
    ),
    _opt(
        "mqtt.password_file",
        "--mqtt-password-file",
        parse_opt_path,
        "",
        "read the broker password from this file (wins over URL and password)",
        metavar="FILE",
    ),
    _opt(
        "mqtt.prefix",
        "--mqtt-prefix",
        parse_mqtt_prefix,
        "smlogger",
        "topic prefix: <prefix>/<meter>/state, /<value>, /availability",
        metavar="TOPIC",
    ),
    _opt(
        "mqtt.discovery",
        "--mqtt-discovery",
        parse_bool,
        True,
        "publish Home Assistant MQTT discovery configs",
        boolean=True,
    ),
    _opt(
        "mqtt.discovery_prefix",
        "--mqtt-discovery-prefix",
        parse_mqtt_prefix,
        "homeassistant",
        "Home Assistant discovery prefix",
        metavar="TOPIC",
    ),
    _opt("mqtt.qos", "--mqtt-qos", parse_int(0, 2), 1, "QoS of value and state messages"),
    _opt(
        "mqtt.retain",
        "--mqtt-retain",
        parse_bool,
        True,
        "retain value and state messages (availability and discovery are always retained)",
        boolean=True,
    ),
    _opt(
        "mqtt.ca_file",
        "--mqtt-ca-file",
        parse_opt_path,
        "",
        "CA certificate(s) for mqtts:// (empty: the system's CAs)",
        metavar="FILE",
    ),
    _opt(
        "mqtt.client_cert",
        "--mqtt-client-cert",
        parse_opt_path,
        "",
        "client certificate for mqtts:// (with client_key)",
        metavar="FILE",
    ),
    _opt(
        "mqtt.client_key",
        "--mqtt-client-key",
        parse_opt_path,
        "",
        "private key of the client certificate",
        metavar="FILE",
    ),
    _opt(
        "mqtt.client_id",
        "--mqtt-client-id",
        parse_str,
        "",
        "MQTT client id, also naming this logger in topics and HA (empty: smlogger-<hostname>)",
        metavar="ID",
    ),
    _opt(
        "mqtt.interval",
        "--mqtt-interval",
        parse_float(0, 86400),
        0.0,
        "publish each value at most every N seconds (0: every frame); independent of "
        "store_interval",
        metavar="SECONDS",
    ),
    _opt(
        "mqtt.deadband",
        "--mqtt-deadband",
        parse_deadband,
        "0",
        "publish a value only when it moved more than this: 0.5, 1% or per value "
        "p_sum=10,u_*=1%,0 (0: any change)",
        metavar="RULES",
    ),
    _opt(
        "mqtt.heartbeat",
        "--mqtt-heartbeat",
        parse_float(0, 86400),
        300.0,
        "re-publish unchanged values after this many seconds (0: never)",
        metavar="SECONDS",
    ),
    _opt(
        "mqtt.queue_size",
        "--mqtt-queue-size",
        parse_int(10, 1_000_000),
        1000,
        "messages kept while the broker is away; the oldest values go first",
        metavar="N",
    ),
    _opt(
        "mqtt.offline_after",
        "--mqtt-offline-after",
        parse_float(1, 86400),
        60.0,
        "seconds without a reading before a meter's availability turns offline",
        metavar="SECONDS",
    ),
    _opt(
        "mqtt.remove_after",
        "--mqtt-remove-after",
        parse_float(1),
        3600.0,
        "seconds a value may be missing from the readings before its HA entity is removed",
        metavar="SECONDS",
    ),
    _opt(
        "mqtt.reconnect_max",
        "--mqtt-reconnect-max",
        # paho waits whole seconds between attempts; the backoff starts at 1 s
        parse_float(1, 3600),
        60.0,
        "longest wait between attempts to reach the broker (backoff from 1 s, doubling)",
        metavar="SECONDS",
    ),
)

GLOBAL_OPTIONS = GLOBAL_OPTIONS + MQTT_OPTIONS

METER_OPTIONS: tuple[Option, ...] = (
    _opt(
        "name",
        "--meter-name",
        parse_meter_name,
        "",
        "name of the meter, shown on the page, in the API, /metrics, CSV folders and logs "
        "(default: meter, meter2, ..., which are not shown as meter names)",
        meter=True,
        metavar="NAME",
    ),
    _opt(
        "port",
        "--port",
        parse_opt_path,
        "",
        "serial port of the IR head, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...",
        meter=True,
        metavar="DEVICE",
        example="/dev/ttyUSB0",
    ),
    _opt(
        "tcp",
        "--tcp",
        parse_tcp,
        "",
        "network IR head / ser2net as HOST:PORT",
        meter=True,
        metavar="HOST:PORT",
    ),
    _opt(
        "replay",
        "--replay",
        parse_opt_path,
        "",
        "replay a recording (raw dump or --capture file) through the pipeline",
        meter=True,
        metavar="FILE",
    ),
    _opt(
        "simulate",
        "--simulate",
        parse_bool,
        False,
        "simulated 3-phase household meter (no hardware needed)",
        meter=True,
        boolean=True,
    ),
    _opt("baudrate", "--baudrate", parse_int(50, 4_000_000), 9600, "serial speed", meter=True),
    _opt("bytesize", "--bytesize", parse_int(5, 8), 8, "serial data bits", meter=True),
    _opt(
        "parity",
        "--parity",
        parse_choice("N", "E", "O", "M", "S", case=False),
        "N",
        "serial parity: N(one), E(ven), O(dd), M(ark), S(pace)",
        meter=True,
    ),
    _opt(
        "stopbits", "--stopbits", parse_stopbits, 1.0, "serial stop bits: 1, 1.5 or 2", meter=True
    ),
    _opt(
        "xonxoff",
        "--xonxoff",
        parse_bool,
        False,
        "serial software flow control",
        meter=True,
        boolean=True,
    ),
    _opt(
        "rtscts",
        "--rtscts",
        parse_bool,
        False,
        "serial hardware flow control",
        meter=True,
        boolean=True,
    ),
    _opt(
        "watchdog",
        "--watchdog",
        parse_float(0),
        30.0,
        "seconds without a valid frame before the source is reported and reopened (0: off)",
        meter=True,
        metavar="SECONDS",
    ),
    _opt(
        "reconnect_max",
        "--reconnect-max",
        parse_float(0.1),
        30.0,
        "longest wait between reconnect attempts (backoff starts at 1 s)",
        meter=True,
        metavar="SECONDS",
    ),
    _opt(
        "speed",
        "--speed",
        parse_speed,
        "1",
        "replay speed: 1 (as recorded), 10 or another factor, or max (as fast as possible)",
        meter=True,
        metavar="{1,10,FACTOR,max}",
    ),
    _opt(
        "replay_interval",
        "--replay-interval",
        parse_float(0.001),
        1.0,
        "seconds between frames when replaying a raw dump (captures keep their timing)",
        meter=True,
        metavar="SECONDS",
    ),
    _opt(
        "replay_start",
        "--replay-start",
        parse_replay_start,
        "",
        "time of the first frame of a raw dump replayed at --speed max (default: the last "
        "frame is stamped 'now'); captures keep their recorded times",
        meter=True,
        metavar="TIME",
    ),
    _opt(
        "loop",
        "--loop",
        parse_bool,
        False,
        "replay the recording again and again",
        meter=True,
        boolean=True,
    ),
    _opt(
        "profile",
        "--profile",
        parse_choice("household", "pv", "full"),
        "household",
        "simulation profile: household (MT175 set), pv (with export), full (+U/I/f)",
        meter=True,
    ),
    _opt(
        "interval",
        "--interval",
        parse_float(0.05, 3600),
        1.0,
        "seconds between frames of the simulated meter",
        meter=True,
        metavar="SECONDS",
    ),
    _opt(
        "seed",
        "--seed",
        parse_str,
        "smlogger",
        "seed of the simulated meter's load curve",
        meter=True,
    ),
    _opt(
        "capture",
        "--capture",
        parse_opt_path,
        "",
        "also write the raw byte stream (timestamped, replayable) to FILE",
        meter=True,
        metavar="FILE",
    ),
    _opt(
        "crc",
        "--crc",
        parse_choice("auto", "x25", "kermit"),
        "auto",
        "frame CRC: auto-detect, CRC-16/X-25 or CRC-16/KERMIT (Holley DTZ541)",
        meter=True,
    ),
    _opt(
        "accept_bad_msg_crc",
        "--accept-bad-msg-crc",
        parse_bool,
        False,
        "use messages whose own CRC is wrong when the frame CRC was good",
        meter=True,
        boolean=True,
    ),
    _opt(
        "direction_from_status",
        "--direction-from-status",
        parse_bool,
        False,
        "sign the power by bit 0x20 of the 1.8.0 status word (EMH ED300L/eHZ)",
        meter=True,
        boolean=True,
    ),
    _opt(
        "id",
        "--meter-id",
        parse_str,
        "",
        "use this meter id instead of the server id the meter sends",
        meter=True,
        metavar="ID",
    ),
    _opt(
        "max_power_kw",
        "--max-power-kw",
        parse_float(0.1),
        100.0,
        "largest plausible power; faster-rising energy registers are rejected",
        meter=True,
        metavar="KW",
    ),
    _opt(
        "model",
        "--meter-model",
        parse_str,
        "",
        "meter model shown in Home Assistant, e.g. MT631 (the id only tells the maker)",
        meter=True,
        metavar="MODEL",
    ),
)

ALL_OPTIONS = GLOBAL_OPTIONS + METER_OPTIONS
_GLOBAL_BY_KEY = {o.key: o for o in GLOBAL_OPTIONS}
_METER_BY_KEY = {o.key: o for o in METER_OPTIONS}


@dataclass(frozen=True)
class MeterConfig:
    """One meter's settings, as loaded. Defaults live in METER_OPTIONS only (built by `load`)."""

    name: str
    port: str
    tcp: str
    replay: str
    simulate: bool
    baudrate: int
    bytesize: int
    parity: str
    stopbits: float
    xonxoff: bool
    rtscts: bool
    watchdog: float
    reconnect_max: float
    speed: str
    replay_interval: float
    replay_start: str
    loop: bool
    profile: str
    interval: float
    seed: str
    capture: str
    crc: str
    accept_bad_msg_crc: bool
    direction_from_status: bool
    id: str
    max_power_kw: float
    model: str

    @property
    def source_kind(self) -> str:
        """Which source key is set: port, tcp, replay, simulate (or "" for none)."""
        kinds = [k for k in SOURCE_KEYS if getattr(self, k)]
        return kinds[0] if kinds else ""

    def describe_source(self) -> str:
        """The source for logs and status pages, e.g. "port /dev/ttyUSB0"."""
        kind = self.source_kind
        return "simulate" if kind == "simulate" else f"{kind} {getattr(self, kind)}"

    @property
    def speed_factor(self) -> Optional[float]:
        """Replay speed as a factor; None replays as fast as possible ("max")."""
        return None if self.speed == "max" else float(self.speed)


@dataclass(frozen=True)
class Config:
    """The effective configuration, as loaded. Defaults live in GLOBAL_OPTIONS only."""

    data_dir: str
    log_level: str
    store_interval: float
    meter_names: str
    shutdown_timeout: float
    storage_ram_dir: str
    storage_sync_interval: float
    storage_commit_interval: float
    database_url: str
    database_password_file: str
    database_enabled: bool
    database_legacy_table: bool
    database_legacy_local_time: bool
    database_spool_max_age_days: float
    database_batch_size: int
    csv_enabled: bool
    csv_dir: str
    csv_rotate: str
    csv_max_size_mb: float
    csv_compress: bool
    csv_keep_days: float
    csv_timezone: str
    http_max_connections_per_client: int
    http_listen: str
    http_token: str
    http_token_file: str
    mqtt_url: str
    mqtt_password: str
    mqtt_password_file: str
    mqtt_prefix: str
    mqtt_discovery: bool
    mqtt_discovery_prefix: str
    mqtt_qos: int
    mqtt_retain: bool
    mqtt_ca_file: str
    mqtt_client_cert: str
    mqtt_client_key: str
    mqtt_client_id: str
    mqtt_interval: float
    mqtt_deadband: str
    mqtt_heartbeat: float
    mqtt_queue_size: int
    mqtt_offline_after: float
    mqtt_remove_after: float
    mqtt_reconnect_max: float
    meters: tuple[MeterConfig, ...]
    config_file: Optional[str]
    # files holding a secret (config file, *_file options) and the warnings found at load time:
    # files others may read, secrets given as flags (which `ps` shows to every user)
    secret_files: tuple[SecretFile, ...]
    warnings: tuple[str, ...]

    @property
    def data_path(self) -> Path:
        """The data directory, `~` expanded."""
        return Path(os.path.expanduser(self.data_dir))

    @property
    def csv_path(self) -> Path:
        """The CSV directory: csv_dir, else csv/ in the data directory."""
        return Path(os.path.expanduser(self.csv_dir)) if self.csv_dir else self.data_path / "csv"

    @property
    def http_address(self) -> Optional[tuple[str, int]]:
        """(host, port) of the web page, or None when it is off."""
        return None if self.http_listen == "off" else split_host_port(self.http_listen)

    @property
    def meter_name_table(self) -> dict[str, str]:
        """The `meter_names` option as meter id -> name."""
        return parse_name_table(self.meter_names)

    def secrets(self) -> list[str]:
        """Secret strings that must never be printed or logged."""
        found = [self.http_token] if self.http_token else []
        for url in (self.database_url, self.mqtt_url):
            password = urlsplit_password(url)
            if password:
                # as written in the URL and decoded (a driver's message may show either)
                found += [password, url_password(url)]
        if self.mqtt_password:
            found.append(self.mqtt_password)
        if self.mqtt_password_file:
            try:
                text = Path(os.path.expanduser(self.mqtt_password_file)).read_text("utf-8")
            except (OSError, UnicodeDecodeError):
                text = ""
            if text.strip("\r\n"):
                found.append(text.strip("\r\n"))
        return sorted(set(found), key=len, reverse=True)


# ---- masking -----------------------------------------------------------------------------

URL_OPTIONS = ("database.url", "mqtt.url")  # secret options that stay readable but the password


def masked(option: Option, value: Any) -> Any:
    """`value` safe to show: a secret option's value masked (URLs keep all but the password)."""
    if not option.secret or not value:
        return value
    if option.key in URL_OPTIONS:
        return mask_url(str(value))
    return MASK


class RedactingFilter(logging.Filter):
    """Replaces secret strings in every log record (belt and braces to masking at the source)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask every known secret in the message and exception text; never drops a record."""
        if not self.secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self.secrets:
            redacted = redacted.replace(secret, MASK)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            text = str(record.exc_info[1])
            if any(s in text for s in self.secrets):
                record.exc_info = None
                record.exc_text = None
                record.msg = f"{record.msg} (details withheld: they contain a secret)"
        return True


# ---- loading -----------------------------------------------------------------------------


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _apply(option: Option, raw: Any, where: str) -> Any:
    try:
        return option.parse(raw)
    except ValueError as exc:
        shown = masked(option, raw) if isinstance(raw, str) else raw
        if option.secret:
            shown = MASK if option.key not in URL_OPTIONS else mask_url(str(raw))
        raise ConfigError(f"{where}: invalid value {shown!r}: {exc}") from None


def _flatten_globals(data: Mapping[str, Any], path: str) -> tuple[dict[str, Any], list[Any]]:
    values: dict[str, Any] = {}
    meters: list[Any] = []
    sections = {k.split(".")[0] for k in _GLOBAL_BY_KEY if "." in k}
    for key, value in data.items():
        if key == "meter":
            meters = value if isinstance(value, list) else [value]
            continue
        if key in sections:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{path}: [{key}] must be a table")
            for sub, subvalue in value.items():
                full = f"{key}.{sub}"
                if full not in _GLOBAL_BY_KEY:
                    known = [k.split(".", 1)[1] for k in _GLOBAL_BY_KEY if k.startswith(key + ".")]
                    raise ConfigError(
                        f"{path}: unknown key {full!r}{_suggest(sub, known)} "
                        f"(allowed in [{key}]: {', '.join(known)})"
                    )
                values[full] = subvalue
            continue
        if key not in _GLOBAL_BY_KEY:
            known = [k for k in _GLOBAL_BY_KEY if "." not in k] + sorted(sections) + ["meter"]
            raise ConfigError(f"{path}: unknown key {key!r}{_suggest(key, known)}")
        values[key] = value
    return values, meters


def read_file(path: Path) -> dict[str, Any]:
    """The parsed TOML file; ConfigError naming the file when it is missing or invalid."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    return data


def _meter_from_table(table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table")
    values = {}
    for key, raw in table.items():
        option = _METER_BY_KEY.get(key)
        if option is None:
            raise ConfigError(
                f"{where}: unknown key {key!r}{_suggest(key, list(_METER_BY_KEY))} "
                f"(allowed: {', '.join(_METER_BY_KEY)})"
            )
        values[key] = _apply(option, raw, f"{where}.{key}")
    return values


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for option in ALL_OPTIONS:
        if option.env in env:
            out[("meter:" if option.meter else "") + option.key] = _apply(
                option, env[option.env], f"environment variable {option.env}"
            )
    return out


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for option in ALL_OPTIONS:
        value = getattr(args, _dest(option), None)
        if value is not None:
            out[("meter:" if option.meter else "") + option.key] = _apply(
                option, value, f"option {option.flag}"
            )
    return out


def _dest(option: Option) -> str:
    return "opt_" + option.flag.lstrip("-").replace("-", "_")


def _check_meter(meter: Mapping[str, Any], where: str) -> None:
    sources = [k for k in SOURCE_KEYS if meter.get(k)]
    if not sources:
        raise ConfigError(
            f"{where}: no source; set one of port, tcp, replay or simulate "
            "(flags --port, --tcp, --replay, --simulate)"
        )
    if len(sources) > 1:
        raise ConfigError(
            f"{where}: more than one source ({', '.join(sources)}); a meter has exactly one"
        )


def load(
    args: argparse.Namespace | None = None,
    env: Mapping[str, str] | None = None,
    *,
    require_meter: bool = True,
) -> Config:
    """Effective configuration from defaults, the config file, the environment and the flags."""
    env = os.environ if env is None else env
    path_text = getattr(args, "config", None) if args is not None else None
    path_text = path_text or env.get(ENV_PREFIX + "CONFIG") or None
    file_globals: dict[str, Any] = {}
    file_meters: list[dict[str, Any]] = []
    if path_text:
        path = Path(os.path.expanduser(path_text))
        data = read_file(path)
        raw_globals, raw_meters = _flatten_globals(data, str(path))
        for key, raw in raw_globals.items():
            file_globals[key] = _apply(_GLOBAL_BY_KEY[key], raw, f"{path}: {key}")
        for index, table in enumerate(raw_meters):
            file_meters.append(_meter_from_table(table, f"{path}: meter[{index + 1}]"))
    overrides = _env_values(env)
    flag_values = _flag_values(args) if args is not None else {}
    overrides.update(flag_values)

    global_values = {o.key: o.default for o in GLOBAL_OPTIONS}
    global_values.update(file_globals)
    global_values.update({k: v for k, v in overrides.items() if ":" not in k})
    secret_files = _read_secret_files(global_values)
    if path_text and any(_GLOBAL_BY_KEY[k].holds_secret(v) for k, v in file_globals.items()):
        held = [
            _GLOBAL_BY_KEY[k] for k, v in file_globals.items() if _GLOBAL_BY_KEY[k].holds_secret(v)
        ]
        secret_files.insert(0, SecretFile(str(path), _what_holds(held)))
    warnings = exposure_warnings(tuple(secret_files))
    for key, value in flag_values.items():
        option = _GLOBAL_BY_KEY.get(key)
        if option is not None and option.holds_secret(value):
            warnings.append(_flag_warning(option))

    meter_overrides = {
        k.split(":", 1)[1]: v for k, v in overrides.items() if k.startswith("meter:")
    }
    new_source = any(meter_overrides.get(k) for k in SOURCE_KEYS)
    if new_source:
        base = dict(file_meters[0]) if len(file_meters) == 1 else {}
        for key in SOURCE_KEYS:
            base.pop(key, None)
        meters = [{**base, **meter_overrides}]
    else:
        meters = [{**m, **meter_overrides} for m in file_meters]
        if not meters and require_meter and meter_overrides:
            meters = [dict(meter_overrides)]

    built: list[MeterConfig] = []
    names: set[str] = set()
    for index, given in enumerate(meters):
        if file_meters and not new_source:
            where = f"{path_text}: meter[{index + 1}]"
        else:
            where = "meter (command line/environment)"
        if require_meter:
            _check_meter(given, where)
        values = {o.key: o.default for o in METER_OPTIONS}
        values.update(given)
        if not values["name"]:
            values["name"] = "meter" if index == 0 else f"meter{index + 1}"
        if values["name"] in names:
            raise ConfigError(f"{where}.name: {values['name']!r} is used by two meters")
        names.add(values["name"])
        built.append(MeterConfig(**values))
    if require_meter and not built:
        raise ConfigError(
            "no meter: give a source (--port DEVICE, --tcp HOST:PORT, --replay FILE or "
            "--simulate) or [[meter]] tables in the config file (--config FILE)"
        )
    return Config(
        **{_GLOBAL_BY_KEY[key].attr: value for key, value in global_values.items()},
        meters=tuple(built),
        config_file=str(path_text) if path_text else None,
        secret_files=tuple(secret_files),
        warnings=tuple(warnings),
    )


def _what_holds(options: list[Option]) -> str:
    names = ["the password in database.url" if o.key == "database.url" else o.key for o in options]
    return " and ".join(names)


def _read_secret_files(values: dict[str, Any]) -> list[SecretFile]:
    """Fill the keys of the *_file options in `values` from their files; the files read.

    Each secret has one source: a *_file option next to its key's own value is an error, as
    is a file that cannot be read (the message names the key, flag and variable).
    """
    files = []
    for option in GLOBAL_OPTIONS:
        if option.file_for is None or not values[option.key]:
            continue
        where = f"{option.key} (flag {option.flag}, environment {option.env})"
        path = Path(os.path.expanduser(values[option.key]))
        try:
            secret = read_secret_file(path)
        except SecretFileError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        target = _GLOBAL_BY_KEY[option.file_for]
        if target.key == "database.url":
            try:
                values[target.key] = url_with_password(values[target.key], secret)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        elif values[target.key]:
            raise ConfigError(
                f"{where}: {target.key} is set as well; give the secret in one place only "
                f"({target.key}, {target.flag}, {target.env} or {option.key})"
            )
        else:
            values[target.key] = secret
        files.append(
            SecretFile(
                str(path), target.key if target.key != "database.url" else "the database password"
            )
        )
    return files


def _flag_warning(option: Option) -> str:
    file_option = next((o for o in GLOBAL_OPTIONS if o.file_for == option.key), None)
    instead = f"{option.env}, the config file"
    if file_option is not None:
        instead += f" or {file_option.key} ({file_option.flag})"
    return (
        f"{option.flag} was given a secret on the command line, where `ps` shows it to every "
        f"user of this machine; use {instead} instead"
    )


# ---- argparse integration ----------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """All options as flags (default None = not given, so lower layers show through)."""
    parser.add_argument(
        "--config", "-c", metavar="FILE", help=f"TOML config file (env {ENV_PREFIX}CONFIG)"
    )
    groups = {
        "": parser.add_argument_group("general"),
        "storage": parser.add_argument_group("storage (SD-card write budget)"),
        "database": parser.add_argument_group("database"),
        "csv": parser.add_argument_group("CSV files"),
        "http": parser.add_argument_group("web page and API"),
        "mqtt": parser.add_argument_group("MQTT and Home Assistant"),
        "meter": parser.add_argument_group(
            "meter (one meter; use [[meter]] tables in the config file for several)"
        ),
    }
    for option in ALL_OPTIONS:
        group = groups[
            "meter" if option.meter else option.key.split(".")[0] if "." in option.key else ""
        ]
        choices: Optional[tuple[str, ...]] = getattr(option.parse, "choices", None)
        # argparse formats help with %: a literal one ("1%") must be doubled
        text = f"{option.help}{_default_text(option)} [{option.display}, env {option.env}]"
        text = text.replace("%", "%%")
        if option.boolean:
            group.add_argument(
                option.flag,
                dest=_dest(option),
                default=None,
                action=argparse.BooleanOptionalAction,
                help=text,
            )
        else:
            group.add_argument(
                option.flag,
                dest=_dest(option),
                default=None,
                metavar=(
                    "{" + ",".join(choices) + "}"
                    if choices
                    else option.metavar or option.key.split(".")[-1].upper()
                ),
                help=text,
            )
        if option.key == "http.listen":
            group.add_argument(
                "--no-http",
                dest=_dest(option),
                action="store_const",
                const="off",
                help="no web page and API (same as --http off)",
            )


def _default_text(option: Option) -> str:
    """ " (default: X)" for --help; nothing for an empty default (the help says what it means)
    or a secret."""
    value = option.default
    if option.secret or value == "" or value is None:
        return ""
    if isinstance(value, bool):
        shown = "on" if value else "off"
    elif isinstance(value, float):
        shown = f"{value:g}"
    else:
        shown = str(value)
    return f" (default: {shown})"


# ---- output ------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """`value` written as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else f"{value:.1f}"
    return json.dumps(str(value), ensure_ascii=False)


def dump(config: Config) -> str:
    """The effective configuration as TOML, secrets masked."""
    lines = ["# effective smlogger configuration (secrets masked)"]
    if config.config_file:
        lines.append(f"# config file: {config.config_file}")
    section = ""
    for option in GLOBAL_OPTIONS:
        head = option.key.split(".")[0] if "." in option.key else ""
        if head != section:
            lines += ["", f"[{head}]"]
            section = head
        value = masked(option, getattr(config, option.attr))
        lines.append(f"{option.key.split('.')[-1]} = {toml_value(value)}")
    for meter in config.meters:
        lines += ["", "[[meter]]"]
        for option in METER_OPTIONS:
            value = getattr(meter, option.key)
            if option.key in SOURCE_KEYS and not value:
                continue
            lines.append(f"{option.key} = {toml_value(masked(option, value))}")
    return "\n".join(lines) + "\n"


def example() -> str:
    """A commented example config file with every option, its flag and its variable."""
    out = [
        "# smlogger configuration (TOML). Every key is also a command-line flag and an",
        "# environment variable; flags win over the environment, which wins over this file.",
        "# Energies are in kWh, power in W, times in UTC.",
    ]
    section = ""
    for option in GLOBAL_OPTIONS:
        head = option.key.split(".")[0] if "." in option.key else ""
        if head != section:
            out += ["", f"[{head}]"]
            section = head
        out += _example_lines(option, option.key.split(".")[-1])
    out += [
        "",
        "# One [[meter]] table per meter, each with exactly one source:",
        "# port (serial), tcp, replay or simulate.",
        "[[meter]]",
    ]
    for option in METER_OPTIONS:
        out += _example_lines(option, option.key, commented=option.key in ("tcp", "replay"))
    out += [
        "",
        "# a second meter on a network IR head",
        "# [[meter]]",
        '# name = "heatpump"',
        '# tcp = "192.168.1.50:8888"',
    ]
    return "\n".join(out) + "\n"


def _example_lines(option: Option, key: str, commented: bool = False) -> list[str]:
    value: Any = option.example if option.example is not None else option.default
    samples = {"name": "house", "tcp": "192.168.1.50:8888", "replay": "recording.bin"}
    value = samples.get(option.key, value) if option.meter else value
    if option.secret:
        # secrets stay commented out: a copied example must not enable them by accident
        commented = True
        value = option.example or "change-me"
    prefix = "# " if commented else ""
    return [
        f"# {option.help}",
        f"#   flag {option.flag}, environment {option.env}",
        f"{prefix}{key} = {toml_value(value)}",
    ]


def urlsplit_password(url: str) -> str:
    """The password of a URL as written (still %-encoded), "" when it has none or no URL."""
    if not url:
        return ""
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""
