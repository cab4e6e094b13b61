"""Compact OBIS lists: every recording and the simulator round-trip exactly through
base + typed columns + delta, and the delta is small."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

from conftest import recording_files
from hypothesis import given, settings
from hypothesis import strategies as st

from smlogger import sml
from smlogger.reading import Reading, Value, json_value, readings_from_frame
from smlogger.simulate import make_meter
from smlogger.store.compact import base_key, base_of, join, needs_new_base, split

START = datetime(2024, 5, 1, tzinfo=timezone.utc)


def _readings(data: bytes) -> list[Reading]:
    return [r for f in sml.decode(data) for r in readings_from_frame(f, received=START)]


def _stored(values: dict[str, Value]) -> dict[str, tuple[object, object, type]]:
    out: dict[str, tuple[object, object, type]] = {}
    for obis, v in values.items():
        value = json_value(v.value)
        out[obis] = (value, v.unit, type(value))
    return out


def _round_trip(readings: list[Reading]) -> tuple[int, int]:
    bases: dict[str, dict[str, list[object]]] = {}
    delta_entries = 0
    for reading in readings:
        fields = reading.fields()
        base = bases.setdefault(reading.meter_id, base_of(reading.values))
        delta = split(reading.values, fields, base)
        if needs_new_base(delta, reading.values):
            base = bases[reading.meter_id] = base_of(reading.values)
            delta = split(reading.values, fields, base)
        assert _stored(join(base, delta, fields)) == _stored(dict(reading.values))
        delta_entries += len(delta)
    return len(readings), delta_entries


def test_every_recording_round_trips_exactly() -> None:
    total = 0
    for path in recording_files():
        count, _ = _round_trip(_readings(path.read_bytes()))
        total += count
    assert total > 100


def test_simulated_meter_rows_carry_almost_nothing() -> None:
    meter = make_meter("household", seed="compact", tz=timezone.utc)
    data = b"".join(meter.frame(START + timedelta(seconds=i)) for i in range(300))
    count, delta_entries = _round_trip(_readings(data))
    assert count == 300
    assert delta_entries <= 3  # identity values and registers come from base and columns


def test_changes_are_kept_and_missing_entries_marked() -> None:
    base: dict[str, list[Any]] = {"a": ["x", None], "1-0:1.8.0*255": [1000.5, "Wh"], "b": [5, "W"]}
    values = {
        "a": Value("a", "y", None),  # changed identity value
        "1-0:1.8.0*255": Value("1-0:1.8.0*255", 2000.25, "Wh"),  # from the typed column
        "c": Value("c", 7, None),  # new entry
    }
    fields = {"e_sum": 2.00025}
    delta = split(values, fields, base)
    assert delta == {"a": ["y", None], "c": [7, None], "b": None}
    back = join(base, delta, fields)
    assert _stored(back) == _stored(values)
    # a column that does not give the register back exactly: the value is spelled out
    delta = split(values, {"e_sum": 2.0}, base)
    assert delta["1-0:1.8.0*255"] == [2000.25, "Wh"]
    assert _stored(join(base, delta, {"e_sum": 2.0})) == _stored(values)


def test_base_key_depends_on_content_only() -> None:
    assert base_key({"a": [1, None], "b": [2, "W"]}) == base_key({"b": [2, "W"], "a": [1, None]})
    assert base_key({"a": [1, None]}) != base_key({"a": [2, None]})


def _left_out_by_rule(value: Any, unit: Any, column: Any, base_item: list[Any]) -> bool:
    """The rule of the module doc, spelled out: a register behind a typed column is left out
    only when the column gives it back exactly (same unit and type as the base)."""
    from smlogger.store.compact import _restore

    kind = type(value)
    if column is None or base_item[1] != unit or kind not in (int, float):
        return False
    if type(base_item[0]) is not kind:
        return False
    if kind is float and not math.isfinite(value):
        return False
    factor = {"Wh": 1e-3, "kWh": 1.0, "MWh": 1e3}.get(unit) if unit is not None else None
    if factor is None:
        return False
    restored = _restore(float(column), factor, kind is int)
    return type(restored) is kind and restored == value


@settings(max_examples=600, deadline=None)
@given(
    value=st.one_of(
        st.integers(-(2**60), 2**60),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0, 0.0, -0.0, 1234567, 1234567.0, 1234567.5, True, "x", None]),
    ),
    unit=st.sampled_from(["Wh", "kWh", "MWh", "W", None]),
    base_value=st.sampled_from([0, 0.0, "0", None]),
    base_unit=st.sampled_from(["Wh", "kWh", None]),
    column=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    from_value=st.booleans(),
)
def test_typed_registers_are_left_out_exactly_when_the_column_gives_them_back(
    value: Any, unit: Any, base_value: Any, base_unit: Any, column: Any, from_value: bool
) -> None:
    obis = "1-0:1.8.0*255"
    if from_value and isinstance(value, (int, float)) and not isinstance(value, bool):
        # the column as the reading model makes it: the register times its unit factor
        factor = {"Wh": 1e-3, "kWh": 1.0, "MWh": 1e3}.get(unit or "Wh")
        column = None if factor is None or not math.isfinite(value) else float(value) * factor
    base: dict[str, list[Any]] = {obis: [base_value, base_unit]}
    values = {obis: Value(obis, value, unit)}
    fields = {"e_sum": column}
    delta = split(values, fields, base)
    assert (obis not in delta) == _left_out_by_rule(value, unit, column, base[obis])
    assert _stored(join(base, delta, fields)) == _stored(values)
    # the same Value object a second time (a repeated register) gives the same answer
    assert split(values, fields, base) == delta
