"""Polling helper shared by the tests that wait for threads, processes and servers."""

from __future__ import annotations

import time
from typing import Any, Callable


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 20.0,
    what: str = "it",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> Any:
    """Polls `predicate` until it returns something truthy and returns that; an
    exception listed in `ignore` counts as "not yet" (files that do not exist yet)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            result = predicate()
        except ignore:
            result = None
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
