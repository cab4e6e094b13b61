"""The reading model: one decoded GetListResponse turned into named, unit-aware values."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, ClassVar, Optional, Union

from smlogger import sml

ValueType = Union[int, float, str, bool, bytes, None]

# Status bit that EDL21-style meters (EMH ED300L/eHZ) set in the 1.8.0 status word while energy
# flows towards the grid; their 15.7.0 is an unsigned magnitude, so this bit is the only sign.
DIRECTION_EXPORT_BIT = 0x20

OBIS_E_SUM = "1-0:1.8.0*255"
OBIS_P_SUM = "1-0:16.7.0*255"
OBIS_P_ABS = "1-0:15.7.0*255"
OBIS_P_IMPORT = "1-0:1.7.0*255"
OBIS_P_EXPORT = "1-0:2.7.0*255"

# Well-known field -> OBIS code of the register it comes from.
ENERGY_OBIS: dict[str, str] = {
    "e_sum": OBIS_E_SUM,
    "e_export": "1-0:2.8.0*255",
    "e_t1": "1-0:1.8.1*255",
    "e_t2": "1-0:1.8.2*255",
    "e_export_t1": "1-0:2.8.1*255",
    "e_export_t2": "1-0:2.8.2*255",
}
INSTANT_OBIS: dict[str, tuple[str, str]] = {
    "p_L1": ("1-0:36.7.0*255", "W"),
    "p_L2": ("1-0:56.7.0*255", "W"),
    "p_L3": ("1-0:76.7.0*255", "W"),
    "u_L1": ("1-0:32.7.0*255", "V"),
    "u_L2": ("1-0:52.7.0*255", "V"),
    "u_L3": ("1-0:72.7.0*255", "V"),
    "i_L1": ("1-0:31.7.0*255", "A"),
    "i_L2": ("1-0:51.7.0*255", "A"),
    "i_L3": ("1-0:71.7.0*255", "A"),
    "freq": ("1-0:14.7.0*255", "Hz"),
}
FIELD_UNITS: dict[str, str] = {
    **{name: "kWh" for name in ENERGY_OBIS},
    "p_sum": "W",
    **{name: unit for name, (_, unit) in INSTANT_OBIS.items()},
}
ENERGY_FIELDS: tuple[str, ...] = tuple(ENERGY_OBIS)

_ENERGY_TO_KWH = {"Wh": 1e-3, "kWh": 1.0, "MWh": 1e3}
_POWER_TO_W = {"W": 1.0, "kW": 1e3}

# OBIS code -> (field, unit factors or None for a plain value, default or required unit);
# p_sum from 16.7.0 is total_power's first choice (its other rules are there)
_FIELD_OF_OBIS: dict[str, tuple[str, Optional[Mapping[str, float]], str]] = {
    **{obis: (name, _ENERGY_TO_KWH, "Wh") for name, obis in ENERGY_OBIS.items()},
    OBIS_P_SUM: ("p_sum", _POWER_TO_W, "W"),
    **{
        obis: (name, _POWER_TO_W if name.startswith("p_") else None, unit)
        for name, (obis, unit) in INSTANT_OBIS.items()
    },
}
_TOTALS = (("e_sum", ("e_t1", "e_t2")), ("e_export", ("e_export_t1", "e_export_t2")))


@dataclass(frozen=True)
class Value:
    """One OBIS value as the meter sent it: scaled value, unit, raw wire value and scaler."""

    obis: str
    value: ValueType
    unit: Optional[str]
    raw: object | None = None
    scaler: Optional[int] = None


@dataclass(frozen=True)
class Reading:
    """One data set of one meter. Fields are None when the meter does not send them.

    `samples`/`minmax` are only filled for readings aggregated over --store-interval:
    the fields then hold the mean (energies: the last value) and `minmax` the extremes.
    """

    meter_id: str
    time: datetime
    values: Mapping[str, Value]
    e_sum: Optional[float] = None
    e_export: Optional[float] = None
    e_t1: Optional[float] = None
    e_t2: Optional[float] = None
    e_export_t1: Optional[float] = None
    e_export_t2: Optional[float] = None
    p_sum: Optional[float] = None
    p_L1: Optional[float] = None
    p_L2: Optional[float] = None
    p_L3: Optional[float] = None
    u_L1: Optional[float] = None
    u_L2: Optional[float] = None
    u_L3: Optional[float] = None
    i_L1: Optional[float] = None
    i_L2: Optional[float] = None
    i_L3: Optional[float] = None
    freq: Optional[float] = None
    samples: int = 1
    minmax: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    FIELDS: ClassVar[tuple[str, ...]] = (
        "e_sum", "e_export", "e_t1", "e_t2", "e_export_t1", "e_export_t2",
        "p_sum", "p_L1", "p_L2", "p_L3",
        "u_L1", "u_L2", "u_L3", "i_L1", "i_L2", "i_L3", "freq",
    )  # fmt: skip

    def fields(self) -> dict[str, Optional[float]]:
        """The well-known fields (e_sum, p_sum, ...) by name."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (octet strings as hex) for APIs and exports."""
        out: dict[str, Any] = {"meter_id": self.meter_id, "time": self.time.isoformat()}
        out.update(self.fields())
        out["values"] = {
            obis: {"value": json_value(v.value), "unit": v.unit, "scaler": v.scaler}
            for obis, v in self.values.items()
        }
        if self.samples != 1 or self.minmax:
            out["samples"] = self.samples
            out["minmax"] = {k: [lo, hi] for k, (lo, hi) in self.minmax.items()}
        return out


