"""`smlogger db-init` and `smlogger export`: schema set-up and data export from the database.

Both read the database location like `smlogger run` does: --db-url / --data-dir flags, else the
environment (SMLOGGER_DB_URL, SMLOGGER_DATA_DIR), else the config file (--config), else the
default SQLite file in the data directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Optional

from smlogger import config as cfgmod
from smlogger.timefmt import iso

if TYPE_CHECKING:
    # peewee (with the MySQL and PostgreSQL drivers it loads) and the store are imported by
    # the commands that open a database: the CLI imports this module for its parsers on
    # every start, `smlogger --help` and `smlogger decode` included
    import peewee

    from smlogger.store import Queries

FORMATS = ("csv", "json", "ndjson")


def time_argument(name: str) -> Callable[[str], datetime]:
    """An argparse `type` for --from/--to: the web API's time syntax (smlogger.web.params)."""

    def parse(text: str) -> datetime:
        """The argument as an aware datetime; raises ArgumentTypeError naming the bad text."""
        # imported here: `smlogger export` should not load the web package on every CLI start
        from smlogger.web.params import ApiError, parse_time

        try:
            return parse_time(name, text, datetime.now(timezone.utc))
        except ApiError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not a time: {exc.message}") from None

    return parse


RELATIVE_TIME_FLAGS = ("--from", "--to")
_RELATIVE = re.compile(r"-\d+(?:\.\d+)?\s*[a-zA-Z]*")


def join_relative_times(argv: list[str]) -> list[str]:
    """`--from -5m` as `--from=-5m`: argparse would take a bare `-5m` for a flag."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg in RELATIVE_TIME_FLAGS and nxt is not None and _RELATIVE.fullmatch(nxt):
            out.append(f"{arg}={nxt}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def _add_db_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", metavar="FILE", help="TOML config file (env SMLOGGER_CONFIG)"
    )
    parser.add_argument(
        "--db-url",
        metavar="URL",
        help="database URL: mysql://user:pw@host/db, postgresql://..., sqlite:///file "
        "(env SMLOGGER_DB_URL; default: smlogger.db in the data dir)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"data directory (env SMLOGGER_DATA_DIR; default {cfgmod.DEFAULT_DATA_DIR})",
    )


def register_cli(subparsers: Any) -> None:
    """Add the `db-init` and `export` subcommands."""
    init = subparsers.add_parser(
        "db-init",
        help="create or migrate the database schema",
        description="Create the tables (or bring an existing database up to the current "
        "schema) and print what was done. Safe to run again; `smlogger run` does the same "
        "on start.",
    )
    _add_db_arguments(init)
    init.add_argument(
        "--legacy-table",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also create the old script's `values` table (time, e_sum, p_sum, p_L1..p_L3)",
    )
    init.set_defaults(func=cmd_db_init)

    export = subparsers.add_parser(
        "export",
        help="export stored readings as CSV or JSON",
        description="Stream stored readings from the database, in time order. Times are\n"
        "ISO-8601, epoch seconds, 'now' or relative (--from -7d, --from -5m); without an\n"
        "offset they are UTC. Output times are UTC with a Z; a configured meter name is\n"
        "given with each reading, and --meter takes a name or an id.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  smlogger export --from 2024-05-01 --to 2024-06-01 > may.csv\n"
        "  smlogger export --from 2024-05-01T00:00:00+02:00 --format json -o may.json\n"
        "  smlogger export --from -7d --meter 0a01445a47000282225e --format ndjson | jq .p_sum\n"
        "  smlogger export --from -5m --meter house",
    )
    _add_db_arguments(export)
    export.add_argument(
        "--from",
        dest="start",
        type=time_argument("from"),
        default=None,
        metavar="TIME",
        help="first reading time (default: the oldest)",
    )
    export.add_argument(
        "--to",
        dest="end",
        type=time_argument("to"),
        default=None,
        metavar="TIME",
        help="end of the range, exclusive (default: now)",
    )
    export.add_argument(
        "--meter", metavar="ID|NAME", help="only this meter, by id or name (default: all)"
    )
    export.add_argument(
        "--format",
        choices=FORMATS,
        default="csv",
        help="csv (the rolling CSV files' columns and the meter's name), json (one array) or "
        "ndjson (one object a line)",
    )
    export.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    export.set_defaults(func=cmd_export)


def _config(args: argparse.Namespace) -> cfgmod.Config:
    return cfgmod.load(argparse.Namespace(config=args.config), require_meter=False)


def _names(config: cfgmod.Config, data_dir: Path) -> dict[str, str]:
    """Meter id -> name: what the logger learned (smlogger.names), the [[meter]]s with a
    configured `id` and the `meter_names` table, later ones winning."""
    from smlogger.names import NAMES_FILE, read_names_file
    from smlogger.service import meter_names

    return {**read_names_file(data_dir / NAMES_FILE), **meter_names(config).all()}


def _location(args: argparse.Namespace) -> tuple[Optional[str], Path, bool]:
    """(database URL or None, data dir, legacy table) from flags > environment > file."""
    config = _config(args)
    url = args.db_url if args.db_url is not None else config.database_url
    data_dir = (
        Path(os.path.expanduser(args.data_dir)) if args.data_dir is not None else config.data_path
    )
    legacy = getattr(args, "legacy_table", None)
    return url or None, data_dir, config.database_legacy_table if legacy is None else legacy


def _describe(db: peewee.Database, url: Optional[str]) -> str:
    from smlogger.store import dialect_of, redact_url

    if dialect_of(db).name == "sqlite":
        return f"SQLite {db.database}"
    return redact_url(url)


def _fail(message: str) -> int:
    sys.stderr.write(f"smlogger: error: {message}\n")
    return 1


def _open(args: argparse.Namespace) -> tuple[peewee.Database, Optional[str], bool]:
    from smlogger.store import open_database

    url, data_dir, legacy = _location(args)
    try:
        return open_database(url, data_dir), url, legacy
    except ValueError as exc:
        raise cfgmod.ConfigError(f"--db-url: {exc}") from None


def cmd_db_init(args: argparse.Namespace) -> int:
    """`smlogger db-init`: create or migrate the schema and report the version; exit status."""
    import peewee

    from smlogger.store import ensure_schema, schema_version

    db, url, legacy = _open(args)
    where = _describe(db, url)
    try:
        actions = ensure_schema(db, legacy_table=legacy)
        version = schema_version(db)
    except peewee.PeeweeException as exc:
        from smlogger.preflight import explain

        return _fail(explain(db, exc, where))
    finally:
        db.close()
    if actions:
        print(f"{where}:")
        for action in actions:
            print(f"  {action}")
        print(f"schema version {version}")
    else:
        print(f"{where}: schema up to date (version {version})")
    return 0


def _csv_lines(readings: Iterator[Any], aggregated: bool, names: dict[str, str]) -> Iterator[str]:
    from smlogger.csvlog import RowFormat, columns

    # the rolling CSV files' columns with the meter's name after its id
    head = columns(aggregated)
    yield ",".join([*head[:2], "name", *head[2:]]) + "\n"
    format_row = RowFormat(aggregated).row
    for reading in readings:
        row = format_row(reading)
        time_text, meter_text, rest = row.split(",", 2)
        name = names.get(reading.meter_id, "")
        yield ",".join([time_text, meter_text, _csv_cell(name), rest])


def _csv_cell(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _clean_number(value: Any, digits: int) -> Any:
    """A float without binary noise (12339.700400000002 -> 12339.7004); others unchanged."""
    if isinstance(value, float) and not isinstance(value, bool):
        return float(f"{value:.{digits}g}")
    return value


def export_record(reading: Any, name: Optional[str]) -> dict[str, Any]:
    """One exported reading: Z times, the meter's name, numbers without float noise."""
    record = reading.to_dict()
    out: dict[str, Any] = {"meter_id": record.pop("meter_id"), "name": name}
    out["time"] = iso(reading.time)
    record.pop("time")
    for key, value in record.items():
        if key == "values":
            out[key] = {
                obis: {**item, "value": _clean_number(item["value"], 15)}
                for obis, item in value.items()
            }
        elif key == "minmax":
            out[key] = {k: [_clean_number(v, 12) for v in pair] for k, pair in value.items()}
        else:
            out[key] = _clean_number(value, 12)
    return out


