"""HTTP side of smlogger: the live page, the JSON API, Server-Sent Events and /metrics.

Everything the page needs is served from the package (smlogger/web/): no CDN, no build step, so
the page works offline on a LAN. The app is a plain `bottle.Bottle`; `WebServer` runs it on
cheroot's threaded server in a background thread.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import platform
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional, Protocol
from urllib.parse import quote

import bottle  # type: ignore[import-untyped]
from cheroot import wsgi

from smlogger import __version__
from smlogger.live import LiveState
from smlogger.reading import Reading, json_value

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).with_name("web")
STATIC_DIR = WEB_DIR / "static"
PAGE_TEMPLATE = WEB_DIR / "index.tpl"

MAX_HISTORY_POINTS = 20_000  # an explicit step may ask for more than the auto 2000, within reason
AUTO_HISTORY_POINTS = 2000
MAX_CONSUMPTION_BARS = 5000
DEFAULT_HISTORY_SPAN = timedelta(hours=24)
EPOCH_MAX = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last instant datetime can hold
# accepted query times; the margin to datetime's limits keeps range arithmetic from overflowing
TIME_MIN = datetime(1970, 1, 1, tzinfo=timezone.utc)
TIME_MAX = datetime(9998, 12, 31, tzinfo=timezone.utc)
SSE_RETRY_MS = 3000

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a ?token= must not leak through Referer
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
}

Json = Any


class HistoryStore(Protocol):
    """What the web app reads from the database (smlogger.store.StoreReader satisfies it)."""

    def meters(self) -> list[str]: ...

    def history(
        self,
        meter_id: str,
        start: datetime,
        end: datetime,
        step: int | None = None,
        max_points: int = 2000,
    ) -> dict[str, Any]: ...

    def consumption(
        self, meter_id: str, period: str, start: datetime, end: datetime
    ) -> list[dict[str, Any]]: ...


class ApiError(Exception):
    """A request the API refuses; becomes a JSON error response, never a 500."""

    def __init__(
        self,
        status: int,
        message: str,
        parameter: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.parameter = parameter
        self.headers = dict(headers or {})


# ---- JSON ------------------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    """UTC ISO-8601 with milliseconds and a Z, which every JSON consumer and JS `Date` parses."""
    text = moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


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
    return json.dumps(
        clean_json(obj), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def reading_json(reading: Reading | None, meter: str | None, now: datetime) -> dict[str, Json]:
    """The one shape of a live reading, shared by /api/live, SSE and the page's first paint."""
    if reading is None:
        return {
            "meter": meter,
            "time": None,
            "ts": None,
            "age_s": None,
            "fields": dict.fromkeys(Reading.FIELDS),
            "values": [],
        }
    return {
        "meter": reading.meter_id,
        "time": iso(reading.time),
        "ts": round(reading.time.timestamp(), 3),
        "age_s": round(max(0.0, (now - reading.time).total_seconds()), 3),
        "fields": reading.fields(),
        "values": [
            {"obis": v.obis, "value": json_value(v.value), "unit": v.unit}
            for v in reading.values.values()
        ],
    }


# ---- query parameters -------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?", re.IGNORECASE)
_DURATION_UNITS = {
    None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0,
    "h": 3600.0, "d": 86400.0, "w": 604800.0,
}  # fmt: skip


def parse_time(name: str, text: str, now: datetime) -> datetime:
    """ISO-8601 (no offset = UTC), epoch seconds, `now`, or relative like `-24h`, `-7d`."""
    moment = _parse_moment(name, text, now)
    if not TIME_MIN <= moment <= TIME_MAX:
        raise ApiError(400, f"parameter '{name}' is outside 1970..9998", name)
    return moment


