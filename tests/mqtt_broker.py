"""A real mosquitto for tests: private config, 127.0.0.1, a free port, no persistence.

    with Mosquitto.running(tmp_path) as broker:        # anonymous
    with Mosquitto.running(tmp_path, users={"u": "pw"}) as broker:
    with Mosquitto.running(tmp_path, tls=CertAuthority(tmp_path)) as broker:
    broker.stop(); broker.start()      # same port, retained messages gone (no persistence)

`Collector` subscribes with paho and keeps every message (retained ones flagged).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import paho.mqtt.client as mqtt
from helpers import free_port
from paho.mqtt.enums import CallbackAPIVersion
from servers import terminate


def _binary(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        f"{name} not found: the MQTT tests need it (Debian: apt-get install mosquitto)"
    )


@dataclass(frozen=True)
class CertAuthority:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost, made with openssl."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def create(cls, base: Path) -> CertAuthority:
        base.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = base / "ca.key", base / "ca.crt"
        key, csr, cert = base / "server.key", base / "server.csr", base / "server.crt"
        ext = base / "san.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

        def run(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=smlogger test CA", "-keyout", str(ca_key), "-out", str(ca_cert))  # fmt: skip
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", str(key), "-out", str(csr))  # fmt: skip
        run("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
        return cls(ca_cert, cert, key)


class Mosquitto:
    """A private mosquitto process."""

    def __init__(
        self,
        base: Path,
        *,
        users: Optional[dict[str, str]] = None,
        tls: Optional[CertAuthority] = None,
        port: Optional[int] = None,
    ) -> None:
        self.base = base
        self.port = port or free_port()
        self.users = users
        self.tls = tls
        self.log = base / "mosquitto.log"
        self.conf = base / "mosquitto.conf"
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.binary = _binary("mosquitto")

    def write_config(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            f"log_dest file {self.log}",
            "log_type all",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # mosquitto started as root drops to user "mosquitto", which cannot read the
            # test's private temp dir (certificates, password file)
            lines.append("user root")
        if self.users:
            pwfile = self.base / "passwd"
            pwfile.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    [_binary("mosquitto_passwd"), "-b", str(pwfile), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            lines += [
                f"cafile {self.tls.ca_cert}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
            ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 60.0) -> None:
        self.write_config()
        with open(self.base / "stderr.txt", "ab") as err:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=err
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not come up: {self.log_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, signal.SIGTERM, 10)
            self.proc = None

    def log_text(self) -> str:
        paths = (self.log, self.base / "stderr.txt")
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def url(self, user: str = "", password: str = "") -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        auth = f"{user}:{password}@" if user else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}"

    @classmethod
    @contextlib.contextmanager
    def running(cls, base: Path, **kw: object) -> Iterator[Mosquitto]:
        broker = cls(base, **kw)  # type: ignore[arg-type]
        try:
            broker.start()  # inside: a start that fails after Popen still stops the process
            yield broker
        finally:
            broker.stop()


@dataclass
class Received:
    topic: str
    payload: str
    retain: bool
    at: float


class Collector:
    """Subscribes to `topics` and records every message; reconnects on its own."""

    def __init__(
        self,
        broker: Mosquitto,
        topics: tuple[str, ...] = ("#",),
        *,
        user: str = "",
        password: str = "",
    ) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._topics = topics
        self.subscribed = threading.Event()  # the broker acknowledged the subscription
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"collector-{id(self)}")
        if user:
            self.client.username_pw_set(user, password)
        if broker.tls:
            self.client.tls_set(ca_certs=str(broker.tls.ca_cert))
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", broker.port, 10)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, *args: object) -> None:
        # one SUBSCRIBE for all topics: one SUBACK says all of them are in place
        client.subscribe([(topic, 1) for topic in self._topics])

    def _on_subscribe(self, client: mqtt.Client, *args: object) -> None:
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(
                Received(msg.topic, msg.payload.decode(errors="replace"), msg.retain, time.time())
            )

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def all(self, topic: Optional[str] = None) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if topic is None or m.topic == topic]

    def last(self, topic: str) -> Optional[Received]:
        found = self.all(topic)
        return found[-1] if found else None

    def latest(self) -> dict[str, str]:
        """topic -> last payload seen."""
        with self._lock:
            return {m.topic: m.payload for m in self.messages}

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # paho 2.x closes its wake-up socket pair only in Client.__del__, and the client sits in
        # a reference cycle with our callbacks: left to the cyclic GC, the pair is reported as a
        # leaked socket (a ResourceWarning, an error) in whichever test runs then
        reset = getattr(self.client, "_reset_sockets", None)
        if callable(reset):
            reset()


def retained(
    broker: Mosquitto, pattern: str = "#", *, timeout: float = 60.0, **kw: str
) -> dict[str, str]:
    """What a fresh subscriber gets as retained messages right now (topic -> payload).

    The broker sends the retained messages of a subscription right after its SUBACK, before
    any message published later: a marker published to a private topic once the subscription
    is acknowledged arrives after all of them, however slow the broker is. `timeout` only
    says when to give up.
    """
    marker = f"smlogger-test/marker/{uuid.uuid4().hex}"
    collector = Collector(broker, (pattern, marker), **kw)
    try:
        deadline = time.monotonic() + timeout
        if not collector.subscribed.wait(timeout):
            raise AssertionError(f"collector could not subscribe to {pattern}")
        collector.client.publish(marker, "end", qos=1)
        while not collector.all(marker):
            if time.monotonic() > deadline:
                raise AssertionError(f"the marker after the retained {pattern} never came")
            time.sleep(0.02)
        return {m.topic: m.payload for m in collector.all() if m.retain}
    finally:
        collector.close()
