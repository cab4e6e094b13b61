"""Time and step parameters of the HTTP API (also `smlogger export --from/--to`), and ApiError."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

EPOCH_MAX = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last instant datetime can hold
# accepted query times; the margin to datetime's limits keeps range arithmetic from overflowing
TIME_MIN = datetime(1970, 1, 1, tzinfo=timezone.utc)
TIME_MAX = datetime(9998, 12, 31, tzinfo=timezone.utc)


class ApiError(Exception):
    """A request the API refuses; becomes a JSON error response, never a 500."""

    def __init__(
        self,
        status: int,
        message: str,
        parameter: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.parameter = parameter
        self.headers = dict(headers or {})


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?", re.IGNORECASE)
_DURATION_UNITS = {
    None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0,
    "h": 3600.0, "d": 86400.0, "w": 604800.0,
}  # fmt: skip


def parse_time(name: str, text: str, now: datetime) -> datetime:
    """ISO-8601 (no offset = UTC), epoch seconds, `now`, or relative like `-24h`, `-7d`."""
    moment = _parse_moment(name, text, now)
    if not TIME_MIN <= moment <= TIME_MAX:
        raise ApiError(400, f"parameter '{name}' is outside 1970..9998", name)
    return moment


def _parse_moment(name: str, text: str, now: datetime) -> datetime:
    value = text.strip()
    if not value:
        raise ApiError(400, f"parameter '{name}' is empty", name)
    if value.lower() == "now":
        return now
    if value.startswith("-"):
        match = _DURATION.fullmatch(value[1:])
        if match:
            seconds = float(match.group(1)) * _DURATION_UNITS[_unit_key(match.group(2))]
            try:
                return now - timedelta(seconds=seconds)
            except OverflowError:
                raise ApiError(400, f"parameter '{name}' is too far in the past", name) from None
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        if not math.isfinite(number) or not 0 <= number <= EPOCH_MAX:
            hint = " (milliseconds? seconds are expected)" if number > EPOCH_MAX else ""
            raise ApiError(400, f"parameter '{name}' is not a valid epoch time{hint}", name)
        return datetime.fromtimestamp(number, timezone.utc)
    iso_text = value[:-1] + "+00:00" if value[-1] in "zZ" else value
    try:
        moment = datetime.fromisoformat(iso_text)
    except ValueError:
        raise ApiError(
            400,
            f"parameter '{name}' must be ISO-8601 (2024-05-01T12:00:00Z), epoch seconds, "
            f"'now' or relative like '-24h'",
            name,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _unit_key(unit: str | None) -> str | None:
    return unit.lower() if unit else None


def parse_step(text: str) -> int:
    """Seconds per history point: `300`, `90s`, `5m`, `1h`, `1d`."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ApiError(400, "parameter 'step' must be seconds or like '5m', '1h', '1d'", "step")
    seconds = float(match.group(1)) * _DURATION_UNITS[_unit_key(match.group(2))]
    # more than 308 digits make float() infinite, which int() cannot take (found by Hypothesis)
    if (
        not math.isfinite(seconds)
        or seconds < 1
        or seconds != int(seconds)
        or seconds > 366 * 86400
    ):
        raise ApiError(400, "parameter 'step' must be a whole number of seconds >= 1", "step")
    return int(seconds)
