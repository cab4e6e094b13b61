"""MQTT settings: one frozen dataclass, the broker URL parser and password masking."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Optional
from urllib.parse import unquote, urlsplit

from smlogger.mqtt.topics import RESERVED_METER_NAMES, slug

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_TOPIC_LEVEL = re.compile(r"^[^#+\x00]+$")


class MqttSettingsError(ValueError):
    """A bad MQTT setting; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Broker:
    """Where and how to connect, parsed from `mqtt://user:pw@host:port` / `mqtts://...`."""

    host: str
    port: int
    tls: bool
    username: Optional[str]
    password: Optional[str] = field(default=None, repr=False)

    def display(self) -> str:
        """The URL with the password masked, for logs, status and the page."""
        scheme = "mqtts" if self.tls else "mqtt"
        auth = ""
        if self.username is not None:
            auth = self.username + (":***" if self.password else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{auth}{host}:{self.port}"


def parse_broker_url(url: str, key: str = "mqtt.url") -> Broker:
    """`mqtt://[user[:password]@]host[:port]` or `mqtts://...`; user and password may be
    percent-encoded. Errors name `key` but never repeat the password."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise MqttSettingsError(f"{key}: not a valid broker URL ({exc})") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise MqttSettingsError(
            f"{key}: the URL must start with mqtt:// or mqtts://, not {parts.scheme or '(none)'!r}"
        )
    if not parts.hostname:
        raise MqttSettingsError(f"{key}: the URL names no broker host (mqtt://HOST:1883)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise MqttSettingsError(
            f"{key}: the URL takes no path or query; use the prefix setting for topics"
        )
    return Broker(
        host=parts.hostname,
        port=port or DEFAULT_PORTS[parts.scheme],
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def default_client_id() -> str:
    """smlogger-<hostname>: stable across restarts, different for each logger on a broker."""
    host = re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname()).strip("-") or "host"
    return f"smlogger-{host}"


def check_topic_prefix(value: str, key: str) -> str:
    """A topic prefix: one or more levels, no wildcards, no empty level."""
    value = value.strip()
    if not value or any(not _TOPIC_LEVEL.match(level) for level in value.split("/")):
        raise MqttSettingsError(
            f"{key}: {value!r} is not a usable topic prefix (levels separated by '/', "
            "no empty level, no '+' or '#')"
        )
    return value


@dataclass(frozen=True)
class MqttSettings:
    """Everything the MQTT sink needs; built from the [mqtt] config section.

    `interval` throttles each value (0: every frame), `deadband` is a rule list such as
    "0.5", "1%" or "p_sum=10,u_*=1%,0" (see ratelimit.parse_deadband), `heartbeat` re-publishes
    unchanged values. `meter_names` / `meter_models` map a meter id, or the name of the
    configured meter (source) that delivers it, to the name used in topics and HA / the model.
    """

    url: str
    prefix: str = "smlogger"
    discovery_prefix: str = "homeassistant"
    discovery: bool = True
    qos: int = 1
    retain: bool = True
    ca_file: Optional[Path] = None
    client_cert: Optional[Path] = None
    client_key: Optional[Path] = None
    password: Optional[str] = field(default=None, repr=False)
    password_file: Optional[Path] = None
    client_id: str = field(default_factory=default_client_id)
    interval: float = 0.0
    deadband: str = "0"
    heartbeat: float = 300.0
    keepalive: int = 30
    queue_size: int = 1000
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    offline_after: float = 60.0
    remove_after: float = 3600.0
    diagnostics_interval: float = 30.0
    logger_name: str = ""
    meter_names: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    meter_models: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        parse_broker_url(self.url)
        check_topic_prefix(self.prefix, "mqtt.prefix")
        if self.discovery:
            check_topic_prefix(self.discovery_prefix, "mqtt.discovery_prefix")
        if self.qos not in (0, 1, 2):
            raise MqttSettingsError(f"mqtt.qos: must be 0, 1 or 2, not {self.qos!r}")
        for name in ("interval", "heartbeat", "offline_after", "remove_after"):
            if getattr(self, name) < 0:
                raise MqttSettingsError(f"mqtt.{name}: must be 0 or more seconds")
        if self.diagnostics_interval <= 0 or self.reconnect_min <= 0:
            raise MqttSettingsError("mqtt: diagnostics_interval and reconnect_min must be > 0")
        if self.reconnect_max < self.reconnect_min:
            raise MqttSettingsError("mqtt: reconnect_max must not be below reconnect_min")
        if self.queue_size < 10:
            raise MqttSettingsError(f"mqtt.queue_size: at least 10, not {self.queue_size}")
        if not self.client_id or len(self.client_id) > 128:
            raise MqttSettingsError("mqtt.client_id: 1 to 128 characters")
        if (self.client_key is None) != (self.client_cert is None):
            raise MqttSettingsError("mqtt.client_cert and mqtt.client_key go together")
        if self.ca_file is not None and not parse_broker_url(self.url).tls:
            raise MqttSettingsError("mqtt.ca_file is set but mqtt.url is not mqtts://")
        for name in ("ca_file", "client_cert", "client_key", "password_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise MqttSettingsError(f"mqtt.{name}: no such file: {path}")
        if self.password_file is not None:
            try:
                Path(self.password_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise MqttSettingsError(
                    f"mqtt.password_file: cannot read {self.password_file}: {exc}"
                ) from None
        for meter, name in self.meter_names.items():
            if slug(name) in RESERVED_METER_NAMES:
                raise MqttSettingsError(
                    f"meter name {name!r} of {meter}: used as a topic level, it may not be one "
                    f"of {sorted(RESERVED_METER_NAMES)}"
                )
        from smlogger.mqtt.ratelimit import parse_deadband

        parse_deadband(self.deadband)

    @property
    def broker(self) -> Broker:
        """The parsed URL; the password comes from password_file, `password` or the URL."""
        broker = parse_broker_url(self.url)
        password = broker.password
        if self.password:
            password = self.password
        if self.password_file is not None:
            password = Path(self.password_file).read_text(encoding="utf-8").strip("\r\n")
        if password and broker.username is None:
            return Broker(broker.host, broker.port, broker.tls, "", password)
        return Broker(broker.host, broker.port, broker.tls, broker.username, password)

    def display_url(self) -> str:
        """The broker URL with the password masked."""
        return self.broker.display()
