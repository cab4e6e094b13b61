"""MQTT publishing with Home Assistant discovery (optional sink, paho-mqtt 2.x).

Modules: settings (MqttSettings, broker URL), topics (the topic tree), ratelimit (throttle,
deadband, heartbeat, counters), discovery (HA payloads), messages (readings -> messages),
outbox (bounded queue), sink (MqttSink, the network side).
"""

from smlogger.mqtt.settings import Broker, MqttSettings, MqttSettingsError, parse_broker_url

__all__ = ["Broker", "MqttSettings", "MqttSettingsError", "parse_broker_url"]