def _json_lines(readings: Iterator[Any], array: bool, names: dict[str, str]) -> Iterator[str]:
    separator = ""
    if array:
        yield "["
    for reading in readings:
        record = export_record(reading, names.get(reading.meter_id))
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        if array:
            yield f"{separator}\n{text}"
            separator = ","
        else:
            yield text + "\n"
    if array:
        yield "\n]\n"


def _aggregated(queries: Queries, start: datetime, end: datetime) -> bool:
    """Whether any row in the range aggregates several readings (CSV then gets min/max)."""
    d = queries.dialect
    cursor = queries.db.execute_sql(  # type: ignore[no-untyped-call]
        f"SELECT MAX({d.q('samples')}) FROM {d.q('readings')} WHERE {d.q('time')} >= "
        f"{d.param} AND {d.q('time')} < {d.param}",
        (d.time_param(start), d.time_param(end)),
    )
    row = cursor.fetchone()
    return bool(row and row[0] is not None and int(row[0]) > 1)


@contextlib.contextmanager
def _output(path: Optional[str]) -> Iterator[IO[str]]:
    """stdout, or a file that appears complete or not at all."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def cmd_export(args: argparse.Namespace) -> int:
    """`smlogger export`: write stored readings of a time range as CSV/JSON; exit status."""
    import peewee

    from smlogger.store import Queries, is_connection_error, schema_version

    _url, data_dir, _legacy = _location(args)
    names = _names(_config(args), data_dir)
    db, url, _legacy = _open(args)
    where = _describe(db, url)
    start = args.start or datetime(1970, 1, 1, tzinfo=timezone.utc)
    end = args.end or datetime.now(timezone.utc) + timedelta(seconds=1)
    if end <= start:
        raise cfgmod.ConfigError("--to must be after --from")
    queries = Queries(db)
    try:
        if schema_version(db) == 0:
            return _fail(f"database {where} has no smlogger tables (run `smlogger db-init`)")
        meter = args.meter
        if meter is not None and queries.meter_key(meter) is None:
            by_name = [i for i, n in names.items() if n == meter]
            meter = by_name[0] if by_name else None
        if args.meter is not None and (meter is None or queries.meter_key(meter) is None):
            known = ", ".join(f"{m} ({names[m]})" if m in names else m for m in queries.meters())
            return _fail(f"unknown meter {args.meter!r} (stored meters: {known or 'none'})")
        readings = queries.export(meter, start, end)
        if args.format == "csv":
            lines = _csv_lines(readings, _aggregated(queries, start, end), names)
        else:
            lines = _json_lines(readings, array=args.format == "json", names=names)
        with _output(args.output) as out:
            for line in lines:
                out.write(line)
    except BrokenPipeError:
        # `smlogger export | head`: the reader is gone, which is not an error
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except peewee.PeeweeException as exc:
        if is_connection_error(exc) or isinstance(exc, peewee.ImproperlyConfigured):
            from smlogger.preflight import explain

            return _fail(explain(db, exc, where))
        raise
    finally:
        db.close()
    return 0
