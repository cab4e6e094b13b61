"""systemd service notifications (READY, WATCHDOG, STATUS, STOPPING) without a dependency.

The protocol is one datagram of `KEY=value` lines to the AF_UNIX socket named in $NOTIFY_SOCKET
(a leading '@' means the abstract namespace). Outside systemd every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Optional

log = logging.getLogger(__name__)


class Notifier:
    """sd_notify(3) over $NOTIFY_SOCKET: readiness, status text and watchdog pings.

    Does nothing when not started by systemd.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self.address: Optional[str] = address or None
        self.watchdog_interval: Optional[float] = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            # ping at half the timeout, as sd_watchdog_enabled(3) recommends
            self.watchdog_interval = int(usec) / 1e6 / 2
        self._last_ping = 0.0
        self._sock: Optional[socket.socket] = None

    @property
    def enabled(self) -> bool:
        """True when systemd gave a notification socket."""
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send KEY=value fields; False if there is no socket or sending failed."""
        if self.address is None:
            return False
        message = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, target)
            return True
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", self.address, exc)
            return False

    def ready(self, status: str = "") -> bool:
        """Tell systemd the service is up (READY=1), with an optional status text."""
        fields = {"READY": "1", "MAINPID": str(os.getpid())}
        if status:
            fields["STATUS"] = status
        return self.send(**fields)

    def status(self, text: str) -> bool:
        """Set the status text `systemctl status` shows."""
        return self.send(STATUS=text)

    def stopping(self) -> bool:
        """Tell systemd that shutdown has begun."""
        return self.send(STOPPING="1", STATUS="stopping: flushing sinks")

    def watchdog(self, healthy: bool = True) -> bool:
        """Ping if due and healthy; a hung or broken logger stops pinging and gets restarted."""
        if self.watchdog_interval is None or not healthy:
            return False
        now = time.monotonic()
        if now - self._last_ping < self.watchdog_interval:
            return False
        self._last_ping = now
        return self.send(WATCHDOG="1")

    def close(self) -> None:
        """Close the socket; safe to call twice."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
