"""The Rust ↔ Python contract: every dict the Rust extension builds matches the
TypedDicts of ``smlogger.sml`` — no key the TypedDict does not declare, every
required key present, every value of the declared type.

``sml_core/src/python/to_py.rs`` writes the keys; ``smlogger/sml.py`` declares
them. This test decodes every recording and every golden vector, so a key added
on one side only fails here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from conftest import RECORDINGS, recording_files

from smlogger import sml

if sys.version_info >= (3, 11):
    from typing import NotRequired, get_type_hints
else:  # pragma: no cover - older interpreters only
    from typing_extensions import NotRequired, get_type_hints

VECTORS = RECORDINGS.parent / "SML-VECTORS.json"


def is_typeddict(tp: object) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__total__")


def check_typeddict(value: object, td: type, where: str) -> None:
    """Keys of ``value`` ⊆ the TypedDict's, required keys present, values typed."""
    assert isinstance(value, dict), f"{where}: {type(value).__name__} is no dict"
    hints = get_type_hints(td, include_extras=True)
    extra = set(value) - set(hints)
    assert not extra, f"{where}: keys {sorted(extra)} are not declared in sml.{td.__name__}"
    for key, hint in hints.items():
        if get_origin(hint) is NotRequired:
            if key not in value:
                continue
            (hint,) = get_args(hint)
        assert key in value, f"{where}: required key {key!r} of sml.{td.__name__} missing"
        check_value(value[key], hint, f"{where}.{key}")


def check_value(value: object, hint: Any, where: str) -> None:
    """``value`` is an instance of the type hint (the subset sml.py uses)."""
    origin = get_origin(hint)
    if hint is object or hint is Any:
        return
    if is_typeddict(hint):
        check_typeddict(value, hint, where)
    elif origin is Union:
        errors = []
        for arm in get_args(hint):
            try:
                check_value(value, arm, where)
                return
            except AssertionError as e:
                errors.append(str(e))
        raise AssertionError(f"{where}: {value!r} matches no arm of {hint}: {errors}")
    elif origin is Literal:
        assert value in get_args(hint), f"{where}: {value!r} not in {get_args(hint)}"
    elif origin is list:
        assert isinstance(value, list), f"{where}: {type(value).__name__} is no list"
        (item,) = get_args(hint)
        for i, v in enumerate(value):
            check_value(v, item, f"{where}[{i}]")
    elif origin is dict:
        assert isinstance(value, dict), f"{where}: {type(value).__name__} is no dict"
    elif hint is type(None):
        assert value is None, f"{where}: {value!r} is not None"
    elif hint is int:
        # bool is an int subclass; the contract keeps them apart.
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r}"
    elif hint is float:
        assert isinstance(value, float), f"{where}: {value!r} is no float"
    elif isinstance(hint, type):
        assert isinstance(value, hint), f"{where}: {value!r} is no {hint.__name__}"
    else:  # pragma: no cover - a new kind of hint in sml.py
        raise AssertionError(f"{where}: the test does not know the hint {hint!r}")


def check_frames(frames: list[sml.Frame], where: str) -> set[str]:
    """Checks every frame, message and body; returns the message types seen."""
    seen: set[str] = set()
    for i, frame in enumerate(frames):
        check_typeddict(frame, sml.Frame, f"{where}[{i}]")
        for j, message in enumerate(frame["messages"]):
            at = f"{where}[{i}].messages[{j}]"
            seen.add(message["type"])
            if message["type"] == "Invalid":
                assert message["body"] == {}, at
            else:
                body_type = sml.BODY_TYPES.get(message["type"])
                assert body_type, f"{at}: no TypedDict for {message['type']}"
                check_typeddict(message["body"], body_type, f"{at}.body")
    return seen


@pytest.mark.parametrize("path", recording_files(), ids=lambda p: p.name)
def test_recording_matches_typeddicts(path: Path) -> None:
    decoder = sml.Decoder()
    frames = decoder.feed(path.read_bytes()) + decoder.finish()
    assert frames
    seen = check_frames(frames, path.name)
    check_typeddict(decoder.stats, sml.DecoderStats, f"{path.name}.stats")
    assert decoder.stats["bytes"] == path.stat().st_size
    if decoder.stats["frames_ok"]:
        assert "GetListResponse" in seen


def test_golden_vectors_match_typeddicts() -> None:
    vectors = json.loads(VECTORS.read_text())
    seen: set[str] = set()
    for v in vectors:
        seen |= check_frames(sml.decode(bytes.fromhex(v["hex"])), v["id"])
    assert {"OpenResponse", "GetListResponse", "CloseResponse"} <= seen


def test_damaged_frames_and_local_time_match_typeddicts() -> None:
    """Error items, an Invalid message and a local timestamp (the optional Time keys)."""
    good = sml.encode(
        [
            {
                "type": "GetListResponse",
                "transaction_id": b"\x01",
                "body": {
                    "server_id": b"\x0a\x01",
                    "act_gateway_time": {
                        "kind": "local_timestamp",
                        "value": 1700000000,
                        "local_offset": 60,
                        "season_time_offset": 0,
                    },
                    "values": [{"obis": "1-0:1.8.0*255", "unit": 30, "scaler": -1, "raw": 5}],
                },
            }
        ]
    )
    broken = bytearray(good)
    broken[-1] ^= 0xFF  # CRC error
    frames = sml.decode(good + bytes(broken) + good[: len(good) // 2])
    assert [f["error"] for f in frames] == [None, "crc", "truncated"]
    check_frames(frames, "stream")
    body = frames[0]["messages"][0]["body"]
    assert isinstance(body, dict)
    assert body["act_gateway_time"]["local_offset"] == 60  # type: ignore[index]


def test_checker_rejects_undeclared_and_missing_keys() -> None:
    """The checker itself: an extra key, a missing key and a wrong type all fail."""
    entry = sml.decode(sml.encode([{"type": "CloseResponse", "body": {}}]))[0]
    check_typeddict(entry, sml.Frame, "frame")
    for bad in ({**entry, "surplus": 1}, {k: v for k, v in entry.items() if k != "ok"}):
        with pytest.raises(AssertionError):
            check_typeddict(bad, sml.Frame, "frame")
    with pytest.raises(AssertionError):
        check_typeddict({**entry, "offset": "0"}, sml.Frame, "frame")
