"""The JSON shapes the web app sends: strict JSON, readings, link state, history points, and the
number formatting of the server-rendered first paint."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Optional

from smlogger.meterid import meter_label as meter_label  # re-exported: the page uses it
from smlogger.reading import Reading, json_value
from smlogger.states import LinkState, state_rank
from smlogger.timefmt import iso
from smlogger.web.metrics import as_number, crc_error_rate

Json = Any


def clean_json(obj: Any) -> Json:
    """Make `obj` strictly JSON-safe: NaN/inf -> null, datetimes -> ISO, bytes -> hex."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, datetime):
        return iso(obj if obj.tzinfo else obj.replace(tzinfo=timezone.utc))
    if isinstance(obj, bytes):
        return obj.hex()
    return str(obj)


def dumps(obj: Any) -> bytes:
    """Compact, strict UTF-8 JSON of `obj` after `clean_json`."""
    return json.dumps(
        clean_json(obj), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def reading_json(
    reading: Reading | None, meter: str | None, now: datetime, name: str | None = None
) -> dict[str, Json]:
    """The one shape of a live reading, shared by /api/live, SSE and the page's first paint."""
    if reading is None:
        return {
            "meter": meter,
            "name": name,
            "time": None,
            "ts": None,
            "age_s": None,
            "fields": dict.fromkeys(Reading.FIELDS),
            "values": [],
        }
    return {
        "meter": reading.meter_id,
        "name": name,
        "time": iso(reading.time),
        "ts": round(reading.time.timestamp(), 3),
        "age_s": round(max(0.0, (now - reading.time).total_seconds()), 3),
        "fields": reading.fields(),
        "values": [
            {"obis": v.obis, "value": json_value(v.value), "unit": v.unit}
            for v in reading.values.values()
        ],
    }


# ---- link state -------------------------------------------------------------------------------


def link_for_meter(sources: Mapping[str, Mapping[str, Any]], meter: str | None) -> dict[str, Json]:
    """How the meter's data arrives: its sources' worst state, CRC error rate, last-frame age.

    Sources name the meters they delivered; with a single source every meter is on it.
    """
    chosen = {
        k: s for k, s in sources.items() if meter is not None and meter in s.get("meters", ())
    }
    if not chosen and len(sources) == 1:
        chosen = dict(sources)
    if not chosen:
        state: LinkState = "waiting" if not sources else "no data"
        return {"state": state, "detail": "", "sources": [],
                "crc_error_rate": None, "frames_ok": None, "crc_errors": None,
                "last_frame_age_s": None, "diagnosis": None}  # fmt: skip
    worst = max(chosen.values(), key=lambda s: state_rank(s.get("state")))
    problems = source_problems({k: s for k, s in chosen.items()})
    frames_ok = sum(as_number(s.get("stats", {}).get("frames_ok")) or 0 for s in chosen.values())
    crc_errors = sum(as_number(s.get("stats", {}).get("crc_errors")) or 0 for s in chosen.values())
    ages = [
        a for a in (as_number(s.get("last_frame_age_s")) for s in chosen.values()) if a is not None
    ]
    return {
        "state": worst.get("state"),
        "detail": worst.get("detail", ""),
        "sources": sorted(chosen),
        "crc_error_rate": crc_error_rate({"frames_ok": frames_ok, "crc_errors": crc_errors}),
        "frames_ok": int(frames_ok),
        "crc_errors": int(crc_errors),
        "last_frame_age_s": min(ages) if ages else None,
        "diagnosis": problems[0] if problems else None,
    }


def source_problems(sources: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Json]]:
    """Every source's diagnosis that asks the user to act ({source, code, sentence, hint}),
    worst link state first: the page's banner."""
    found = []
    for name, source in sources.items():
        diagnosis = source.get("diagnosis") or {}
        if diagnosis.get("code") in (None, "ok", "listening"):
            continue
        found.append(
            (
                -state_rank(source.get("state")),
                {
                    "source": name,
                    "code": diagnosis.get("code"),
                    "sentence": diagnosis.get("sentence", ""),
                    "hint": diagnosis.get("hint", ""),
                },
            )
        )
    return [problem for _, problem in sorted(found, key=lambda item: item[0])]


# ---- first paint formatting (app.js uses the same rules) ---------------------------------------


NO_VALUE = "\u2013"  # en dash: what the page shows for a value the meter does not send


def fmt_power(watts: Optional[float]) -> tuple[str, str]:
    """Power as (number text, unit): W below 10 kW, kW with two decimals above."""
    if watts is None:
        return NO_VALUE, "W"
    if abs(watts) >= 10_000:
        return f"{watts / 1000:,.2f}", "kW"
    return f"{watts:,.0f}", "W"


def fmt_number(value: Optional[float], decimals: int) -> str:
    """`value` with thousands separators and `decimals` places, or the no-value dash."""
    return NO_VALUE if value is None else f"{value:,.{decimals}f}"


def with_ts(row: Mapping[str, Any]) -> dict[str, Json]:
    """Points carry both an ISO `t` (for people) and an epoch `ts` (for charts)."""
    out = dict(row)
    t = out.get("t")
    if isinstance(t, datetime):
        t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
        out["t"], out["ts"] = iso(t), t.timestamp()
    elif isinstance(t, (int, float)) and not isinstance(t, bool):
        out["t"], out["ts"] = iso(datetime.fromtimestamp(t, timezone.utc)), float(t)
    elif isinstance(t, str) and "ts" not in out:
        try:
            parsed = datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith("Z") else t)
        except ValueError:
            return out
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        out["ts"] = parsed.timestamp()
    return out


def normalise_points(result: dict[str, Any]) -> dict[str, Json]:
    """A store history result with ISO `from`/`to` and `t`/`ts` on every point."""
    result["points"] = [with_ts(p) for p in result.get("points") or ()]
    for key in ("from", "to"):
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            result[key] = iso(datetime.fromtimestamp(value, timezone.utc))
    return result


def sse_event(event: str, data: Json) -> bytes:
    """One Server-Sent Event of type `event` carrying `data` as JSON."""
    # compact JSON has no newlines, so one data: line carries the whole payload
    return b"event: " + event.encode() + b"\ndata: " + dumps(data) + b"\n\n"


def named_label(meter_id: str, name: str | None) -> str:
    """The selector label: "house · 1 DZG00 4208 2910" for a named meter, else the number."""
    number = meter_label(meter_id)
    return f"{name} \u00b7 {number}" if name else number
