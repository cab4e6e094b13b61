"""Is the logger doing its job? The reasons it is not, for `/healthz` (503) and monitors.

A pure function of the live state's source and sink status: healthy means every watched source
delivered a valid frame within its watchdog period and no sink is failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Store states (smlogger.store.sink) in which readings do not reach the database
FAILED_DB_STATES = ("down", "error", "disk full")


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def source_reasons(name: str, source: Mapping[str, Any]) -> list[str]:
    """Why `source` is unhealthy (empty when it is fine or not watched)."""
    watchdog = _number(source.get("watchdog_s"))
    if watchdog is None:
        return []
    age = _number(source.get("last_frame_age_s"))
    diagnosis = source.get("diagnosis") or {}
    why = f": {diagnosis['sentence']}" if diagnosis.get("sentence") else ""
    if age is None:
        return [f"{name}: no valid frame yet{why}"]
    if age > watchdog:
        return [f"{name}: no valid frame for {age:.0f} s (watchdog {watchdog:g} s){why}"]
    return []


def sink_reasons(name: str, sink: Mapping[str, Any]) -> list[str]:
    """Why `sink` is failing (empty when it works)."""
    error = sink.get("last_error") or "writes fail"
    if sink.get("alive") is False:
        return [f"sink {name}: stopped ({error})"]
    if "degraded" in sink:
        # a sink that reports degradation (MQTT: broker away) never fails the logger: the
        # meters are still read and stored; /healthz names it as degraded (200) instead
        return []
    if sink.get("db") in FAILED_DB_STATES:
        return [f"sink {name}: database {sink['db']} ({error})"]
    for key in ("journal", "state"):
        # the sink's own disk: "disk full on <path>" (journal of the SQL sink, CSV files)
        state = sink.get(key)
        if isinstance(state, str) and state not in ("", "ok"):
            return [f"sink {name}: {state}"]
    if sink.get("failing"):
        return [f"sink {name}: failing ({error})"]
    return []


def unhealthy_reasons(
    sources: Mapping[str, Mapping[str, Any]], sinks: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Every reason the logger is unhealthy; an empty list means healthy."""
    reasons: list[str] = []
    for name, source in sources.items():
        reasons += source_reasons(name, source)
    for name, sink in sinks.items():
        reasons += sink_reasons(name, sink)
    return reasons