def _parse_moment(name: str, text: str, now: datetime) -> datetime:
    value = text.strip()
    if not value:
        raise ApiError(400, f"parameter '{name}' is empty", name)
    if value.lower() == "now":
        return now
    if value.startswith("-"):
        match = _DURATION.fullmatch(value[1:])
        if match:
            seconds = float(match.group(1)) * _DURATION_UNITS[_unit_key(match.group(2))]
            try:
                return now - timedelta(seconds=seconds)
            except OverflowError:
                raise ApiError(400, f"parameter '{name}' is too far in the past", name) from None
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        if not math.isfinite(number) or not 0 <= number <= EPOCH_MAX:
            hint = " (milliseconds? seconds are expected)" if number > EPOCH_MAX else ""
            raise ApiError(400, f"parameter '{name}' is not a valid epoch time{hint}", name)
        return datetime.fromtimestamp(number, timezone.utc)
    iso_text = value[:-1] + "+00:00" if value[-1] in "zZ" else value
    try:
        moment = datetime.fromisoformat(iso_text)
    except ValueError:
        raise ApiError(
            400,
            f"parameter '{name}' must be ISO-8601 (2024-05-01T12:00:00Z), epoch seconds, "
            f"'now' or relative like '-24h'",
            name,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _unit_key(unit: str | None) -> str | None:
    return unit.lower() if unit else None


def parse_step(text: str) -> int:
    """Seconds per history point: `300`, `90s`, `5m`, `1h`, `1d`."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ApiError(400, "parameter 'step' must be seconds or like '5m', '1h', '1d'", "step")
    seconds = float(match.group(1)) * _DURATION_UNITS[_unit_key(match.group(2))]
    if seconds < 1 or seconds != int(seconds) or seconds > 366 * 86400:
        raise ApiError(400, "parameter 'step' must be a whole number of seconds >= 1", "step")
    return int(seconds)


# ---- Prometheus text format -------------------------------------------------------------------


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def format_sample_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass
class _Family:
    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


class MetricsWriter:
    """Collects samples per metric family so each family is written once with HELP and TYPE."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def add(self, name: str, kind: str, help_text: str, value: object, /, **labels: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = _Family(name, kind, help_text)
        family.samples.append((labels, float(value)))

    def render(self) -> str:
        lines: list[str] = []
        for family in self._families.values():
            lines.append(f"# HELP {family.name} {escape_help(family.help)}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            for labels, value in family.samples:
                label_text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
                selector = f"{{{label_text}}}" if label_text else ""
                lines.append(f"{family.name}{selector} {format_sample_value(value)}")
        return "\n".join(lines) + "\n"


_PHASE_FIELDS = (("L1", "1"), ("L2", "2"), ("L3", "3"))
_ENERGY_METRICS = (
    ("e_sum", "import", "all"), ("e_t1", "import", "1"), ("e_t2", "import", "2"),
    ("e_export", "export", "all"), ("e_export_t1", "export", "1"),
    ("e_export_t2", "export", "2"),
)  # fmt: skip
# decoder stats key -> (metric, help); other numeric stats go to smlogger_decoder_events_total
_DECODER_METRICS = {
    "frames_ok": ("smlogger_frames_total", "Good SML frames decoded."),
    "crc_errors": ("smlogger_crc_errors_total", "SML frames dropped for a bad CRC."),
    "bytes": ("smlogger_received_bytes_total", "Bytes read from the source."),
}


def _crc_error_rate(stats: Mapping[str, Any]) -> Optional[float]:
    ok = _as_number(stats.get("frames_ok"))
    bad = _as_number(stats.get("crc_errors"))
    if ok is None or bad is None or ok + bad <= 0:
        return None
    return bad / (ok + bad)


def _as_number(value: object) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _meter_metrics(out: MetricsWriter, meter: str, reading: Reading, now: datetime) -> None:
    power = "Active power in W (positive: import, negative: export)."
    out.add("smlogger_power_watts", "gauge", power, reading.p_sum, meter=meter, phase="total")
    for phase, num in _PHASE_FIELDS:
        value = getattr(reading, f"p_L{num}")
        out.add("smlogger_power_watts", "gauge", power, value, meter=meter, phase=phase)
    for name, direction, tariff in _ENERGY_METRICS:
        out.add(
            "smlogger_energy_kwh_total", "counter", "Meter energy register in kWh.",
            getattr(reading, name), meter=meter, direction=direction, tariff=tariff,
        )  # fmt: skip
    for phase, num in _PHASE_FIELDS:
        volts, amps = getattr(reading, f"u_L{num}"), getattr(reading, f"i_L{num}")
        out.add("smlogger_voltage_volts", "gauge", "Phase voltage in V.", volts,
                meter=meter, phase=phase)  # fmt: skip
        out.add("smlogger_current_amperes", "gauge", "Phase current in A.", amps,
                meter=meter, phase=phase)  # fmt: skip
    out.add("smlogger_frequency_hertz", "gauge", "Grid frequency in Hz.", reading.freq, meter=meter)
    out.add(
        "smlogger_reading_timestamp_seconds", "gauge",
        "Receive time of the meter's latest reading (unix).", reading.time.timestamp(),
        meter=meter,
    )  # fmt: skip
    out.add(
        "smlogger_reading_age_seconds", "gauge", "Seconds since the meter's latest reading.",
        max(0.0, (now - reading.time).total_seconds()), meter=meter,
    )  # fmt: skip


def _source_metrics(out: MetricsWriter, name: str, source: Mapping[str, Any]) -> None:
    state = str(source.get("state"))
    up = 1 if state == "connected" else 0
    out.add("smlogger_source_up", "gauge", "1 while the source delivers frames.", up, source=name)
    for candidate in _STATE_RANK:
        out.add(
            "smlogger_source_state", "gauge", "Link state of the source (1 = current state).",
            1 if state == candidate else 0, source=name, state=candidate,
        )  # fmt: skip
    out.add(
        "smlogger_last_frame_age_seconds", "gauge", "Seconds since the source's last good frame.",
        source.get("last_frame_age_s"), source=name,
    )  # fmt: skip
    for key, value in sorted((source.get("stats") or {}).items()):
        known = _DECODER_METRICS.get(key)
        if known:
            out.add(known[0], "counter", known[1], value, source=name)
        else:
            out.add(
                "smlogger_decoder_events_total", "counter",
                "Other decoder counters (truncated frames, discarded bytes, ...).",
                value, source=name, kind=key,
            )  # fmt: skip


def _sink_metrics(out: MetricsWriter, name: str, sink: Mapping[str, Any]) -> None:
    depth, written = sink.get("queue_depth"), sink.get("written")
    out.add("smlogger_sink_queue_depth", "gauge", "Readings queued for the sink.", depth, sink=name)
    out.add("smlogger_sink_written_total", "counter", "Readings written by the sink.", written,
            sink=name)  # fmt: skip
    for key, value in sorted(sink.items()):
        if key not in ("queue_depth", "written"):
            out.add("smlogger_sink_stat", "gauge", "Other numeric sink status values.", value,
                    sink=name, stat=key)  # fmt: skip


# ---- link state -------------------------------------------------------------------------------

_STATE_RANK = {"connected": 0, "waiting": 1, "no data": 2}


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
        return {"state": "waiting" if not sources else "no data", "detail": "", "sources": [],
                "crc_error_rate": None, "frames_ok": None, "crc_errors": None,
                "last_frame_age_s": None}  # fmt: skip
    worst = max(chosen.values(), key=lambda s: _STATE_RANK.get(str(s.get("state")), 3))
    frames_ok = sum(_as_number(s.get("stats", {}).get("frames_ok")) or 0 for s in chosen.values())
    crc_errors = sum(_as_number(s.get("stats", {}).get("crc_errors")) or 0 for s in chosen.values())
    ages = [
        a for a in (_as_number(s.get("last_frame_age_s")) for s in chosen.values()) if a is not None
    ]
    return {
        "state": worst.get("state"),
        "detail": worst.get("detail", ""),
        "sources": sorted(chosen),
        "crc_error_rate": _crc_error_rate({"frames_ok": frames_ok, "crc_errors": crc_errors}),
        "frames_ok": int(frames_ok),
        "crc_errors": int(crc_errors),
        "last_frame_age_s": min(ages) if ages else None,
    }


# ---- first paint formatting (app.js uses the same rules) ---------------------------------------


def meter_label(meter_id: str) -> str:
    """The meter number printed on the meter (DIN 43863-5) for a 10-byte server id such as
    0a01445a47000282225e -> "1 DZG00 4208 2910"; other ids unchanged."""
    try:
        raw = bytes.fromhex(meter_id)
    except ValueError:
        return meter_id
    if len(raw) != 10 or raw[0] not in (0x09, 0x0A) or not raw[2:5].isalpha():
        return meter_id
    flag = raw[2:5].decode("ascii")
    if flag != flag.upper():
        return meter_id
    serial = f"{int.from_bytes(raw[6:10], 'big'):08d}"
    return f"{raw[1]:X} {flag}{raw[5]:02X} {serial[:-4]} {serial[-4:]}"


NO_VALUE = "\u2013"  # en dash: what the page shows for a value the meter does not send


def fmt_power(watts: Optional[float]) -> tuple[str, str]:
    if watts is None:
        return NO_VALUE, "W"
    if abs(watts) >= 10_000:
        return f"{watts / 1000:,.2f}", "kW"
    return f"{watts:,.0f}", "W"


def fmt_number(value: Optional[float], decimals: int) -> str:
    return NO_VALUE if value is None else f"{value:,.{decimals}f}"


# ---- the app ----------------------------------------------------------------------------------


class _StreamHub:
    """Counts open SSE streams (each holds a server thread) and ends them on shutdown."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._open = 0

    def acquire(self) -> bool:
        with self._lock:
            if self._open >= self.limit:
                return False
            self._open += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._open -= 1

    @property
    def open(self) -> int:
        with self._lock:
            return self._open


def _versions() -> dict[str, str]:
    versions = {
        "smlogger": __version__,
        "python": platform.python_version(),
        "bottle": str(bottle.__version__),
    }
    for name in ("cheroot", "peewee"):
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None)
        if version:
            versions[name] = str(version)
    return versions


class WebApp:
    """Route handlers over a LiveState and (optionally) a Store."""

    def __init__(
        self,
        live: LiveState,
        store: HistoryStore | None,
        *,
        token: str | None,
        status_extra: Callable[[], dict[str, Any]] | None,
        max_streams: int,
        keepalive_s: float,
        status_interval_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.live = live
        self.store = store
        self.token = token or None
        self.status_extra = status_extra
        self.keepalive_s = keepalive_s
        self.status_interval_s = status_interval_s
        self.now = clock
        self.started = clock()
        self.hub = _StreamHub(max_streams)
        self.fingerprints = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12]
            for p in STATIC_DIR.iterdir()
            if p.is_file()
        }
        self.template = bottle.SimpleTemplate(
            source=PAGE_TEMPLATE.read_text(encoding="utf-8"), noescape=False
        )

    # -- plumbing --------------------------------------------------------------------------

    def query(self, name: str) -> str | None:
        values = bottle.request.query.getall(name)
        if not values:
            return None
        if len(values) > 1:
            raise ApiError(400, f"parameter '{name}' given more than once", name)
        try:
            return str(values[0].encode("latin-1").decode("utf-8"))  # see wsgi_text()
        except UnicodeError:
            raise ApiError(400, f"parameter '{name}' is not valid UTF-8", name) from None

    def known_meters(self) -> list[str]:
        meters = self.live.meters()
        for meter in self.stored_meters():
            if meter not in meters:
                meters.append(meter)
        return meters

    def stored_meters(self) -> list[str]:
        if self.store is None:
            return []
        try:
            return list(self.store.meters())
        except Exception:  # a dead database must not take the live page down
            log.warning("could not list meters from the database", exc_info=True)
            return []

    def meter_param(self) -> str | None:
        """The `meter` parameter (404 when unknown) or the first meter (None when none yet)."""
        meter = self.chosen_meter()
        if meter is None:
            meters = self.known_meters()
            return meters[0] if meters else None
        return meter

    def chosen_meter(self) -> str | None:
        """The `meter` parameter when given: 400 when empty, 404 when no such meter."""
        meter = self.query("meter")
        if meter is None:
            return None
        if not meter.strip():
            raise ApiError(400, "parameter 'meter' is empty", "meter")
        if meter not in self.known_meters():
            raise ApiError(404, f"unknown meter '{meter}'", "meter")
        return meter

    def require_store(self) -> HistoryStore:
        if self.store is None:
            raise ApiError(503, "no database configured: history is not available")
        return self.store

    def time_range(self, default_span: timedelta) -> tuple[datetime, datetime]:
        now = self.now()
        to_text = self.query("to")
        from_text = self.query("from")
        end = now if to_text is None else parse_time("to", to_text, now)
        start = end - default_span if from_text is None else parse_time("from", from_text, now)
        if start >= end:
            raise ApiError(400, "parameter 'from' must be before 'to'", "from")
        return start, end

    # -- routes ----------------------------------------------------------------------------

    def meters(self) -> Json:
        live_meters = self.live.meters()
        stored = self.stored_meters()
        out = []
        for meter in self.known_meters():
            reading = self.live.latest(meter)
            out.append(
                {
                    "id": meter,
                    "label": meter_label(meter),
                    "live": reading is not None,
                    "stored": meter in stored,
                    "configured": meter in live_meters,
                    "last_seen": iso(reading.time) if reading else None,
                }
            )
        return {"meters": out, "default": out[0]["id"] if out else None}

    def live_reading(self) -> Json:
        meter = self.meter_param()
        now = self.now()
        body = reading_json(self.live.latest(meter) if meter else None, meter, now)
        body["server_time"] = iso(now)
        body["link"] = link_for_meter(self.live.source_status(), meter)
        return body

    def history(self) -> Json:
        store = self.require_store()
        meter = self.meter_param()
        start, end = self.time_range(DEFAULT_HISTORY_SPAN)
        step_text = self.query("step")
        step = None if step_text is None else parse_step(step_text)
        max_points = AUTO_HISTORY_POINTS
        if step is not None:
            points = math.ceil((end - start).total_seconds() / step)
            if points > MAX_HISTORY_POINTS:
                raise ApiError(
                    400,
                    f"parameter 'step' is too small for the range: {points} points, "
                    f"at most {MAX_HISTORY_POINTS}",
                    "step",
                )
            max_points = max(points, AUTO_HISTORY_POINTS)
        if meter is None:
            return {"meter": None, "from": iso(start), "to": iso(end), "step": step, "points": []}
        try:
            result = store.history(meter, start, end, step=step, max_points=max_points)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        except Exception:
            log.warning("history query failed", exc_info=True)
            raise ApiError(503, "database unavailable", headers={"Retry-After": "10"}) from None
        return _normalise_points(dict(result))

    def consumption(self) -> Json:
        store = self.require_store()
        meter = self.meter_param()
        period = self.query("period") or "day"
        if period not in ("day", "month"):
            raise ApiError(400, "parameter 'period' must be 'day' or 'month'", "period")
        span = timedelta(days=31) if period == "day" else timedelta(days=366)
        start, end = self.time_range(span)
        bars_max = (end - start).total_seconds() / (86400 if period == "day" else 28 * 86400)
        if bars_max > MAX_CONSUMPTION_BARS:
            raise ApiError(
                400,
                f"parameter 'from' is too early: at most {MAX_CONSUMPTION_BARS} bars "
                f"of period '{period}'",
                "from",
            )
        bars: list[dict[str, Any]] = []
        if meter is not None:
            try:
                bars = list(store.consumption(meter, period, start, end))
            except ValueError as exc:
                raise ApiError(400, str(exc)) from None
            except Exception:
                log.warning("consumption query failed", exc_info=True)
                raise ApiError(503, "database unavailable", headers={"Retry-After": "10"}) from None
        return {
            "meter": meter,
            "period": period,
            "from": iso(start),
            "to": iso(end),
            "bars": [_with_ts(b) for b in bars],
        }

    def status(self) -> Json:
        now = self.now()
        sources = self.live.source_status()
        for source in sources.values():
            source["crc_error_rate"] = _crc_error_rate(source.get("stats") or {})
        body: dict[str, Json] = {
            "version": __version__,
            "versions": _versions(),
            "server_time": iso(now),
            "started": iso(self.started),
            "uptime_s": round((now - self.started).total_seconds(), 3),
            "meters": self.known_meters(),
            "sources": sources,
            "sinks": self.live.sink_status(),
            "web": {
                "streams": self.hub.open,
                "max_streams": self.hub.limit,
                "token_required": self.token is not None,
                "history": self.store is not None,
            },
        }
        if self.status_extra is not None:
            try:
                extra = self.status_extra()
            except Exception as exc:
                log.warning("status_extra failed", exc_info=True)
                extra = {"status_extra_error": f"{type(exc).__name__}: {exc}"}
            # the extra adds keys; it never replaces what the web app itself reports
            for key, value in extra.items():
                current = body.get(key)
                if isinstance(current, dict) and isinstance(value, Mapping):
                    for inner, inner_value in value.items():
                        current.setdefault(inner, inner_value)
                elif key not in body:
                    body[key] = value
        return body

    def healthz(self) -> Json:
        now = self.now()
        states = {k: s.get("state") for k, s in self.live.source_status().items()}
        return {
            "status": "ok",
            "version": __version__,
            "uptime_s": round((now - self.started).total_seconds(), 3),
            "sources": states,
        }

    def metrics(self) -> str:
        now = self.now()
        out = MetricsWriter()
        out.add(
            "smlogger_info", "gauge", "smlogger build information.", 1,
            version=__version__, python=platform.python_version(),
        )  # fmt: skip
        out.add(
            "smlogger_start_time_seconds", "gauge", "Start time of the logger (unix).",
            self.started.timestamp(),
        )  # fmt: skip
        for meter in self.live.meters():
            reading = self.live.latest(meter)
            if reading is not None:
                _meter_metrics(out, meter, reading, now)
        for name, source in self.live.source_status().items():
            _source_metrics(out, name, source)
        for name, sink in self.live.sink_status().items():
            _sink_metrics(out, name, sink)
        out.add("smlogger_sse_clients", "gauge", "Open Server-Sent Events streams.", self.hub.open)
        bottle.response.content_type = "text/plain; version=0.0.4; charset=utf-8"
        return out.render()

    # -- SSE -------------------------------------------------------------------------------

    def stream(self) -> Iterable[bytes]:
        meter = self.chosen_meter()  # None: readings of every meter
        if not self.hub.acquire():
            raise ApiError(503, "too many open event streams", headers={"Retry-After": "30"})
        subscription = self.live.subscribe()
        response = bottle.response
        response.content_type = "text/event-stream; charset=utf-8"
        response.set_header("Cache-Control", "no-cache, no-transform")
        response.set_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
        return self._events(subscription, meter)

    def _events(self, subscription: queue.Queue[Reading], meter: str | None) -> Iterator[bytes]:
        try:
            now = self.now()
            first = [f"retry: {SSE_RETRY_MS}\n\n".encode()]
            for m in [meter] if meter else self.live.meters():
                reading = self.live.latest(m)
                if reading is not None:
                    first.append(sse_event("reading", reading_json(reading, m, now)))
            first.append(sse_event("status", self.link_status()))
            yield b"".join(first)
            last_write = last_status = time.monotonic()
            while not self.hub.stopping.is_set():
                try:
                    reading = subscription.get(timeout=0.5)
                except queue.Empty:
                    reading = None
                chunks = []
                if reading is not None and (meter is None or reading.meter_id == meter):
                    chunks.append(
                        sse_event("reading", reading_json(reading, reading.meter_id, self.now()))
                    )
                mono = time.monotonic()
                if mono - last_status >= self.status_interval_s:
                    chunks.append(sse_event("status", self.link_status()))
                    last_status = mono
                elif not chunks and mono - last_write >= self.keepalive_s:
                    chunks.append(b": keep-alive\n\n")
                if chunks:
                    yield b"".join(chunks)
                    last_write = mono
        finally:
            self.live.unsubscribe(subscription)
            self.hub.release()

    def link_status(self) -> dict[str, Json]:
        sources = self.live.source_status()
        return {
            "server_time": iso(self.now()),
            "links": {m: link_for_meter(sources, m) for m in self.live.meters()},
            "sources": {k: s.get("state") for k, s in sources.items()},
        }

    # -- page & static ---------------------------------------------------------------------

    def asset(self, name: str) -> str:
        url = f"/static/{name}?v={self.fingerprints.get(name, '0')}"
        token = self.query("token")
        return url + (f"&token={quote(token, safe='')}" if token else "")

    def page(self) -> str:
        meters = self.known_meters()
        # the no-script form sends an empty meter while none is known yet: show the default
        meter = (self.chosen_meter() if self.query("meter") else None) or (
            meters[0] if meters else None
        )
        now = self.now()
        reading = self.live.latest(meter) if meter else None
        live = reading_json(reading, meter, now)
        live["server_time"] = iso(now)
        live["link"] = link_for_meter(self.live.source_status(), meter)
        initial = {
            "meter": meter,
            "meters": meters,
            "live": live,
            "history": self.store is not None,
            "version": __version__,
        }
        # "<" escaped so no "</script>" inside the data can end the JSON script block
        initial_json = dumps(initial).decode("utf-8").replace("<", "\\u003c")
        token = self.query("token")
        bottle.response.content_type = "text/html; charset=utf-8"
        bottle.response.set_header("Cache-Control", "no-store")
        return str(
            self.template.render(
                meter=meter,
                meters=meters,
                reading=reading,
                live=live,
                link=live["link"],
                initial_json=initial_json,
                asset=self.asset,
                token=token,
                token_query=f"?token={quote(token, safe='')}" if token else "",
                fmt_power=fmt_power,
                meter_label=meter_label,
                fmt_number=fmt_number,
                version=__version__,
                has_history=self.store is not None,
            )
        )

    def static(self, path: str) -> Any:
        resp = bottle.static_file(path, root=str(STATIC_DIR))
        name = Path(path).name
        versioned = bottle.request.query.get("v") == self.fingerprints.get(name)
        if resp.status_code == 200 or resp.status_code == 304:
            resp.set_header(
                "Cache-Control", "public, max-age=31536000, immutable" if versioned else "no-cache"
            )
        elif resp.status_code in (403, 404):  # 403: a path outside the static folder
            raise ApiError(404, "not found")
        elif resp.status_code >= 400:
            raise ApiError(resp.status_code, str(resp.body or resp.status_line))
        for key, value in SECURITY_HEADERS.items():
            resp.set_header(key, value)
        return resp

    def favicon(self) -> Any:
        return self.static("icon.svg")

    def api_index(self) -> Json:
        return {
            "endpoints": [
                "/api/meters", "/api/live", "/api/history", "/api/consumption",
                "/api/status", "/api/stream", "/metrics", "/healthz",
            ]
        }  # fmt: skip

    # -- auth ------------------------------------------------------------------------------

    def check_token(self) -> None:
        if self.token is None:
            return
        # raw environ values: Bottle's header accessors raise on bytes that are not UTF-8
        environ = bottle.request.environ
        given = ""
        auth = str(environ.get("HTTP_AUTHORIZATION", ""))
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        given = given or str(environ.get("HTTP_X_TOKEN", ""))
        given = given or bottle.request.query.get("token", "")
        # compare_digest keeps the time independent of where the first difference is
        if not given or not hmac.compare_digest(
            wsgi_text(given).encode("utf-8"), self.token.encode("utf-8")
        ):
            raise ApiError(401, "missing or wrong token")


def wsgi_text(text: str) -> str:
    """WSGI hands headers and query strings over as latin-1; clients send UTF-8."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def _with_ts(row: Mapping[str, Any]) -> dict[str, Json]:
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


def _normalise_points(result: dict[str, Any]) -> dict[str, Json]:
    result["points"] = [_with_ts(p) for p in result.get("points") or ()]
    for key in ("from", "to"):
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            result[key] = iso(datetime.fromtimestamp(value, timezone.utc))
    return result


def sse_event(event: str, data: Json) -> bytes:
    # compact JSON has no newlines, so one data: line carries the whole payload
    return b"event: " + event.encode() + b"\ndata: " + dumps(data) + b"\n\n"


# ---- wiring into Bottle -----------------------------------------------------------------------


def _error_response(status: int, message: str, parameter: str | None = None) -> bytes:
    response = bottle.response
    response.status = status
    response.content_type = "application/json; charset=utf-8"
    response.set_header("Cache-Control", "no-store")
    for key, value in SECURITY_HEADERS.items():
        response.set_header(key, value)
    body: dict[str, Json] = {"error": message, "status": status}
    if parameter is not None:
        body["parameter"] = parameter
    return dumps(body)


class _JsonPlugin:
    """Turns handler results into JSON and ApiErrors/unexpected exceptions into JSON errors."""

    name = "smlogger_json"
    api = 2

    def apply(self, callback: Callable[..., Any], route: Any) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                result = callback(*args, **kwargs)
            except ApiError as exc:
                body = _error_response(exc.status, exc.message, exc.parameter)
                for key, value in exc.headers.items():
                    bottle.response.set_header(key, value)
                return body
            except bottle.HTTPResponse:
                raise
            except Exception:
                log.exception("error while serving %s", bottle.request.path)
                return _error_response(500, "internal error")
            if isinstance(result, (dict, list)):
                bottle.response.content_type = "application/json; charset=utf-8"
                bottle.response.set_header("Cache-Control", "no-store")
                return dumps(result)
            return result

        return wrapper


def _router_error(error: Any) -> bytes:
    """Bottle's own errors (404 no route, 405 wrong method) as JSON like ours."""
    status = int(error.status_code)
    messages = {404: "not found", 405: "method not allowed: the API is read-only"}
    if status == 500 and error.exception is not None:
        log.error("unhandled error: %r", error.exception)
    return _error_response(status, messages.get(status, str(error.body or error.status_line)))


def build_app(
    live: LiveState,
    store: HistoryStore | None,
    *,
    token: str | None = None,
    status_extra: Callable[[], dict[str, Any]] | None = None,
    max_streams: int = 12,
    keepalive_s: float = 15.0,
    status_interval_s: float = 5.0,
    clock: Callable[[], datetime] | None = None,
) -> bottle.Bottle:
    """The web app: page, JSON API, SSE and /metrics over `live` and (optionally) `store`.

    `max_streams` bounds concurrent SSE clients (each holds a server thread; keep it below the
    server's thread count so API calls always find a free thread).
    """
    web = WebApp(
        live,
        store,
        token=token,
        status_extra=status_extra,
        max_streams=max_streams,
        keepalive_s=keepalive_s,
        status_interval_s=status_interval_s,
        clock=clock or (lambda: datetime.now(timezone.utc)),
    )
    app = bottle.Bottle(catchall=True)
    app.uninstall("json")  # _JsonPlugin serialises (strict JSON, no NaN)
    app.install(_JsonPlugin())

    def auth_hook() -> None:
        for key, value in SECURITY_HEADERS.items():
            bottle.response.set_header(key, value)
        try:
            web.check_token()
        except ApiError as exc:
            raise bottle.HTTPError(401, exc.message, headers=exc.headers) from None

    app.add_hook("before_request", auth_hook)
    routes: Sequence[tuple[str, Callable[..., Any]]] = (
        ("/", web.page),
        ("/static/<path:path>", web.static),
        ("/favicon.ico", web.favicon),
        ("/api", web.api_index),
        ("/api/meters", web.meters),
        ("/api/live", web.live_reading),
        ("/api/history", web.history),
        ("/api/consumption", web.consumption),
        ("/api/status", web.status),
        ("/api/stream", web.stream),
        ("/metrics", web.metrics),
        ("/healthz", web.healthz),
    )
    for path, callback in routes:
        app.route(path, method="GET", callback=callback)

    def error_handler(error: Any) -> bytes:
        if int(error.status_code) == 401:
            body = _error_response(401, str(error.body))
            bottle.response.set_header("WWW-Authenticate", 'Bearer realm="smlogger"')
            return body
        return _router_error(error)

    app.default_error_handler = error_handler
    app.config["smlogger.web"] = web
    return app


class WebServer:
    """cheroot's threaded WSGI server in a background thread."""

    def __init__(
        self, app: bottle.Bottle, host: str = "127.0.0.1", port: int = 8080, *, threads: int = 16
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._threads = threads
        self._server: wsgi.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind (errors such as a port in use raise here) and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("web server already started")
        web = self._web()
        if web is not None:
            web.hub.stopping.clear()
        # every open event stream holds a thread: keep some free for the page and the API
        threads = max(self._threads, web.hub.limit + 4) if web is not None else self._threads
        server = wsgi.Server(
            (self._host, self._port),
            self._app,
            numthreads=threads,
            server_name="smlogger",
            shutdown_timeout=2,
        )
        server.prepare()
        bound = server.bind_addr
        if isinstance(bound, tuple):
            self._port = int(bound[1])
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="smlogger-http", daemon=True)
        self._thread.start()
        log.debug("web server listening on %s", self.url)

    def _serve(self) -> None:
        server = self._server
        if server is None:
            return
        try:
            server.serve()
        except Exception:
            log.exception("web server stopped with an error")

    def _web(self) -> WebApp | None:
        web = self._app.config.get("smlogger.web")
        return web if isinstance(web, WebApp) else None

    def stop(self) -> None:
        """Close open event streams, stop accepting, wait for request threads."""
        server, self._server = self._server, None
        if server is None:
            return
        web = self._web()
        if web is not None:
            web.hub.stopping.set()
        server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}/"

    def __enter__(self) -> WebServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
