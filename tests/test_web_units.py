"""The web package's pure helpers: query parsing, JSON cleaning, Prometheus text, link state."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import smlogger.web
from smlogger import csvlog
from smlogger.states import (
    INITIAL_LINK_STATE,
    LINK_STATE_LABELS,
    LINK_STATES,
    PAGE_OFFLINE_LABEL,
    PAGE_OFFLINE_STATE,
    page_link_states,
    state_rank,
)
from smlogger.store import queries as store_queries
from smlogger.store import sink as store_sink
from smlogger.web import (
    ApiError,
    MetricsWriter,
    clean_json,
    dumps,
    escape_help,
    escape_label,
    fmt_number,
    fmt_power,
    format_sample_value,
    iso,
    link_for_meter,
    meter_label,
    parse_step,
    parse_time,
    sse_event,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=timezone.utc)),
        ("2024-05-01T10:00:00+02:00", datetime(2024, 5, 1, 8, tzinfo=timezone.utc)),
        ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, tzinfo=timezone.utc)),  # naive = UTC
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=timezone.utc)),
        ("1714557600", datetime(2024, 5, 1, 10, tzinfo=timezone.utc)),
        ("1714557600.5", datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=timezone.utc)),
        ("now", NOW),
        ("-90s", NOW - timedelta(seconds=90)),
        ("-15m", NOW - timedelta(minutes=15)),
        ("-24h", NOW - timedelta(hours=24)),
        ("-7d", NOW - timedelta(days=7)),
        ("-2w", NOW - timedelta(weeks=2)),
        (" -1H ", NOW - timedelta(hours=1)),
        ("-30", NOW - timedelta(seconds=30)),  # like step, a bare number means seconds
    ],
)
def test_parse_time_accepts(text: str, expected: datetime) -> None:
    assert parse_time("from", text, NOW) == expected


@pytest.mark.parametrize(
    "text",
    ["", "  ", "yesterday", "2024-13-01", "nan", "inf", "-inf", "1e400", "-5e300d",
     "1714557600000", "-", "0001-01-01", "9999-12-31T23:59:59", "2024-05-01T25:00", "\x00"],
)  # fmt: skip
def test_parse_time_rejects_with_parameter_name(text: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_time("to", text, NOW)
    assert info.value.status == 400
    assert info.value.parameter == "to"
    assert "'to'" in info.value.message


def test_parse_time_milliseconds_hint() -> None:
    with pytest.raises(ApiError, match="milliseconds"):
        parse_time("from", "1714557600000", NOW)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1", 1), ("300", 300), ("90s", 90), ("5m", 300), ("5min", 300), ("1h", 3600),
     ("1d", 86400), ("1w", 604800), ("1.5m", 90)],
)  # fmt: skip
def test_parse_step(text: str, seconds: int) -> None:
    assert parse_step(text) == seconds


@pytest.mark.parametrize("text", ["0", "0.5", "-5", "abc", "", "1.5s", "5y", "1e9", "400d"])
def test_parse_step_rejects(text: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_step(text)
    assert (info.value.status, info.value.parameter) == (400, "step")


def test_clean_json_makes_strict_json() -> None:
    data = {
        "nan": math.nan,
        "inf": -math.inf,
        "ok": 1.5,
        "when": datetime(2024, 5, 1, tzinfo=timezone.utc),
        "naive": datetime(2024, 5, 1),
        "id": b"\x0a\x01",
        "nested": [(1, math.nan)],
        3: True,
    }
    assert clean_json(data) == {
        "nan": None,
        "inf": None,
        "ok": 1.5,
        "when": "2024-05-01T00:00:00.000Z",
        "naive": "2024-05-01T00:00:00.000Z",
        "id": "0a01",
        "nested": [[1, None]],
        "3": True,
    }
    text = dumps(data).decode()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text)


def test_iso_is_utc_with_z() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert iso(datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=plus2)) == "2024-05-01T12:00:00.123Z"
    # a naive time is UTC (what the databases hand back), whatever the machine's zone
    assert iso(datetime(2024, 5, 1, 14, 0, 0, 999999)) == "2024-05-01T14:00:00.999Z"


def test_one_iso_for_the_project() -> None:
    # the store, the CSV files and the web API write times through the same function
    modules = (store_queries, store_sink, csvlog)
    assert all(module.iso is iso for module in modules)


def test_link_states_are_one_list() -> None:
    assert LINK_STATES == ("connected", "waiting", "no data")
    assert set(LINK_STATE_LABELS) == set(LINK_STATES)
    assert [state_rank(s) for s in LINK_STATES] == [0, 1, 2]
    assert state_rank("bogus") == state_rank(None) == len(LINK_STATES)
    served = page_link_states()
    labels: dict[str, str] = {PAGE_OFFLINE_STATE: PAGE_OFFLINE_LABEL}
    labels.update(LINK_STATE_LABELS.items())
    assert served["labels"] == labels
    assert served["initial"] == INITIAL_LINK_STATE and served["offline"] == PAGE_OFFLINE_STATE


def test_page_code_does_not_retype_link_states() -> None:
    web_dir = Path(smlogger.web.__file__).parent
    script = (web_dir / "static" / "app.js").read_text(encoding="utf-8")
    template = (web_dir / "index.tpl").read_text(encoding="utf-8")
    for text in (script, template):
        for label in page_link_states()["labels"].values():  # type: ignore[attr-defined]
            assert label not in text
        for state in (*LINK_STATES, PAGE_OFFLINE_STATE):
            assert f'"{state}"' not in text and f"'{state}'" not in text


def test_sse_event_is_one_data_line() -> None:
    frame = sse_event("reading", {"text": "a\nb", "v": 1})
    assert frame.endswith(b"\n\n")
    lines = frame.decode().split("\n")
    assert lines[0] == "event: reading"
    assert lines[1].startswith("data: ")
    assert json.loads(lines[1][6:]) == {"text": "a\nb", "v": 1}
    assert lines[2:] == ["", ""]


def test_prometheus_escaping() -> None:
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape_help("x\\y\nz") == "x\\\\y\\nz"
    assert format_sample_value(3.0) == "3"
    assert format_sample_value(0.25) == "0.25"
    assert format_sample_value(math.nan) == "NaN"
    assert format_sample_value(math.inf) == "+Inf"
    assert format_sample_value(-math.inf) == "-Inf"
    assert float(format_sample_value(1e20)) == 1e20


def test_metrics_writer_groups_families() -> None:
    out = MetricsWriter()
    out.add("m_a", "gauge", "first", 1, meter='x"y')
    out.add("m_b", "counter", "second\nline", 2)
    out.add("m_a", "gauge", "first", 3, meter="z")
    out.add("m_a", "gauge", "first", None, meter="skipped")  # no value: no sample
    out.add("m_a", "gauge", "first", True, meter="bool")  # bools are not measurements
    text = out.render()
    assert text == (
        "# HELP m_a first\n"
        "# TYPE m_a gauge\n"
        'm_a{meter="x\\"y"} 1\n'
        'm_a{meter="z"} 3\n'
        "# HELP m_b second\\nline\n"
        "# TYPE m_b counter\n"
        "m_b 2\n"
    )


def test_link_for_meter() -> None:
    sources = {
        "ttyUSB0": {"state": "connected", "detail": "", "last_frame_age_s": 1.5,
                    "stats": {"frames_ok": 99, "crc_errors": 1}, "meters": ["a"]},
        "ttyUSB1": {"state": "no data", "detail": "silent for 60 s", "last_frame_age_s": 61.0,
                    "stats": {"frames_ok": 10, "crc_errors": 0}, "meters": ["b"]},
    }  # fmt: skip
    a = link_for_meter(sources, "a")
    assert a["state"] == "connected"
    assert a["sources"] == ["ttyUSB0"]
    assert a["crc_error_rate"] == pytest.approx(0.01)
    assert a["last_frame_age_s"] == 1.5
    b = link_for_meter(sources, "b")
    assert (b["state"], b["detail"], b["crc_error_rate"]) == ("no data", "silent for 60 s", 0.0)
    # a meter no source claims: nothing known about its link
    assert link_for_meter(sources, "c")["state"] == "no data"
    assert link_for_meter({}, None)["state"] == "waiting"
    # one source serves every meter, even before it names them
    only = {"sim": {"state": "waiting", "stats": {}, "meters": []}}
    assert link_for_meter(only, "x")["sources"] == ["sim"]
    assert link_for_meter(only, "x")["crc_error_rate"] is None


def test_first_paint_formatting() -> None:
    assert fmt_power(665.4) == ("665", "W")
    assert fmt_power(-1234.4) == ("-1,234", "W")
    assert fmt_power(12346.0) == ("12.35", "kW")
    assert fmt_power(-10001.0) == ("-10.00", "kW")
    assert fmt_power(None)[0] == "\u2013"
    assert fmt_number(12339.7, 3) == "12,339.700"
    assert fmt_number(None, 1) == "\u2013"
    assert re.fullmatch(r"[\d,]+\.\d", fmt_number(1e6, 1))


def test_meter_label() -> None:
    # SML-NOTES 4.4: media, FLAG manufacturer, fabrication block, serial as 8 decimal digits
    assert meter_label("0a01445a47000282225e") == "1 DZG00 4208 2910"
    assert meter_label("0901454d48000001e240") == "1 EMH00 0012 3456"
    for other in ("0649534b010e1f62a5a1", "abc", "0a01445a47000282225e00", "0a01647a67000282225e",
                  "3032323830383136", 'x"y'):  # fmt: skip
        assert meter_label(other) == other
