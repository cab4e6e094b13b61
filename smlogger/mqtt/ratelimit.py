"""Per-value rate control for MQTT: throttle, deadband, heartbeat, monotonic counters.

Every decision takes the time from an injected monotonic clock, so tests can step it.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional, Union

from smlogger.mqtt.settings import MqttSettingsError

Published = Union[float, int, str, bool]


@dataclass(frozen=True)
class DeadbandRule:
    """Values whose key matches `pattern` are news only when they move by more than `amount`
    (an absolute amount, or percent of the last published value when `percent`)."""

    pattern: str
    amount: float
    percent: bool

    def exceeded(self, old: float, new: float) -> bool:
        limit = abs(old) * self.amount / 100.0 if self.percent else self.amount
        return abs(new - old) > limit


def _amount(text: str, key: str) -> tuple[float, bool]:
    text = text.strip()
    percent = text.endswith("%")
    try:
        amount = float(text[:-1] if percent else text)
    except ValueError:
        amount = math.nan
    if not math.isfinite(amount) or amount < 0:
        raise MqttSettingsError(
            f"{key}: {text!r} is not a deadband (a number like 0.5, a percentage like 1%, "
            "or rules like p_sum=10,u_*=1%,0)"
        )
    return amount, percent


def parse_deadband(spec: str, key: str = "mqtt.deadband") -> tuple[DeadbandRule, ...]:
    """ "0.5" | "1%" | "p_sum=10,u_*=1%,0": comma-separated rules, `pattern=amount` for the
    values whose key (field name or OBIS key) matches the shell pattern, a bare amount for all
    others. The first matching rule wins; without a bare amount the rest use 0 (any change)."""
    rules: list[DeadbandRule] = []
    default: Optional[DeadbandRule] = None
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        if "=" in part:
            pattern, _, amount_text = part.partition("=")
            if not pattern.strip():
                raise MqttSettingsError(f"{key}: rule {part!r} names no value before '='")
            amount, percent = _amount(amount_text, key)
            rules.append(DeadbandRule(pattern.strip(), amount, percent))
        else:
            if default is not None:
                raise MqttSettingsError(f"{key}: more than one default amount in {spec!r}")
            amount, percent = _amount(part, key)
            default = DeadbandRule("*", amount, percent)
    rules.append(default or DeadbandRule("*", 0.0, False))
    return tuple(rules)


@dataclass
class _Last:
    value: Published
    time: float


@dataclass
class LimiterCounters:
    """How often each rule held a value back."""

    published: int = 0
    throttled: int = 0
    unchanged: int = 0
    held_back: int = 0  # counters that came in lower than already published


@dataclass
class RateLimiter:
    """Decides per (meter, key) whether a new value is published.

    - `interval` > 0: at most one publication per value every `interval` seconds;
    - deadband: only when the value moved beyond the matching rule since the last publication;
    - `heartbeat` > 0: an unchanged value is re-published after that many seconds;
    - counters (energy registers): never published lower than before; a lower value is held
      back and the heartbeat repeats the last published one.
    """

    interval: float
    heartbeat: float
    rules: tuple[DeadbandRule, ...]
    clock: Callable[[], float]
    counters: LimiterCounters = field(default_factory=LimiterCounters)
    _last: dict[tuple[str, str], _Last] = field(default_factory=dict)
    _rule_of: dict[str, DeadbandRule] = field(default_factory=dict)

    def rule(self, key: str) -> DeadbandRule:
        """The deadband rule that applies to `key`."""
        found = self._rule_of.get(key)
        if found is None:
            found = next(r for r in self.rules if fnmatch.fnmatchcase(key, r.pattern))
            self._rule_of[key] = found
        return found

    def offer(
        self, meter: str, key: str, value: Published, *, counter: bool = False
    ) -> Optional[Published]:
        """The value to publish now (the new one, or for a counter that went down the last
        published one on its heartbeat), or None when nothing is to be published."""
        now = self.clock()
        last = self._last.get((meter, key))
        if last is None:
            return self._publish(meter, key, value, now)
        elapsed = now - last.time
        heartbeat_due = self.heartbeat > 0 and elapsed >= self.heartbeat
        if counter and _lower(value, last.value):
            self.counters.held_back += 1
            if heartbeat_due and elapsed >= self.interval:
                return self._publish(meter, key, last.value, now)
            return None
        if elapsed < self.interval:
            self.counters.throttled += 1
            return None
        if self._changed(key, last.value, value) or heartbeat_due:
            return self._publish(meter, key, value, now)
        self.counters.unchanged += 1
        return None

    def last(self, meter: str, key: str) -> Optional[Published]:
        """The value last published for (meter, key)."""
        found = self._last.get((meter, key))
        return None if found is None else found.value

    def forget(self, meter: str, key: str) -> None:
        """Drop what is known about a value (it vanished): it starts afresh if it returns."""
        self._last.pop((meter, key), None)

    def _publish(self, meter: str, key: str, value: Published, now: float) -> Published:
        self._last[(meter, key)] = _Last(value, now)
        self.counters.published += 1
        return value

    def _changed(self, key: str, old: Published, new: Published) -> bool:
        if _numeric(old) and _numeric(new):
            return self.rule(key).exceeded(float(old), float(new))
        return old != new


def _numeric(value: Published) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _lower(new: Published, old: Published) -> bool:
    return _numeric(new) and _numeric(old) and float(new) < float(old)
