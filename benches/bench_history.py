"""History queries over a year of data: how fast do the chart views answer?

Bulk-loads one year of synthetic meter data into a fresh SQLite database (and, with --mysql,
into MariaDB/MySQL), building the minute/hour/day rollups on the way exactly as the logger does,
then times `StoreReader.history()` for the hour/day/week/month/year views and
`StoreReader.consumption()`.

    python benches/bench_history.py                  # a year at one reading per 10 s (3.15M rows)
    python benches/bench_history.py --full           # a year at 1 Hz (31.5M rows; ~15 min, ~10 GB)
    python benches/bench_history.py --rows 500000    # any count, spread over the year
    python benches/bench_history.py --mysql mysql://user:pw@127.0.0.1:3306/bench

The chart views read rollups (a year: 8760 hour rows), so their cost does not depend on the
raw row count; the hour view reads raw readings. No assertions: it prints numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smlogger.reading import Reading
from smlogger.store import (
    SqlWriter,
    StoredRow,
    StoreReader,
    ensure_schema,
    open_database,
    redact_url,
)

YEAR_S = 365 * 86400
METER = "0a01445a47000282225e"
START = datetime(2023, 1, 1, tzinfo=timezone.utc)
VIEWS = (
    ("hour", timedelta(hours=1)),
    ("day", timedelta(days=1)),
    ("week", timedelta(days=7)),
    ("month", timedelta(days=30)),
    ("year", timedelta(days=365)),
)


def synthetic_rows(count: int, span_s: int = YEAR_S) -> Iterator[StoredRow]:
    """`count` readings evenly over `span_s` seconds: a daily load curve, a counter that
    integrates it, three phases, voltages; the OBIS JSON an MT175 would give."""
    interval = span_s / count
    energy = 12000.0
    exported = 50.0
    empty: dict[str, tuple[float, float]] = {}
    for i in range(count):
        t = i * interval
        day_phase = (t % 86400) / 86400
        power = 350 + 800 * max(0.0, math.sin((day_phase - 0.25) * 2 * math.pi))
        power += 120 * math.sin(i * 0.7) + 60 * math.sin(i * 0.013)
        if (i // 97) % 50 == 0:
            power = -400.0  # some export now and then
        if power > 0:
            energy += power * interval / 3.6e6
        else:
            exported -= power * interval / 3.6e6
        p = round(power, 1)
        l1 = round(p * 0.45, 1)
        l2 = round(p * 0.35, 1)
        l3 = round(p - l1 - l2, 1)
        e = round(energy, 4)
        x = round(exported, 4)
        fields = dict.fromkeys(Reading.FIELDS)
        fields.update(
            e_sum=e, e_export=x, e_t1=e, e_t2=0.0, p_sum=p, p_L1=l1, p_L2=l2, p_L3=l3,
            u_L1=230.1, u_L2=229.8, u_L3=231.0,
        )  # fmt: skip
        values = (
            f'{{"1-0:1.8.0*255":[{e * 1000:.1f},"Wh"],"1-0:2.8.0*255":[{x * 1000:.1f},"Wh"],'
            f'"1-0:1.8.1*255":[{e * 1000:.1f},"Wh"],"1-0:1.8.2*255":[0.0,"Wh"],'
            f'"1-0:16.7.0*255":[{p},"W"],"1-0:36.7.0*255":[{l1},"W"],'
            f'"1-0:56.7.0*255":[{l2},"W"],"1-0:76.7.0*255":[{l3},"W"],'
            f'"1-0:96.50.1*1":["49534b",null]}}'
        )
        yield StoredRow(METER, START + timedelta(seconds=t), 1, fields, empty, values)


def load(store_db: object, count: int, batch: int, span_s: int = YEAR_S) -> float:
    """Bulk-load through the logger's own writer; returns seconds."""
    ensure_schema(store_db)  # type: ignore[arg-type]
    writer = SqlWriter(store_db)  # type: ignore[arg-type]
    began = time.perf_counter()
    pending: list[StoredRow] = []
    done = 0
    last_report = began
    for row in synthetic_rows(count, span_s):
        pending.append(row)
        if len(pending) >= batch:
            done += writer.write(pending)
            pending = []
            now = time.perf_counter()
            if now - last_report > 10:
                rate = done / (now - began)
                print(f"  {done:>11,} rows  {rate:>9,.0f} rows/s", flush=True)
                last_report = now
    if pending:
        done += writer.write(pending)
    return time.perf_counter() - began


def time_call(fn: object, repeat: int) -> tuple[float, float, object]:
    """(first call ms, median of the following calls ms, result)."""
    samples = []
    result = None
    for _ in range(repeat + 1):
        began = time.perf_counter()
        result = fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - began) * 1000)
    return samples[0], statistics.median(samples[1:]), result