pick_fields = operator.itemgetter(*Reading.FIELDS)
"""The well-known fields in `Reading.FIELDS` order, from a reading's ``__dict__`` or a row's
fields mapping: one C call (a replay reads them for millions of readings)."""

_READING_DEFAULTS: dict[str, Any] = {
    "meter_id": "",
    "time": None,
    "values": None,
    **dict.fromkeys(Reading.FIELDS),
    "samples": 1,
    "minmax": None,
}


def json_value(value: ValueType) -> Any:
    """A value made JSON-safe: bytes as hex, NaN/inf as None."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def text_or_hex(value: bytes) -> str:
    """Printable ASCII ids (manufacturer, firmware) as text, binary ones (server ids) as hex."""
    if value and all(0x20 <= b < 0x7F for b in value):
        return value.decode("ascii")
    return value.hex()


def _number(value: ValueType) -> Optional[float]:
    # bool is an int subclass but never a measurement
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _scaled(
    values: Mapping[str, Value], obis: str, factors: Mapping[str, float], default_unit: str
) -> Optional[float]:
    entry = values.get(obis)
    if entry is None:
        return None
    number = _number(entry.value)
    if number is None:
        return None
    factor = factors.get(entry.unit or default_unit)
    if factor is None:
        return None  # a unit we cannot convert is not silently taken as the expected one
    return number * factor


def _status(values: Mapping[str, Value], obis: str, statuses: Mapping[str, int]) -> Optional[int]:
    return statuses.get(obis) if obis in values else None


def total_power(
    values: Mapping[str, Value], statuses: Mapping[str, int], direction_from_status: bool
) -> Optional[float]:
    """Signed total power: + import, - export.

    16.7.0 is already signed; 15.7.0 is a magnitude; 1.7.0/2.7.0 are separate import/export.
    With `direction_from_status` the sign comes from the 1.8.0 status word instead.
    """
    power = _scaled(values, OBIS_P_SUM, _POWER_TO_W, "W")
    if power is None:
        power = _scaled(values, OBIS_P_ABS, _POWER_TO_W, "W")
    if power is None:
        imported = _scaled(values, OBIS_P_IMPORT, _POWER_TO_W, "W")
        exported = _scaled(values, OBIS_P_EXPORT, _POWER_TO_W, "W")
        if imported is not None or exported is not None:
            power = (imported or 0.0) - (exported or 0.0)
    if power is None or not direction_from_status:
        return power
    status = _status(values, OBIS_E_SUM, statuses)
    if status is None:
        return power
    return -abs(power) if status & DIRECTION_EXPORT_BIT else abs(power)


def values_from_entries(
    entries: Iterable[sml.Entry],
) -> tuple[dict[str, Value], dict[str, int]]:
    """Values by OBIS code, and the status words of the entries that carry one."""
    values: dict[str, Value] = {}
    statuses: dict[str, int] = {}
    for entry in entries:
        obis = str(entry.get("obis"))
        values[obis] = _value(
            obis,
            entry.get("value"),
            entry.get("unit_symbol"),
            entry.get("raw"),
            entry.get("scaler"),
        )
        status = entry.get("status")
        if status.__class__ is int:  # (not a bool, which is an int subclass)
            statuses[obis] = status
    return values, statuses


_new_object = object.__new__
_set_attribute = object.__setattr__


def _value(obis: str, value: ValueType, unit: Optional[str], raw: object, scaler: Any) -> Value:
    """A Value without the frozen dataclass __init__ (one attribute write per field): this
    runs for every entry of every frame, and the fields need no checks here."""
    item = _new_object(Value)
    _set_attribute(
        item, "__dict__", {"obis": obis, "value": value, "unit": unit, "raw": raw, "scaler": scaler}
    )
    return item


def reading_from_values(
    meter_id: str,
    received: datetime,
    values: Mapping[str, Value],
    statuses: Mapping[str, int] | None = None,
    *,
    direction_from_status: bool = False,
    owned: bool = False,
) -> Reading:
    """A Reading from decoded values: well-known fields in kWh/W/V/A/Hz, time in UTC.

    With `owned`, `values` is a dict nobody else holds or changes: the reading keeps it
    instead of a copy. Raises ValueError for a naive `received` time.
    """
    statuses = statuses or {}
    if received.tzinfo is None:
        raise ValueError("reading time must be timezone-aware")
    # One pass over what the meter sent (10-40 entries) instead of a lookup per known field:
    # this runs for every frame of a replay, and most known fields are absent.
    fields: dict[str, float] = {}
    for obis, entry in values.items():
        spec = _FIELD_OF_OBIS.get(obis)
        if spec is None:
            continue
        name, factors, unit = spec
        number: Any = entry.value
        kind = number.__class__
        # _number's rule, with the two usual cases first
        if kind is float:
            if not math.isfinite(number):
                continue
        elif kind is int:  # (not a bool: its class is bool)
            number = float(number)
        else:
            number = _number(number)
            if number is None:
                continue
        if factors is None:
            # a voltage, current or frequency in its own unit
            if entry.unit is None or entry.unit == unit:
                fields[name] = number
            continue
        factor = factors.get(entry.unit or unit)
        if factor is not None:  # a unit we cannot convert is not taken as the expected one
            fields[name] = number * factor
    # meters without a total register (tariff-only, e.g. Holley DTZ541, heat-pump meters):
    # the total is the sum of the tariff registers
    for total, tariffs in _TOTALS:
        if total not in fields and ENERGY_OBIS[total] not in values:
            present = [fields[t] for t in tariffs if t in fields]
            if present:
                fields[total] = sum(present)
    if direction_from_status or "p_sum" not in fields:
        # the sign from the status word, or no usable 16.7.0: total_power's other rules
        power = total_power(values, statuses, direction_from_status)
        if power is not None:
            fields["p_sum"] = power
    # the frozen dataclass __init__ writes its 22 attributes one by one; a reading per frame
    # is cheaper built as one dict (the same attributes, defaults included)
    state = _READING_DEFAULTS.copy()
    state.update(fields)
    state["meter_id"] = meter_id
    state["time"] = (
        received if received.tzinfo is timezone.utc else received.astimezone(timezone.utc)
    )
    state["values"] = MappingProxyType(values if owned else dict(values))
    state["minmax"] = {}
    reading = _new_object(Reading)
    _set_attribute(reading, "__dict__", state)
    return reading


def readings_from_frame(
    frame: sml.Frame,
    received: datetime,
    *,
    direction_from_status: bool = False,
    meter_id: str | None = None,
    accept_bad_msg_crc: bool = False,
) -> list[Reading]:
    """One reading per GetListResponse of a good frame.

    `meter_id` overrides the server id (meters with zeroed or duplicate ids); messages whose own
    CRC failed are skipped unless `accept_bad_msg_crc` (transport CRC was good).
    """
    if not frame["ok"]:
        return []
    readings = []
    for body in sml.get_list_responses(frame, require_crc=not accept_bad_msg_crc):
        entries = body.get("values")
        values, statuses = values_from_entries(entries if isinstance(entries, list) else ())
        readings.append(
            _list_reading(
                meter_id, body.get("server_id"), received, values, statuses, direction_from_status
            )
        )
    return readings


def _list_reading(
    meter_id: str | None,
    server_id: object,
    received: datetime,
    values: dict[str, Value],
    statuses: dict[str, int],
    direction_from_status: bool,
) -> Reading:
    """The reading of one GetListResponse (`values` freshly made for it), named `meter_id`
    if given, else by the server id's hex digits ("unknown" for none or an empty one)."""
    if meter_id is None:
        meter_id = server_id.hex() if isinstance(server_id, bytes) and server_id else "unknown"
    return reading_from_values(
        meter_id,
        received,
        values,
        statuses,
        direction_from_status=direction_from_status,
        owned=True,
    )


def readings_from_lists(
    item: sml.ValuesFrame,
    received: datetime,
    *,
    direction_from_status: bool = False,
    meter_id: str | None = None,
    accept_bad_msg_crc: bool = False,
) -> list[Reading]:
    """`readings_from_frame` for a frame from ``sml.feed_values(decoder, data, Value)`` (the
    same readings).

    Its value dicts are fresh per frame and become the readings' own; the Value objects in
    them may be shared with earlier frames (a register that repeats its value), which is safe
    because a Value never changes.
    """
    _offset, ok, lists = item
    if not ok:
        return []
    return [
        _list_reading(meter_id, server_id, received, values, statuses, direction_from_status)
        for crc_ok, server_id, values, statuses in lists
        if crc_ok or accept_bad_msg_crc
    ]
