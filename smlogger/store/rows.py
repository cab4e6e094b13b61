"""Rows: what is queued and stored per reading (`StoredRow`, the ``obis_values`` JSON)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, Optional

from smlogger.reading import Reading, Value, json_value

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _finite(value: Any) -> Optional[float]:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def encode_values(values: Mapping[str, Value]) -> str:
    """The ``obis_values`` JSON: ``{obis: [value, unit]}``, octet strings as hex."""
    return json.dumps(
        {obis: [json_value(v.value), v.unit] for obis, v in values.items()},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def decode_values(text: Optional[str]) -> dict[str, Value]:
    if not text:
        return {}
    out: dict[str, Value] = {}
    for obis, item in json.loads(text).items():
        value, unit = [*item, None, None][:2] if isinstance(item, list) else (item, None)
        out[obis] = Value(obis=obis, value=value, unit=unit)
    return out


@dataclass(frozen=True)
class StoredRow:
    """A reading as the SQL sink keeps it (and as it waits in the disk queue)."""

    meter_id: str
    time: datetime  # timezone-aware UTC
    samples: int
    fields: Mapping[str, Optional[float]]
    minmax: Mapping[str, tuple[float, float]]
    values_json: str

    @property
    def ts(self) -> float:
        return self.time.timestamp()

    @classmethod
    def from_reading(cls, reading: Reading) -> StoredRow:
        if reading.time.tzinfo is None:
            raise ValueError("reading time must be timezone-aware")
        fields = {name: _finite(getattr(reading, name)) for name in Reading.FIELDS}
        minmax: dict[str, tuple[float, float]] = {}
        for name, pair in (reading.minmax or {}).items():
            lo, hi = _finite(pair[0]), _finite(pair[1])
            if lo is not None and hi is not None:
                minmax[name] = (lo, hi)
        return cls(
            meter_id=reading.meter_id,
            time=reading.time.astimezone(timezone.utc),
            samples=max(1, int(reading.samples)),
            fields=fields,
            minmax=minmax,
            values_json=encode_values(reading.values),
        )

    def to_payload(self) -> bytes:
        """Queue record: a JSON header line, then the values JSON as it goes into the DB."""
        micros = (self.time - _EPOCH) // timedelta(microseconds=1)
        head = {
            "m": self.meter_id,
            "t": micros,
            "n": self.samples,
            "f": {k: v for k, v in self.fields.items() if v is not None},
            "x": {k: list(v) for k, v in self.minmax.items()},
        }
        return (
            json.dumps(head, separators=(",", ":")).encode()
            + b"\n"
            + self.values_json.encode("utf-8")
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> StoredRow:
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

    def to_reading(self) -> Reading:
        return Reading(
            meter_id=self.meter_id,
            time=self.time,
            values=MappingProxyType(decode_values(self.values_json)),
            samples=self.samples,
            minmax=MappingProxyType(dict(self.minmax)),
            **{name: self.fields.get(name) for name in Reading.FIELDS},
        )
