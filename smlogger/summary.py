"""`smlogger decode --summary`: one table of what a recording holds -- the thing to paste into
a bug report: meters, OBIS codes with names and units, first/last/min/max values, CRC kind,
quirks and error counts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from smlogger import sml
from smlogger.meterid import meter_label
from smlogger.obisnames import obis_name

# decoder counters that mean something went wrong (shown when not zero)
ERROR_COUNTERS = (
    "crc_errors",
    "truncated",
    "escape_errors",
    "parse_errors",
    "too_long",
    "message_errors",
    "message_crc_errors",
    "discarded_bytes",
)


@dataclass
class _Series:
    unit: Optional[str] = None
    count: int = 0
    first: Any = None
    last: Any = None
    low: Optional[float] = None
    high: Optional[float] = None
    quirks: set[str] = field(default_factory=set)

    def add(self, entry: sml.Entry) -> None:
        value = entry["value"]
        self.count += 1
        self.unit = entry["unit_symbol"] or self.unit
        if self.first is None:
            self.first = value
        self.last = value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.low = value if self.low is None else min(self.low, value)
            self.high = value if self.high is None else max(self.high, value)
        if entry["quirk"]:
            self.quirks.add(entry["quirk"])


@dataclass
class _Meter:
    frames: int = 0
    crc: dict[str, int] = field(default_factory=dict)
    series: dict[str, _Series] = field(default_factory=dict)


class Summary:
    """Collects good frames (`add`) and renders the table (`render`)."""

    def __init__(self) -> None:
        self.meters: dict[str, _Meter] = {}
        self.frames_ok = 0

    def add(self, frame: sml.Frame) -> None:
        """Count one decoded frame (damaged frames are counted by the decoder's stats)."""
        if not frame["ok"]:
            return
        self.frames_ok += 1
        seen: set[str] = set()
        for found in sml.get_list_responses(frame, require_crc=False):
            body: Any = found
            server = body.get("server_id")
            meter_id = server.hex() if isinstance(server, bytes) else "unknown"
            meter = self.meters.setdefault(meter_id, _Meter())
            if meter_id not in seen:
                seen.add(meter_id)
                meter.frames += 1
                kind = frame["crc"] or "none"
                meter.crc[kind] = meter.crc.get(kind, 0) + 1
            for entry in body.get("values") or ():
                meter.series.setdefault(entry["obis"], _Series()).add(entry)

    def render(self, stats: Mapping[str, Any], source: str, kind: str) -> str:
        """The summary table as text."""
        lines = [f"file: {source} ({kind})"]
        errors = {k: stats.get(k, 0) for k in ERROR_COUNTERS if stats.get(k)}
        lines.append(
            f"bytes: {stats.get('bytes', 0)}, good frames: {stats.get('frames_ok', 0)}, "
            + (", ".join(f"{k}: {v}" for k, v in errors.items()) or "no errors")
        )
        if not self.meters:
            lines.append("no meter data (no GetListResponse in a good frame)")
        for meter_id, meter in self.meters.items():
            label = meter_label(meter_id)
            number = f" ({label})" if label != meter_id else ""
            crc = ", ".join(f"{k} x{v}" for k, v in sorted(meter.crc.items()))
            quirks = sorted({q for s in meter.series.values() for q in s.quirks})
            lines += [
                "",
                f"meter {meter_id}{number}: {meter.frames} frames, CRC {crc}, "
                f"quirks: {', '.join(quirks) or 'none'}",
            ]
            rows = [("OBIS", "name", "unit", "n", "first", "last", "min", "max")]
            for obis, series in meter.series.items():
                rows.append(
                    (
                        obis,
                        obis_name(obis) or "?",
                        series.unit or "",
                        str(series.count),
                        _show(series.first),
                        _show(series.last),
                        _show(series.low),
                        _show(series.high),
                    )
                )
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            for row in rows:
                lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        return "\n".join(lines) + "\n"


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        text = value.decode("ascii") if value.isascii() and value.isalnum() else value.hex()
        return text if len(text) <= 24 else text[:21] + "..."
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)
