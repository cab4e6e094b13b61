"""The one textual form of a time that smlogger sends out (JSON API, SSE, export, status)."""

from __future__ import annotations

from datetime import datetime, timezone


def iso(moment: datetime) -> str:
    """UTC ISO-8601 with milliseconds and a Z, which every JSON consumer and JS `Date` parses.

    A naive `moment` is taken as UTC (the database hands back naive UTC times).
    """
    if moment.tzinfo is timezone.utc:  # the usual case (every CSV row): no conversion
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
    text = aware.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
