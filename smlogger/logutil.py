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


def distinct(before: float, after: float) -> tuple[str, str]:
    """Two numbers as text, each with the digits it really has (6 at least, 12 at most), and
    in any case enough that two different numbers never print alike.

    `22462.4` and `22462.35` print as "22462.4" and "22462.35", not as "22462.4" twice (%g) nor
    as "22462.4" and "22462.3" (rounded to 6 digits).
    """

    def exact(text: str, value: float) -> bool:
        return abs(float(text) - value) <= 1e-12 * max(1.0, abs(value))

    for digits in range(6, 13):
        a, b = f"{before:.{digits}g}", f"{after:.{digits}g}"
        if exact(a, before) and exact(b, after) and (a != b or before == after):
            return a, b
    for digits in range(6, 18):  # binary fractions: the fewest digits that still differ
        a, b = f"{before:.{digits}g}", f"{after:.{digits}g}"
        if a != b:
            return a, b
    return repr(before), repr(after)


def describe(exc: BaseException) -> str:
    """`Type: message` of the exception, followed by what it hid or was caused by.

    A failing ROLLBACK after "database or disk is full" raises "cannot rollback - no transaction
    is active" with the disk-full error as its context: both are named, the cause first.
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        text = str(current).strip()
        part = f"{type(current).__name__}: {text}" if text else type(current).__name__
        if not parts or parts[-1] != part:  # wrappers (peewee over sqlite3) repeat the text
            parts.append(part)
        if current.__suppress_context__ and current.__cause__ is None:
            break
        current = current.__cause__ or current.__context__
    if len(parts) == 1:
        return parts[0]
    # the innermost exception is the real cause, the outermost what failed because of it;
    # the wrappers in between add nothing a reader needs
    return f"{parts[-1]} (then {parts[0]})"


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
        self._quiet = False  # this episode is a flap of the last one: its recovery is not news
        self._recovered = float("-inf")  # when the last episode ended

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

    def failed(
        self, reason: Union[str, BaseException], exc: Optional[BaseException] = None
    ) -> bool:
        """Report one failure (its traceback, `exc` or `reason`, at DEBUG); True when logged."""
        if isinstance(reason, BaseException):
            exc, text = reason, describe(reason)
        else:
            text = reason
        now = self.clock()
        with self._lock:
            self._failures += 1
            if (
                not self._failing
                and text == self._reason
                and now - self._recovered < self.interval_s
            ):
                # the same trouble again soon after it cleared (a flapping device or link):
                # counted into the next summary instead of two more lines per flap
                self._failing = self._quiet = True
                self._since = now
                self._repeats += 1
                line = ""
            elif not self._failing:
                self._failing, self._quiet = True, False
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
        if exc is not None and self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("%s: traceback", self.what, exc_info=exc)
        return True

    def ok(self, message: str = "recovered") -> bool:
        """Report success; logs one line when it ends a failure. True when it did."""
        now = self.clock()
        with self._lock:
            if not self._failing:
                return False
            failures, since, quiet = self._failures, self._since, self._quiet
            self._failing, self._failures, self._recovered = False, 0, now
            if quiet:
                return False
        self.logger.info(
            "%s: %s after %.0f s (%d failure%s)",
            self.what,
            message,
            now - since,
            failures,
            "" if failures == 1 else "s",
        )
        return True
