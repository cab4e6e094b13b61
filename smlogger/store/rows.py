"""Rows: what is queued and stored per reading (`StoredRow`, the ``obis_values`` JSON)."""

from __future__ import annotations

import json
import math
import operator
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Optional

from smlogger.reading import Reading, Value, json_value, pick_fields
from smlogger.store.compact import Base, dumps, join

if TYPE_CHECKING:
    from smlogger.store.bases import BaseBook

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _finite(value: Any) -> Optional[float]:
    if value.__class__ is float:  # what readings hold: the quick way
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


_NUMBER_TYPES = frozenset((float, type(None)))


def _fields_of(reading: Reading) -> dict[str, Optional[float]]:
    """The typed columns of a reading: finite floats or None."""
    state = reading.__dict__
    picked = pick_fields(state)
    # what readings hold, floats and None (checked in C, without a call per field); a sum
    # that is finite has only finite terms (an overflow merely takes the slow way)
    if set(map(type, picked)) <= _NUMBER_TYPES and math.isfinite(sum(filter(None, picked))):
        return dict(zip(Reading.FIELDS, picked))
    return {name: _finite(state[name]) for name in Reading.FIELDS}


def encode_values(values: Mapping[str, Value]) -> str:
    """The ``obis_values`` JSON: ``{obis: [value, unit]}``, octet strings as hex."""
    return json.dumps(
        {obis: [json_value(v.value), v.unit] for obis, v in values.items()},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def decode_values(text: Optional[str]) -> dict[str, Value]:
    """The `values` column (JSON by OBIS) back into Value objects."""
    if not text:
        return {}
    out: dict[str, Value] = {}
    for obis, item in json.loads(text).items():
        value, unit = [*item, None, None][:2] if isinstance(item, list) else (item, None)
        out[obis] = Value(obis=obis, value=value, unit=unit)
    return out


_PAYLOAD_VERSION = 2
_PAYLOAD_HEAD = struct.Struct("<BqIII")  # version, time (us), samples, field mask, minmax mask
_FIELD_INDEX = {name: i for i, name in enumerate(Reading.FIELDS)}


@dataclass(frozen=True)
class StoredRow:
    """A reading as the SQL sink keeps it (and as it waits in the journal).

    With `base` None, `values_json` is the full OBIS list (``{obis: [value, unit]}``);
    otherwise it is the delta against that base (see `smlogger.store.compact`), empty when
    nothing differs.
    """

    meter_id: str
    time: datetime  # timezone-aware UTC
    samples: int
    fields: Mapping[str, Optional[float]]
    minmax: Mapping[str, tuple[float, float]]
    values_json: str
    base: Optional[str] = None

    @property
    def ts(self) -> float:
        """The time as a Unix timestamp."""
        return self.time.timestamp()

    @classmethod
    def from_reading(cls, reading: Reading, book: Optional[BaseBook] = None) -> StoredRow:
        """The row of a reading; with a `book`, compact (base key + delta)."""
        if reading.time.tzinfo is None:
            raise ValueError("reading time must be timezone-aware")
        fields = _fields_of(reading)
        minmax: dict[str, tuple[float, float]] = {}
        for name, pair in (reading.minmax or {}).items():
            lo, hi = _finite(pair[0]), _finite(pair[1])
            if lo is not None and hi is not None:
                minmax[name] = (lo, hi)
        base: Optional[str] = None
        if book is None:
            values_json = encode_values(reading.values)
        else:
            base, delta = book.split(reading.meter_id, reading.values, fields)
            values_json = dumps(delta) if delta else ""
        moment = reading.time
        # the frozen dataclass __init__ writes its attributes one by one; a row per reading
        # is cheaper built as one dict (the same attributes)
        row = object.__new__(cls)
        object.__setattr__(
            row,
            "__dict__",
            {
                "meter_id": reading.meter_id,
                "time": moment
                if moment.tzinfo is timezone.utc
                else moment.astimezone(timezone.utc),
                "samples": max(1, int(reading.samples)),
                "fields": fields,
                "minmax": minmax,
                "values_json": values_json,
                "base": base,
            },
        )
        return row

    def to_payload(self) -> bytes:
        """Journal record: a fixed binary head, the numbers as doubles, then the OBIS JSON.

        ~100 bytes for a typical compact row (the JSON version took ~600): every byte here is
        written to the SD card once per reading.
        """
        micros = (self.time - _EPOCH) // timedelta(microseconds=1)
        numbers: list[float] = []
        mask = 0
        for name, value in self.fields.items():
            if value is not None:
                mask |= 1 << _FIELD_INDEX[name]
                numbers.append(value)
        minmax_mask = 0
        for name in Reading.FIELDS:
            pair = self.minmax.get(name)
            if pair is not None:
                minmax_mask |= 1 << _FIELD_INDEX[name]
                numbers += pair
        meter = self.meter_id.encode("utf-8")
        base = (self.base or "").encode("ascii")
        return b"".join(
            (
                _PAYLOAD_HEAD.pack(_PAYLOAD_VERSION, micros, self.samples, mask, minmax_mask),
                struct.pack("<HB", len(meter), len(base)),
                meter,
                base,
                struct.pack(f"<{len(numbers)}d", *numbers),
                self.values_json.encode("utf-8"),
            )
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> StoredRow:
        """Inverse of `to_payload` (also reads the JSON records of earlier versions)."""
        if payload[:1] == b"{":
            return cls._from_json_payload(payload)
        version, micros, samples, mask, minmax_mask = _PAYLOAD_HEAD.unpack_from(payload)
        if version != _PAYLOAD_VERSION:
            raise ValueError(f"journal record of unknown version {version}")
        pos = _PAYLOAD_HEAD.size
        meter_len, base_len = struct.unpack_from("<HB", payload, pos)
        pos += 3
        meter_id = payload[pos : pos + meter_len].decode("utf-8")
        pos += meter_len
        base = payload[pos : pos + base_len].decode("ascii") or None
        pos += base_len
        present = [name for name in Reading.FIELDS if mask >> _FIELD_INDEX[name] & 1]
        ranged = [name for name in Reading.FIELDS if minmax_mask >> _FIELD_INDEX[name] & 1]
        count = len(present) + 2 * len(ranged)
        numbers = struct.unpack_from(f"<{count}d", payload, pos)
        pos += 8 * count
        fields: dict[str, Optional[float]] = dict.fromkeys(Reading.FIELDS)
        fields.update(zip(present, numbers))
        rest = numbers[len(present) :]
        minmax = {name: (rest[2 * i], rest[2 * i + 1]) for i, name in enumerate(ranged)}
        return cls(
            meter_id=meter_id,
            time=_EPOCH + timedelta(microseconds=micros),
            samples=samples,
            fields=fields,
            minmax=minmax,
            values_json=payload[pos:].decode("utf-8"),
            base=base,
        )

    @classmethod
    def _from_json_payload(cls, payload: bytes) -> StoredRow:
        head_bytes, _, values = payload.partition(b"\n")
        head = json.loads(head_bytes)
        fields = {name: _finite(head["f"].get(name)) for name in Reading.FIELDS}
        return cls(
            meter_id=str(head["m"]),
            time=_EPOCH + timedelta(microseconds=int(head["t"])),
            samples=int(head.get("n", 1)),
            fields=fields,
            minmax={k: (float(v[0]), float(v[1])) for k, v in head.get("x", {}).items()},
            values_json=values.decode("utf-8"),
        )

    def values(self, base: Optional[Base]) -> dict[str, Value]:
        """The full OBIS list (`base`: the row's base, when it has one)."""
        if self.base is None:
            return decode_values(self.values_json)
        delta = json.loads(self.values_json) if self.values_json else {}
        return join(base or {}, delta, self.fields)

    def to_reading(self, base: Optional[Base] = None) -> Reading:
        """The reading back (`base`: the row's base, when it has one)."""
        return Reading(
            meter_id=self.meter_id,
            time=self.time,
            values=MappingProxyType(self.values(base)),
            samples=self.samples,
            minmax=MappingProxyType(dict(self.minmax)),
            **{name: self.fields.get(name) for name in Reading.FIELDS},
        )


# a batch's rows read in C, by the SQL writer and the rollups alike
row_fields = operator.attrgetter("fields")
row_minmax = operator.attrgetter("minmax")
row_samples = operator.attrgetter("samples")
