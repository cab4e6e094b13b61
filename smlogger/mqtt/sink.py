"""The MQTT sink: readings in, messages out through paho-mqtt, never blocking the pipeline.

write() only runs the rate rules and appends to a bounded outbox; a publisher thread hands the
outbox to paho while the broker is connected and does the periodic work. paho's own network
thread reconnects with exponential backoff forever; every successful (re)connect re-sends the
discovery configs, availability and the latest retained values, as does Home Assistant
announcing itself on `<discovery_prefix>/status`.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from smlogger.mqtt.messages import Diagnostics, Message, MessageBuilder
from smlogger.mqtt.outbox import Outbox
from smlogger.mqtt.settings import MqttSettings
from smlogger.reading import Reading

log = logging.getLogger(__name__)

MAX_PENDING = 100  # messages handed to paho but not yet acknowledged
TICK_S = 1.0
LOGGER_STATS_S = 60.0
CLOSE_WAIT_S = 2.0
# CONNACK codes (MQTT 3.1.1 4/5 as paho maps them to 5.0 reason codes 134/135)
_AUTH_REFUSED = (134, 135)


class MqttSink:
    """Publishes readings to an MQTT broker with Home Assistant discovery (see the package
    docs for the topic tree). Implements the pipeline's Sink protocol."""

    name = "mqtt"
    # live values at MQTT's own rate (mqtt.interval), not the database's store_interval
    every_reading = True

    def __init__(
        self,
        settings: MqttSettings,
        *,
        diagnostics: Optional[Diagnostics] = None,
        source_of: Optional[Callable[[str], Optional[str]]] = None,
        clock: Callable[[], float] = time.monotonic,
        start: bool = True,
        check: bool = False,
    ) -> None:
        self.settings = settings
        # `check` (smlogger mqtt-test): a second connection beside a possibly running logger;
        # it must neither kick that logger off (own client id) nor touch availability
        self.check = check
        self.broker = settings.broker
        self.clock = clock
        self.builder = MessageBuilder(
            settings, clock=clock, diagnostics=diagnostics, source_of=source_of
        )
        self.topics = self.builder.topics
        self.outbox = Outbox(settings.queue_size)
        self._lock = threading.Lock()  # guards the builder and the counters below
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pending: dict[int, int] = {}  # mid -> qos
        self._acked_early: set[int] = set()
        self._connected = False
        self._subscribed: set[str] = set()  # config patterns subscribed on this connection
        self._resync = False
        self._ha_online = False
        self.state = "connecting"
        self.detail = f"connecting to {self.broker.display()}"
        self.since = datetime.now(timezone.utc)
        self.readings = 0
        self.published = 0
        self.connects = 0
        self.disconnects = 0
        self.connect_failures = 0
        self.discovery_sent = 0
        self.last_error: Optional[str] = None
        self._client = self._make_client()
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._started = False
        if start:
            self.start()

    # ---- set-up -----------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        settings = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id + ("-check" if self.check else ""),
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            client.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                certfile=str(settings.client_cert) if settings.client_cert else None,
                keyfile=str(settings.client_key) if settings.client_key else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        if not self.check:
            # a killed logger shows up as offline: the broker publishes this for us
            client.will_set(self.topics.logger_availability, "offline", qos=1, retain=True)
        client.reconnect_delay_set(
            max(1, round(settings.reconnect_min)), max(1, round(settings.reconnect_max))
        )
        client.max_inflight_messages_set(min(MAX_PENDING, 20))
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        """Start connecting (in the background) and publishing."""
        if self._started:
            return
        self._started = True
        log.info("mqtt: publishing to %s", self.broker.display())
        self._client.connect_async(self.broker.host, self.broker.port, self.settings.keepalive)
        self._client.loop_start()
        self._thread.start()

    # ---- paho callbacks (paho's network thread) ------------------------------------------

    def _set_state(self, state: str, detail: str, level: int = logging.WARNING) -> None:
        with self._lock:
            changed = state != self.state
            self.state = state
            self.detail = detail
            if changed:
                self.since = datetime.now(timezone.utc)
        if changed:
            # one log line per change of state, never one per retry
            log.log(level, "mqtt: %s (%s)", state, detail)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        if reason.is_failure:
            with self._lock:
                self.connect_failures += 1
                self.last_error = f"broker refused the connection: {reason}"
            if reason.value in _AUTH_REFUSED:
                self._set_state(
                    "not authorised",
                    f"{self.broker.display()} refused the user name or password ({reason}); "
                    "check mqtt.url / mqtt.password_file; retrying with backoff",
                )
            else:
                self._set_state("refused", f"{self.broker.display()} refused: {reason}")
            return
        with self._lock:
            self.connects += 1
            self._connected = True
            self._resync = True
        if self.settings.discovery:
            client.subscribe(self.topics.ha_status, qos=1)
        self._set_state("connected", f"connected to {self.broker.display()}", logging.INFO)
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        with self._lock:
            self.connect_failures += 1
            first = self.state != "unreachable"
        if not first:
            return  # the reason was found and logged on the first failure
        reason = self._diagnose()
        with self._lock:
            self.last_error = f"cannot connect to {self.broker.display()}: {reason}"
        self._set_state(
            "unreachable",
            f"cannot connect to {self.broker.display()}: {reason}; retrying with backoff",
        )

    def _diagnose(self) -> str:
        """Why paho could not connect (it does not say): try the TCP connection ourselves."""
        try:
            with socket.create_connection((self.broker.host, self.broker.port), timeout=3):
                pass
        except socket.gaierror:
            return f"host name {self.broker.host!r} not found"
        except ConnectionRefusedError:
            return "connection refused (broker down or wrong port)"
        except OSError as exc:
            return f"{exc.strerror or type(exc).__name__} (network or firewall)"
        if self.broker.tls:
            return "TLS handshake failed (untrusted certificate? set mqtt.ca_file)"
        return "the broker closed the connection"

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        with self._lock:
            was_connected = self._connected
            self._connected = False
            self._subscribed.clear()
            # QoS 0 messages in flight are gone with the connection; QoS 1/2 ones paho resends
            self._pending = {mid: qos for mid, qos in self._pending.items() if qos > 0}
            if was_connected:
                self.disconnects += 1
                self.last_error = f"connection lost: {reason}"
        if was_connected and not self._stopping.is_set():
            self._set_state("disconnected", f"connection lost ({reason}); reconnecting")

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        with self._lock:
            self.published += 1
            if self._pending.pop(mid, None) is None:
                self._acked_early.add(mid)
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic.endswith("/config"):
            if message.retain and message.payload:
                with self._lock:
                    self.builder.found_config(message.topic)
            return
        # a retained "online" is old news: discovery went out on connect already
        if (
            message.topic == self.topics.ha_status
            and message.payload.strip() == b"online"
            and not message.retain
        ):
            log.info("mqtt: Home Assistant came online; re-sending discovery")
            with self._lock:
                self._ha_online = True
            self._wake.set()

    # ---- Sink protocol (the pipeline's sink thread) -----------------------------------------

    def write(self, reading: Reading) -> None:
        """Apply the rate rules and queue the resulting messages; never blocks on the network."""
        with self._lock:
            self.readings += 1
            messages = self.builder.reading(reading)
        self._queue(messages)

    def flush(self) -> None:
        """Nothing to flush: the publisher thread sends as soon as it can."""
        self._wake.set()

    def close(self) -> None:
        """Send what is queued (briefly), mark the logger offline, disconnect."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(CLOSE_WAIT_S + 3.0)
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            # paho 2.x closes its wake-up socket pair only in Client.__del__; the client sits in
            # a reference cycle with our callbacks, so without this the pair would wait for the
            # cyclic GC and be reported as leaked sockets
            reset = getattr(self._client, "_reset_sockets", None)
            if callable(reset):
                reset()

    def status(self) -> dict[str, Any]:
        """State, counters and figures for /api/status, /metrics and the page."""
        with self._lock:
            limiter = self.builder.limiter.counters
            return {
                "state": self.state,
                "detail": self.detail,
                "since": self.since.isoformat(),
                "broker": self.broker.display(),
                "connected": 1 if self._connected else 0,
                # /healthz: a broker problem degrades the logger, it does not fail the meters
                "degraded": self.state != "connected",
                "queue_depth": len(self.outbox),
                "queue_size": self.outbox.maxsize,
                "pending": len(self._pending),
                "client_id": self.settings.client_id,
                "written": self.readings,
                "published": self.published,
                "dropped": self.outbox.dropped,
                "connects": self.connects,
                "disconnects": self.disconnects,
                "connect_failures": self.connect_failures,
                "discovery_sent": self.discovery_sent,
                "discovery_removed": self.builder.removed,
                "throttled": limiter.throttled,
                "unchanged": limiter.unchanged,
                "counter_held_back": limiter.held_back,
                "last_error": self.last_error,
                "meters": self.builder.meters(),
            }

    # ---- publishing (the publisher thread) --------------------------------------------------

    def _queue(self, messages: list[Message]) -> None:
        if self.check:
            messages = self._without_availability(messages)
        if not messages:
            return
        dropped = self.outbox.put(messages)
        if dropped:
            total = self.outbox.dropped
            if total == dropped or total // 1000 != (total - dropped) // 1000:
                log.warning(
                    "mqtt: queue full (%d messages), dropped %d oldest so far",
                    self.outbox.maxsize,
                    total,
                )
        self._wake.set()

    def _without_availability(self, messages: list[Message]) -> list[Message]:
        return [m for m in messages if not m.topic.endswith("/availability")]

    def _send(self, message: Message) -> bool:
        try:
            info = self._client.publish(
                message.topic, message.payload, qos=message.qos, retain=message.retain
            )
        except (ValueError, RuntimeError) as exc:
            with self._lock:
                self.last_error = f"publish to {message.topic} failed: {exc}"
            return True  # a message paho rejects would be rejected again; skip it
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        with self._lock:
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
            else:
                self._pending[info.mid] = message.qos
        return True

    def _send_all(self, messages: list[Message]) -> bool:
        for index, message in enumerate(messages):
            if not self._send(message):
                self.outbox.push_front([m for m in messages[index:] if m.live])
                return False
        return True

    def _resync_now(self) -> None:
        with self._lock:
            if not (self._resync or self._ha_online):
                return
            self._resync = self._ha_online = False
            # values still queued are newer than what the builder remembers from before
            announce = self.builder.announce()
            retained = self.builder.retained(skip=self.outbox.topics())
            self.discovery_sent += sum(1 for m in announce if m.payload.startswith("{"))
        if self.check:
            announce = self._without_availability(announce)
        self._send_all(announce + retained)

    def _subscribe_configs(self) -> None:
        """Ask for the retained discovery configs of each meter once per connection: configs
        an earlier run left for values the meter no longer sends get removed."""
        if not self.settings.discovery or self.check:
            return
        with self._lock:
            patterns = [p for p in self.builder.config_patterns() if p not in self._subscribed]
            self._subscribed.update(patterns)
        for pattern in patterns:
            self._client.subscribe(pattern, qos=1)

    def _drain(self) -> None:
        while self._connected:
            with self._lock:
                room = MAX_PENDING - len(self._pending)
            if room <= 0:
                return
            batch = self.outbox.take(room)
            if not batch:
                return
            for index, message in enumerate(batch):
                if not self._send(message):
                    self.outbox.push_front(batch[index:])
                    return

    def _run(self) -> None:
        last_tick = -TICK_S
        last_stats = -LOGGER_STATS_S
        while not self._stopping.is_set():
            self._wake.wait(TICK_S)
            self._wake.clear()
            try:
                if self._connected:
                    self._resync_now()
                    self._subscribe_configs()
                    self._drain()
                now = self.clock()
                if now - last_tick >= TICK_S:
                    last_tick = now
                    with self._lock:
                        messages = self.builder.tick()
                        if now - last_stats >= LOGGER_STATS_S and self._connected:
                            last_stats = now
                            messages += self.builder.logger_stats(self.outbox.dropped)
                    self._queue(messages)
            except Exception:
                # the publisher must outlive any bug in one message; the reason is logged
                log.exception("mqtt: publisher error")
        self._final()

    def idle(self) -> bool:
        """Nothing queued and nothing waiting for the broker's acknowledgement."""
        with self._lock:
            return not self._pending and not len(self.outbox)

    def _final(self) -> None:
        """On close: a last drain and an explicit offline (the Will is only for crashes)."""
        deadline = time.monotonic() + CLOSE_WAIT_S
        if not self._connected:
            return
        self._drain()
        if not self.check:
            with self._lock:
                goodbye = self.builder.offline()
            self._send_all(goodbye)
        while time.monotonic() < deadline and self._connected:
            with self._lock:
                if not self._pending:
                    break
            if len(self.outbox):
                self._drain()
            time.sleep(0.02)
