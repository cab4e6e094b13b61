"""A bounded, thread-safe queue of messages waiting for the broker.

Putting never blocks: when the queue is full the oldest live message (a value or state that a
newer one supersedes anyway) is dropped and counted; availability and discovery messages are
only dropped when nothing else is left to drop.
"""

from __future__ import annotations

import threading
from collections import deque

from smlogger.mqtt.messages import Message


class Outbox:
    """FIFO of at most `maxsize` messages; see the module docstring for what is dropped."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[Message] = deque()
        self._lock = threading.Lock()
        self.dropped = 0
        self.high_water = 0

    def put(self, messages: list[Message]) -> int:
        """Queue `messages`; returns how many older ones had to be dropped for them."""
        dropped = 0
        with self._lock:
            for message in messages:
                if len(self._items) >= self.maxsize:
                    self._drop_one()
                    dropped += 1
                self._items.append(message)
            self.high_water = max(self.high_water, len(self._items))
            self.dropped += dropped
        return dropped

    def _drop_one(self) -> None:
        for index, queued in enumerate(self._items):
            if queued.live:
                del self._items[index]
                return
        self._items.popleft()

    def take(self, limit: int) -> list[Message]:
        """Up to `limit` messages from the front."""
        with self._lock:
            count = min(limit, len(self._items))
            return [self._items.popleft() for _ in range(count)]

    def push_front(self, messages: list[Message]) -> None:
        """Give back messages that could not be sent (order kept)."""
        with self._lock:
            self._items.extendleft(reversed(messages))

    def topics(self) -> set[str]:
        with self._lock:
            return {m.topic for m in self._items}

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
