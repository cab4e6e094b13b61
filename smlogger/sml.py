"""SML (Smart Message Language v1) decoding and encoding - the public API.

The work happens in the Rust extension ``smlogger._sml_core``; this module
re-exports it with types and adds small helpers for callers.

>>> from smlogger import sml
>>> frames = sml.decode(open("meter.bin", "rb").read())        # doctest: +SKIP
>>> [v["obis"] for f in frames for v in sml.entries(f)]         # doctest: +SKIP

Bad input never raises: a damaged frame is an item with ``ok: False`` and the
reason in ``error`` (``"crc" | "truncated" | "escape" | "parse" | "too_long"``)
and ``detail``. Feeding the same bytes whole, byte by byte or in any chunks
gives the same frames.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, Literal, Optional, Union, cast

from smlogger._sml_core import (
    DEFAULT_MAX_FRAME,
    Decoder,
    count_frames,
    crc16_kermit,
    crc16_x25,
    decode,
    decode_values,
    encode,
    feed_values,
    frame,
    obis_from_str,
    obis_to_str,
    unit_symbol,
)

if sys.version_info >= (3, 11):
    from typing import NotRequired, TypedDict
else:  # pragma: no cover - exercised on older interpreters only
    from typing_extensions import NotRequired, TypedDict

__all__ = [
    "BODY_TYPES",
    "DEFAULT_MAX_FRAME",
    "VALUE_FIELDS",
    "CloseResponseBody",
    "CrcName",
    "Decoder",
    "DecoderStats",
    "Entry",
    "Frame",
    "GetListResponseBody",
    "Message",
    "OpenResponseBody",
    "Time",
    "ValueRow",
    "ValuesFrame",
    "ValuesList",
    "count_frames",
    "crc16_kermit",
    "crc16_x25",
    "decode",
    "decode_values",
    "encode",
    "entries",
    "feed_values",
    "format_value",
    "frame",
    "get_list_responses",
    "obis_from_str",
    "obis_to_str",
    "unit_symbol",
]

CrcName = Literal["auto", "x25", "kermit"]
ErrorName = Literal["crc", "truncated", "escape", "parse", "too_long"]


class Time(TypedDict):
    """SML_Time. ``sec_index`` is the meter's seconds counter, not a Unix time."""

    kind: Literal["sec_index", "timestamp", "local_timestamp"]
    value: int
    local_offset: NotRequired[int]
    season_time_offset: NotRequired[int]


Raw = Union[int, bool, bytes, Time, None]
Scaled = Union[int, float, bool, bytes, None]


ValueRow = tuple[int, bytes, str, Scaled, Optional[str]]
"""One row of ``decode_values``: the frame's offset, the GetListResponse's
server id, and the entry's ``obis``, ``value`` and ``unit_symbol``."""

ValuesList = tuple[bool, bytes, dict[str, Any], dict[str, int]]
"""One GetListResponse from ``feed_values``: ``(crc_ok, server_id, values, statuses)``, with
the entries' values by ``obis`` as objects of the ``value_type`` given (their ``__dict__``:
``obis``, ``value``, ``unit`` = the entry's ``unit_symbol``, ``raw``, ``scaler``) and the status
words of the entries that have one, by ``obis``."""

ValuesFrame = tuple[int, bool, list[ValuesList]]
"""One frame from ``feed_values(decoder, data, value_type)``: ``(offset, ok, lists)``, with the
frame's ``offset`` and one `ValuesList` per GetListResponse of a good frame (none for a damaged
one). What the reading model takes from a frame, without the dicts around it (for replays at
full speed). A register that repeats its value gets the same (immutable) value object as in the
frame before."""

#: Column names of a ``ValueRow``, e.g. ``pandas.DataFrame(rows, columns=VALUE_FIELDS)``.
VALUE_FIELDS = ("offset", "server_id", "obis", "value", "unit")


class Entry(TypedDict):
    """One SML_ListEntry of a GetListResponse."""

    obis: str
    status: Optional[int]
    val_time: Optional[Time]
    unit: Optional[int]
    unit_symbol: Optional[str]
    scaler: Optional[int]
    raw: Raw
    value: Scaled
    value_signature: Optional[bytes]
    quirk: Optional[str]


