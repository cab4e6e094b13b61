"""`/metrics`: the Prometheus text format over the live state."""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from smlogger import __version__
from smlogger.live import LiveState
from smlogger.reading import Reading
from smlogger.states import LINK_STATES


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


def crc_error_rate(stats: Mapping[str, Any]) -> Optional[float]:
    """Share of frames dropped for a bad CRC, from decoder stats; None before any frame."""
    ok = as_number(stats.get("frames_ok"))
    bad = as_number(stats.get("crc_errors"))
    if ok is None or bad is None or ok + bad <= 0:
        return None
    return bad / (ok + bad)


def as_number(value: object) -> Optional[float]:
    """`value` as a finite float, or None for anything else (bools, NaN, strings)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _meter_metrics(
    out: MetricsWriter, meter: str, meter_name: Optional[str], reading: Reading, now: datetime
) -> None:
    # every meter series carries the configured name ("" = none: Prometheus drops empty labels)
    ids = {"meter": meter, "name": meter_name or ""}
    power = "Active power in W (positive: import, negative: export)."
    out.add("smlogger_power_watts", "gauge", power, reading.p_sum, **ids, phase="total")
    for phase, num in _PHASE_FIELDS:
        value = getattr(reading, f"p_L{num}")
        out.add("smlogger_power_watts", "gauge", power, value, **ids, phase=phase)
    for name, direction, tariff in _ENERGY_METRICS:
        out.add(
            "smlogger_energy_kwh_total", "counter", "Meter energy register in kWh.",
            getattr(reading, name), **ids, direction=direction, tariff=tariff,
        )  # fmt: skip
    for phase, num in _PHASE_FIELDS:
        volts, amps = getattr(reading, f"u_L{num}"), getattr(reading, f"i_L{num}")
        out.add("smlogger_voltage_volts", "gauge", "Phase voltage in V.", volts,
                **ids, phase=phase)  # fmt: skip
        out.add("smlogger_current_amperes", "gauge", "Phase current in A.", amps,
                **ids, phase=phase)  # fmt: skip
    out.add("smlogger_frequency_hertz", "gauge", "Grid frequency in Hz.", reading.freq, **ids)
    out.add(
        "smlogger_reading_timestamp_seconds", "gauge",
        "Receive time of the meter's latest reading (unix).", reading.time.timestamp(),
        **ids,
    )  # fmt: skip
    out.add(
        "smlogger_reading_age_seconds", "gauge", "Seconds since the meter's latest reading.",
        max(0.0, (now - reading.time).total_seconds()), **ids,
    )  # fmt: skip


def _source_metrics(out: MetricsWriter, name: str, source: Mapping[str, Any]) -> None:
    state = str(source.get("state"))
    up = 1 if state == "connected" else 0
    out.add("smlogger_source_up", "gauge", "1 while the source delivers frames.", up, source=name)
    for candidate in LINK_STATES:
        out.add(
            "smlogger_source_state", "gauge", "Link state of the source (1 = current state).",
            1 if state == candidate else 0, source=name, state=candidate,
        )  # fmt: skip
    out.add(
        "smlogger_last_frame_age_seconds", "gauge", "Seconds since the source's last good frame.",
        source.get("last_frame_age_s"), source=name,
    )  # fmt: skip
    code = (source.get("diagnosis") or {}).get("code")
    if code:
        # one sample, the current finding: alert on smlogger_source_diagnosis{code!="ok"}
        out.add(
            "smlogger_source_diagnosis", "gauge",
            "What smlogger.diagnose found about the source (ok, silent, seven_bit, missing, ...).",
            1, source=name, code=str(code),
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


def render_metrics(live: LiveState, started: datetime, now: datetime, sse_clients: int) -> str:
    """The whole /metrics page: build info, each meter's latest values, sources, sinks, SSE."""
    out = MetricsWriter()
    out.add(
        "smlogger_info", "gauge", "smlogger build information.", 1,
        version=__version__, python=platform.python_version(),
    )  # fmt: skip
    out.add(
        "smlogger_start_time_seconds", "gauge", "Start time of the logger (unix).",
        started.timestamp(),
    )  # fmt: skip
    for meter in live.meters():
        reading = live.latest(meter)
        if reading is not None:
            _meter_metrics(out, meter, live.meter_name(meter), reading, now)
    for name, source in live.source_status().items():
        _source_metrics(out, name, source)
    for name, sink in live.sink_status().items():
        _sink_metrics(out, name, sink)
    out.add("smlogger_sse_clients", "gauge", "Open Server-Sent Events streams.", sse_clients)
    return out.render()
