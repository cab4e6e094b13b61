"""Compact OBIS lists: a per-meter dictionary ("base") plus what changed.

A meter sends the same list every second: identity values (server id, public key, firmware)
that never change, and registers that are already stored as typed columns (energy, power,
voltage ...). Storing the whole list as JSON on every row costs ~500 bytes per reading.

Instead each meter has one or a few *bases* (its full list as first seen: ``{obis: [value,
unit]}``), kept once (in the ``meters`` table and next to the journal), and each row keeps only a
*delta*:

* entries equal to the base are left out;
* entries behind a typed column (``1-0:1.8.0*255`` -> ``e_sum`` ...) are left out when the
  column gives the value back exactly (checked when writing, so nothing is ever approximated);
* anything else is in the delta as ``[value, unit]``, and an entry of the base that the reading
  lacks as ``null``.

`join` rebuilds the full list from base, typed columns and delta. When a reading differs from
its base in many entries, it becomes a new base (`needs_new_base`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from math import isfinite
from typing import Any, Optional

from smlogger.reading import (
    _ENERGY_TO_KWH,
    _POWER_TO_W,
    ENERGY_OBIS,
    INSTANT_OBIS,
    OBIS_P_SUM,
    Value,
    json_value,
)

Base = dict[str, list[Any]]  # obis -> [value, unit]
Delta = dict[str, Optional[list[Any]]]

# obis -> (typed column, unit -> factor from the register's unit to the column's unit)
FIELD_SOURCES: dict[str, tuple[str, Mapping[str, float]]] = {
    **{obis: (name, _ENERGY_TO_KWH) for name, obis in ENERGY_OBIS.items()},
    OBIS_P_SUM: ("p_sum", _POWER_TO_W),
    **{
        obis: (name, _POWER_TO_W if unit == "W" else {unit: 1.0})
        for name, (obis, unit) in INSTANT_OBIS.items()
    },
}


def base_of(values: Mapping[str, Value]) -> Base:
    """A reading's full OBIS list in the stored form.

    Registers behind a typed column keep only their type (0 or 0.0): their values come from
    the columns, so a base stays the same from one start to the next.
    """
    base: Base = {}
    for obis, v in values.items():
        value = json_value(v.value)
        if (
            obis in FIELD_SOURCES
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        ):
            value = type(value)(0)
        base[obis] = [value, v.unit]
    return base


def base_key(base: Base) -> str:
    """A short content hash naming a base (the same list gives the same key everywhere)."""
    text = json.dumps(base, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _restore(column: float, factor: float, as_int: bool) -> Any:
    # registers are decimal numbers (raw x 10^scaler): undo the unit factor and round away
    # the binary noise the multiplication added
    value = column if factor == 1.0 else round(column / factor, 6)
    if as_int and value.is_integer():
        return int(value)
    return value


_UNTYPED: Any = object()  # (a register without a typed column: see Splitter.split)


class Splitter:
    """`split` against one base, with what it learns about the base kept from one reading to
    the next (one per base: `smlogger.store.bases.BaseBook` holds them)."""

    def __init__(self, base: Base) -> None:
        self.base = base
        # Value objects found equal to the base: a reading that holds the very same object
        # (see `smlogger.sml.feed_values`) needs no comparison for it
        self._same: dict[str, Value] = {}
        # base entries behind a typed column: obis -> (column, unit factor, unit, value type),
        # or None when the column can never give the entry back (no known factor for the
        # base's unit, or a base value that is not a number)
        self._typed: dict[str, Optional[tuple[str, float, str, type]]] = {}
        for obis, (value, unit) in base.items():
            source = FIELD_SOURCES.get(obis)
            if source is None:
                continue
            factor = source[1].get(unit) if unit is not None else None
            kind = value.__class__
            usable = factor is not None and (kind is int or kind is float)
            self._typed[obis] = (source[0], factor, unit, kind) if usable else None  # type: ignore[assignment]

    def split(self, values: Mapping[str, Value], fields: Mapping[str, Any]) -> Delta:
        """What a row must keep besides the base and its typed `fields` to give `values` back
        (see the module doc)."""
        delta: Delta = {}
        same = self._same
        typed = self._typed
        base = self.base
        # (this runs for every reading stored: the checks are inlined, and a [value, unit]
        # list is made only for what goes into the delta)
        for obis, entry in values.items():
            plan = typed.get(obis, _UNTYPED)
            if plan is _UNTYPED and same.get(obis) is entry:
                continue
            value = entry.value
            kind = value.__class__
            # a register behind a typed column is never left out for being equal to the base:
            # `join` restores it from the column, so it is left out only when the column gives
            # the value back exactly (same unit and type as the base)
            if (
                plan is not _UNTYPED
                and plan is not None
                and kind is plan[3]
                and entry.unit == plan[2]
            ):
                column = fields.get(plan[0])
                # _restore's result equals `value` exactly when this holds (a float compares
                # exactly with an int, and a NaN with nothing)
                if column is not None and (
                    column == value if plan[1] == 1.0 else round(column / plan[1], 6) == value
                ):
                    continue
            # stored JSON-safe (json_value changes only octet strings, non-finite floats)
            if kind is not int and not (kind is float and isfinite(value)):  # type: ignore[arg-type]
                value = json_value(value)
            if plan is _UNTYPED:
                base_item = base.get(obis)
                if base_item is not None and base_item[0] == value and base_item[1] == entry.unit:
                    same[obis] = entry
                    continue
            delta[obis] = [value, entry.unit]
        for obis in base:
            if obis not in values:
                delta[obis] = None
        return delta


def split(values: Mapping[str, Value], fields: Mapping[str, Any], base: Base) -> Delta:
    """What a row must keep besides `base` and its typed `fields` to give `values` back."""
    return Splitter(base).split(values, fields)


def needs_new_base(delta: Delta, values: Mapping[str, Value]) -> bool:
    """A reading that differs from its base in more than a few entries starts a new base."""
    return len(delta) > max(3, len(values) // 3)


def join(
    base: Base, delta: Mapping[str, Optional[list[Any]]], fields: Mapping[str, Any]
) -> dict[str, Value]:
    """The full OBIS list of a row: base, typed columns and delta (see the module doc)."""
    out: dict[str, Value] = {}
    for obis, base_item in base.items():
        if obis in delta:
            item = delta[obis]
            if item is not None:
                out[obis] = Value(obis=obis, value=item[0], unit=item[1])
            continue
        source = FIELD_SOURCES.get(obis)
        column = fields.get(source[0]) if source is not None else None
        if source is not None and column is not None:
            factor = source[1].get(base_item[1] or "", 1.0)
            value = _restore(float(column), factor, isinstance(base_item[0], int))
            out[obis] = Value(obis=obis, value=value, unit=base_item[1])
        else:
            out[obis] = Value(obis=obis, value=base_item[0], unit=base_item[1])
    for obis, item in delta.items():
        if obis not in base and item is not None:
            out[obis] = Value(obis=obis, value=item[0], unit=item[1])
    return out


def dumps(data: Mapping[str, Any]) -> str:
    """Compact JSON as stored."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