class GetListResponseBody(TypedDict):
    """Body of a GetListResponse: one meter reading. Every key is always present."""

    client_id: Optional[bytes]
    server_id: bytes
    list_name: Optional[str]
    act_sensor_time: Optional[Time]
    values: list[Entry]
    list_signature: Optional[bytes]
    act_gateway_time: Optional[Time]


class OpenResponseBody(TypedDict):
    """Body of an OpenResponse (starts every SML file)."""

    codepage: Optional[bytes]
    client_id: Optional[bytes]
    req_file_id: bytes
    server_id: bytes
    ref_time: Optional[Time]
    sml_version: Optional[int]


class CloseResponseBody(TypedDict):
    """Body of a CloseResponse (ends every SML file)."""

    global_signature: Optional[bytes]


class Message(TypedDict):
    """One SML message. ``type`` is ``"Invalid"`` (with ``error``) when it could not be read;
    ``body`` is shaped by ``type`` (see ``BODY_TYPES``)."""

    type: str
    transaction_id: Optional[bytes]
    group_no: Optional[int]
    abort_on_error: Optional[int]
    crc_ok: bool
    error: Optional[str]
    body: dict[str, object]


class Frame(TypedDict):
    """One transport frame: good (``ok``) or the reason it is not (``error``, ``detail``)."""

    offset: int
    length: int
    ok: bool
    error: Optional[ErrorName]
    detail: Optional[str]
    crc: Optional[Literal["x25", "kermit"]]
    messages: list[Message]


class DecoderStats(TypedDict):
    """``Decoder.stats``: counters since the decoder was created."""

    bytes: int
    frames_ok: int
    crc_errors: int
    truncated: int
    escape_errors: int
    too_long: int
    parse_errors: int
    discarded_bytes: int
    messages: int
    message_errors: int
    message_crc_errors: int
    crc_x25: int
    crc_kermit: int
    buffered: int


#: The TypedDict of ``Message["body"]`` for the message types meters send.
#: ``_sml_core`` (``to_py.rs``) writes exactly these keys; tests/test_sml_contract.py checks it.
BODY_TYPES: dict[str, type] = {
    "OpenResponse": OpenResponseBody,
    "GetListResponse": GetListResponseBody,
    "CloseResponse": CloseResponseBody,
}


def get_list_responses(frame: Frame, *, require_crc: bool = True) -> Iterator[GetListResponseBody]:
    """Bodies of the frame's GetListResponse messages (any number, any position).

    With ``require_crc`` (the default) messages whose own CRC failed are skipped.
    """
    for message in frame["messages"]:
        if message["type"] == "GetListResponse" and (message["crc_ok"] or not require_crc):
            # The decoder builds this body with exactly GetListResponseBody's keys.
            yield cast(GetListResponseBody, message["body"])


def entries(frame: Frame, *, require_crc: bool = True) -> Iterator[Entry]:
    """All list entries of all GetListResponses in a frame."""
    # get_list_responses() inlined: one generator per frame instead of two
    # (this runs for every frame of a recording).
    for message in frame["messages"]:
        if message["type"] == "GetListResponse" and (message["crc_ok"] or not require_crc):
            yield from cast(GetListResponseBody, message["body"])["values"]


def format_value(entry: Entry) -> str:
    """The value as text: numbers with as many decimals as the scaler implies
    (``libsml``'s ``sml_server`` convention), octet strings as text when they
    are printable ASCII and as hex otherwise."""
    value = entry["value"]
    if value is None:
        return ""
    if isinstance(value, bytes):
        if value and all(0x20 <= b < 0x7F for b in value):
            return value.decode("ascii")
        return value.hex()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        scaler = entry["scaler"] or 0
        return f"{value:.{max(0, -scaler)}f}"
    return str(value)


def iter_frames(chunks: Iterable[bytes], *, crc: CrcName = "auto") -> Iterator[Frame]:
    """Decodes a stream of chunks, then flushes the decoder at the end."""
    decoder = Decoder(crc)
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.finish()


__all__ += ["iter_frames"]
