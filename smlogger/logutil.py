"""Quiet logging for a Pi's journal: one line per change of state, repeats counted, not printed.

`StateLog` follows one condition ("database unreadable", "csv: cannot write"): the first failure
logs one line with the reason, further failures are counted and summarised at most once per
interval ("... (repeated 48 times in 60 s)"), a changed reason is logged (rate-limited too), and
the recovery logs one line. Tracebacks go to DEBUG only. `describe` names the real cause of an
exception, including the one a later exception hid (`__context__`), such as a failed ROLLBACK
after a full disk.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional, Union

DEFAULT_INTERVAL_S = 60.0


def describe(exc: BaseException) -> str:
    """`Type: message` of the exception, followed by what it hid or was caused by.

    A failing ROLLBACK after "database or disk is full" raises "cannot rollback - no transaction
    is active" with the disk-full error as its context: both are named, the cause first.
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen and len(parts) < 4:
        seen.add(id(current))
        text = str(current).strip()
        parts.append(f"{type(current).__name__}: {text}" if text else type(current).__name__)
        if current.__suppress_context__ and current.__cause__ is None:
            break
        current = current.__cause__ or current.__context__
    if len(parts) == 1:
        return parts[0]
    # the innermost exception is the real cause; the outer ones say what failed because of it
    return f"{parts[-1]} (then {'; '.join(reversed(parts[:-1]))})"


class StateLog:
    """Logs a condition's start, its recovery, and a counted summary of the repeats in between.

    Thread-safe: the web workers, the writer and the sources may report the same condition.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.interval_s = interval_s
        self.level = level
        self.clock = clock
        self._lock = threading.Lock()
        self._failing = False
        self._since = 0.0
        self._last_emit = 0.0
        self._reason = ""
        self._repeats = 0  # failures not logged since the last line
        self._failures = 0  # all failures of this episode

    @property
    def failing(self) -> bool:
        """True between a failure and the next `ok()`."""
        with self._lock:
            return self._failing

    @property
    def reason(self) -> Optional[str]:
        """The last reason while failing, else None."""
        with self._lock:
            return self._reason if self._failing else None

    def failed(self, reason: Union[str, BaseException]) -> bool:
        """Report one failure; True when a line was logged for it."""
        text = describe(reason) if isinstance(reason, BaseException) else reason
        now = self.clock()
        with self._lock:
            self._failures += 1
            if not self._failing:
                self._failing = True
                self._since = self._last_emit = now
                self._reason, self._repeats = text, 0
                line = f"{self.what}: {text}"
            elif now - self._last_emit >= self.interval_s and (
                self._repeats or text != self._reason
            ):
                line = f"{self.what}: {text}"
                if self._repeats:
                    line += f" (repeated {self._repeats} times in {now - self._last_emit:.0f} s)"
                self._reason, self._repeats, self._last_emit = text, 0, now
            else:
                # within the interval: counted and summarised later (a new reason included)
                self._repeats += 1
                self._reason = text
                line = ""
        if not line:
            return False
        self.logger.log(self.level, "%s", line)
        if isinstance(reason, BaseException) and self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("%s: traceback", self.what, exc_info=reason)
        return True

    def ok(self, message: str = "recovered") -> bool:
        """Report success; logs one line when it ends a failure. True when it did."""
        now = self.clock()
        with self._lock:
            if not self._failing:
                return False
            failures, since = self._failures, self._since
            self._failing, self._failures, self._repeats = False, 0, 0
        self.logger.info(
            "%s: %s after %.0f s (%d failure%s)",
            self.what,
            message,
            now - since,
            failures,
            "" if failures == 1 else "s",
        )
        return True
