"""Meter names: which human name ("house", "heatpump") belongs to which meter id.

Two places give names, and the first one wins:

1. the `meter_names` table, meter id -> name -- for a bus (one IR head, one source) that
   carries several meters, or to name a meter seen only in the database;
2. a `[[meter]]`'s own `name`, for the meter ids its source delivers (or its configured `id`).
   The automatic names `meter`, `meter2`, ... are not shown: they name a source, not a meter.

The id always stays the key (database, API parameters, CSV rows); the name is what people see.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

NAMES_FILE = "meter-names.json"  # in the data dir: names learned by the running logger

_AUTOMATIC = re.compile(r"meter\d*")
_FORBIDDEN = re.compile(r"[,=\x00-\x1f/\\]")


def is_automatic_name(name: str) -> bool:
    """True for the names `load` gives unnamed meters (meter, meter2, ...)."""
    return _AUTOMATIC.fullmatch(name) is not None


def check_name(name: str) -> str:
    """`name` stripped; ValueError when it is empty or has a character names may not have."""
    text = name.strip()
    if not text:
        raise ValueError("a meter name may not be empty")
    if _FORBIDDEN.search(text):
        raise ValueError(
            f"meter name {text!r} may not contain ',', '=', '/', '\\' or control characters"
        )
    return text


def parse_name_table(value: object) -> dict[str, str]:
    """`meter_names` as a dict: a TOML table {id = name} or the text "ID=NAME,ID=NAME"."""
    if isinstance(value, Mapping):
        pairs = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, str):
        pairs = []
        for item in value.split(","):
            if not item.strip():
                continue
            meter_id, sep, name = item.partition("=")
            if not sep:
                raise ValueError(f"{item.strip()!r} is not ID=NAME")
            pairs.append((meter_id, name))
    else:
        raise ValueError("expected a table of meter id = name, or ID=NAME,ID=NAME")
    table: dict[str, str] = {}
    for meter_id, name in pairs:
        key = meter_id.strip().lower()
        if not key:
            raise ValueError("a meter id may not be empty")
        if not isinstance(name, str):
            raise ValueError(f"the name of {key} must be a string")
        table[key] = check_name(name)
    return table


def format_name_table(table: Mapping[str, str]) -> str:
    """The normalised text form of a name table ("" for none)."""
    return ",".join(f"{k}={v}" for k, v in table.items())


class MeterNames:
    """Thread-safe meter id -> name, from the name table and the named sources' meter ids."""

    def __init__(
        self,
        by_id: Optional[Mapping[str, str]] = None,
        by_source: Optional[Mapping[str, str]] = None,
    ) -> None:
        self._lock = threading.Lock()
        self._table = {k.lower(): v for k, v in (by_id or {}).items()}
        self._sources = {k: v for k, v in (by_source or {}).items() if not is_automatic_name(v)}
        self._learned: dict[str, str] = {}
        self.on_learn: Optional[Callable[[dict[str, str]], None]] = None

    @classmethod
    def from_config(cls, table: Mapping[str, str], meters: Iterable[tuple[str, str]]) -> MeterNames:
        """From the name table and (meter name, configured meter id or "") per [[meter]]."""
        names = cls(table, {name: name for name, _id in meters})
        for name, meter_id in meters:
            if meter_id:
                names.learn(name, meter_id)
        return names

    def learn(self, source: str, meter_id: str) -> None:
        """`meter_id` arrived from source `source`: it takes that source's name, if any."""
        name = self._sources.get(source)
        if name is None:
            return
        with self._lock:
            if self._learned.get(meter_id) == name:
                return
            self._learned[meter_id] = name
            learned = dict(self._learned)
        if self.on_learn is not None:
            self.on_learn(learned)

    def name(self, meter_id: str) -> Optional[str]:
        """The name of `meter_id`, or None when it has none."""
        found = self._table.get(meter_id.lower())
        if found is not None:
            return found
        with self._lock:
            return self._learned.get(meter_id)

    def find(self, text: str) -> Optional[str]:
        """The meter id named `text` (exact name), or None."""
        for meter_id, name in self._table.items():
            if name == text:
                return meter_id
        with self._lock:
            for meter_id, name in self._learned.items():
                if name == text:
                    return meter_id
        return None

    def all(self) -> dict[str, str]:
        """Every known id -> name."""
        with self._lock:
            out = dict(self._learned)
        out.update(self._table)
        return out


def read_names_file(path: Path) -> dict[str, str]:
    """Names a running logger learned (see `write_names_file`); {} when there are none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, str)}


def write_names_file(path: Path, learned: Mapping[str, str]) -> None:
    """Remember which meter id had which [[meter]] name, for `smlogger export` (which runs
    without the meters); written only when a name is learned, so it costs no SD-card wear."""
    merged = {**read_names_file(path), **learned}
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot remember meter names in %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