def bench_queries(store: StoreReader, count: int, repeat: int) -> list[dict[str, object]]:
    end = START + timedelta(seconds=YEAR_S)
    results = []
    print(f"  {'view':<10}{'source':<8}{'step':>7}{'points':>8}{'first ms':>10}{'median ms':>11}")
    for name, span in VIEWS:
        first, median, result = time_call(
            lambda span=span: store.history(METER, end - span, end), repeat
        )
        assert isinstance(result, dict)
        print(
            f"  {name:<10}{result['source']:<8}{result['step'] or 'raw':>7}"
            f"{len(result['points']):>8}{first:>10.1f}{median:>11.1f}"
        )
        results.append(
            {"view": name, "source": result["source"], "step": result["step"],
             "points": len(result["points"]), "first_ms": round(first, 2),
             "median_ms": round(median, 2)}
        )  # fmt: skip
    for period, span, tz in (
        ("day", timedelta(days=31), None),
        ("day", timedelta(days=31), "Europe/Berlin"),
        ("month", timedelta(days=365), "Europe/Berlin"),
    ):
        first, median, bars = time_call(
            lambda period=period, span=span, tz=tz: store.consumption(
                METER, period, end - span, end, tz=tz
            ),
            repeat,
        )
        label = f"{period}s {tz or 'UTC'}"
        print(f"  {'kWh/' + label:<33}{len(bars):>8}{first:>10.1f}{median:>11.1f}")  # type: ignore[arg-type]
        results.append(
            {"view": f"consumption {label}", "bars": len(bars),  # type: ignore[arg-type]
             "first_ms": round(first, 2), "median_ms": round(median, 2)}
        )  # fmt: skip
    return results


def _row_count(db: object) -> int:
    ensure_schema(db)  # type: ignore[arg-type]
    cursor = db.execute_sql("SELECT COUNT(*) FROM readings")  # type: ignore[attr-defined]
    return int(cursor.fetchone()[0])


def run_backend(
    label: str, url: str | None, data_dir: Path, count: int, args: argparse.Namespace
) -> dict[str, object]:
    print(f"\n== {label}: {count:,} rows over one year", flush=True)
    db = open_database(url, data_dir)
    seconds = 0.0
    if args.reuse and _row_count(db) > 0:
        print(f"  reusing the {_row_count(db):,} rows already there")
    else:
        seconds = load(db, count, args.batch)
        print(f"  loaded in {seconds:.1f} s ({count / seconds:,.0f} rows/s, rollups included)")
    db.close()
    try:
        queries = bench_queries(StoreReader(db), count, args.repeat)
    finally:
        db.close()
    return {"backend": label, "rows": count, "load_s": round(seconds, 1), "queries": queries}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=YEAR_S // 10, help="rows to load (default: a year at 10 s)"
    )
    parser.add_argument("--full", action="store_true", help="a year at 1 Hz: 31,536,000 rows")
    parser.add_argument(
        "--mysql",
        metavar="URL",
        help="also bench this MariaDB/MySQL database (its tables are replaced)",
    )
    parser.add_argument("--batch", type=int, default=20000, help="rows per transaction")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions per query")
    parser.add_argument("--keep", metavar="DIR", help="put the SQLite file here and keep it")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--summary", action="store_true", help="end with a BENCH_SUMMARY line (benches/run.py)"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --keep/--mysql: time the queries on data loaded by an earlier run",
    )
    args = parser.parse_args(argv)
    count = YEAR_S if args.full else args.rows
    data_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="smlogger-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        if not args.reuse:
            (data_dir / "smlogger.db").unlink(missing_ok=True)
        results.append(run_backend("sqlite", None, data_dir, count, args))
        if args.mysql:
            db = open_database(args.mysql, data_dir)
            ensure_schema(db)
            if not args.reuse:
                for table in ("readings", "rollup_minute", "rollup_hour", "rollup_day", "meters"):
                    db.execute_sql(f"TRUNCATE TABLE `{table}`")  # type: ignore[no-untyped-call]
            db.close()
            results.append(
                run_backend(f"mysql {redact_url(args.mysql)}", args.mysql, data_dir, count, args)
            )
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.summary:
        print("BENCH_SUMMARY " + json.dumps(summary(results)))
    return 0


def summary(results: list[dict[str, object]]) -> dict[str, object]:
    """The figures for benches/run.py: load rate and query medians per backend."""
    rows: list[dict[str, object]] = []
    for r in results:
        backend = str(r["backend"]).split(" ")[0]
        load_s = float(r["load_s"])  # type: ignore[arg-type]
        if load_s > 0:
            rows.append(
                {"name": f"{backend}: bulk load through SqlWriter, rollups included",
                 "value": int(r["rows"]) / load_s, "unit": "readings/s",  # type: ignore[call-overload]
                 "note": f"{r['rows']:,} readings in {load_s:.1f} s", "summary": True}
            )  # fmt: skip
        for q in r["queries"]:  # type: ignore[attr-defined]
            rows.append(
                {"name": f"{backend}: {q['view']} view, median", "value": q["median_ms"],
                 "unit": "ms", "note": f"first call {q['first_ms']} ms",
                 "summary": q["view"] in ("day", "month", "year")}
            )  # fmt: skip
    return {
        "section": "history",
        "title": "Bulk load and history query latency",
        "rows": rows,
        "notes": [
            "synthetic year of one meter (daily load curve); chart views read the rollups, "
            "the hour view reads raw readings"
        ],
    }


if __name__ == "__main__":
    raise SystemExit(main())
