"""`BaseBook`: the per-meter OBIS dictionaries ("bases") of `smlogger.store.compact`.

Rows in the journal and in the database name their base by a content key. The book keeps every
base it has handed out in a small JSON file next to the journal (written atomically, once per new
base, which happens at the first reading of a meter and when its constant values change), so
that journal records can be rebuilt after a restart even before the database has seen them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from smlogger.reading import Value
from smlogger.store.compact import Base, Delta, Splitter, base_key, base_of, needs_new_base

log = logging.getLogger("smlogger.store")

BASES_FILE = "bases.json"


class BaseBook:
    """Chooses the base of each reading and remembers every base by key (thread-safe)."""

    def __init__(self, directory: Optional[Path] = None) -> None:
        self._path = None if directory is None else Path(directory) / BASES_FILE
        self._lock = threading.Lock()
        self._bases: dict[str, Base] = {}
        self._current: dict[str, str] = {}  # meter id -> key of its current base
        self._splitters: dict[str, Splitter] = {}  # base key -> its Splitter
        if self._path is not None and self._path.exists():
            try:
                loaded = json.loads(self._path.read_text(encoding="utf-8"))
                self._bases = {str(k): dict(v) for k, v in loaded.items()}
            except (OSError, ValueError, AttributeError) as exc:
                log.error("cannot read %s (%s): rows queued before will lack constant values",
                          self._path, exc)  # fmt: skip

    def get(self, key: str) -> Optional[Base]:
        """The base named `key`, if known."""
        with self._lock:
            return self._bases.get(key)

    def add(self, key: str, base: Base) -> None:
        """Remember a base learnt elsewhere (the database)."""
        with self._lock:
            self._bases.setdefault(key, base)

    def split(
        self, meter_id: str, values: Mapping[str, Value], fields: Mapping[str, Any]
    ) -> tuple[str, Delta]:
        """(base key, delta) for a reading; starts a new base when the old one fits badly."""
        with self._lock:
            key = self._current.get(meter_id)
            splitter = self._splitters.get(key) if key is not None else None
            if splitter is not None:
                delta = splitter.split(values, fields)
                if not needs_new_base(delta, values):
                    return key, delta  # type: ignore[return-value]
            base = base_of(values)
            key = base_key(base)
            if key not in self._bases:
                self._bases[key] = base
                self._save()
            self._current[meter_id] = key
            splitter = self._splitters.get(key)
            if splitter is None:
                splitter = self._splitters[key] = Splitter(self._bases[key])
            return key, splitter.split(values, fields)

    def _save(self) -> None:
        if self._path is None:
            return
        tmp = self._path.with_name(self._path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self._bases, fh, separators=(",", ":"), ensure_ascii=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._path)
        except OSError as exc:
            # the database gets the base with the rows; only a crash before that loses the
            # constant values of the queued rows (typed columns and changes stay)
            log.error("cannot save %s: %s", self._path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
