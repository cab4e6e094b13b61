"""MQTT publishing logic without a network: URL and settings, rate rules with a stepped clock,
the message builder, Home Assistant discovery payloads, the outbox."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from mqtt_ha import check_sensor_config

from smlogger.masking import mask_url
from smlogger.meterid import firmware, manufacturer, parse_server_id
from smlogger.mqtt.discovery import DIAGNOSTIC_SENSORS, FIELD_SENSORS
from smlogger.mqtt.messages import Message, MessageBuilder, format_number
from smlogger.mqtt.outbox import Outbox
from smlogger.mqtt.ratelimit import RateLimiter, parse_deadband
from smlogger.mqtt.settings import MqttSettings, MqttSettingsError, parse_broker_url
from smlogger.reading import Reading, Value, reading_from_values

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
METER = "0a0149534b00047a5544"  # ISKRA MT631


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def step(self, seconds: float) -> None:
        self.now += seconds


def reading(
    e_sum: float = 12345.6789,
    p_sum: float = 523.0,
    *,
    meter: str = METER,
    extra: dict[str, Value] | None = None,
    at: datetime = T0,
    phases: bool = True,
) -> Reading:
    values = {
        "1-0:1.8.0*255": Value("1-0:1.8.0*255", e_sum * 1000, "Wh"),
        "1-0:2.8.0*255": Value("1-0:2.8.0*255", 10_000.0, "Wh"),
        "1-0:16.7.0*255": Value("1-0:16.7.0*255", p_sum, "W"),
        "1-0:96.50.1*1": Value("1-0:96.50.1*1", b"ISK", None),
        "1-0:0.2.0*0": Value("1-0:0.2.0*0", b"1.02.007", None),
    }
    if phases:
        values.update(
            {
                "1-0:36.7.0*255": Value("1-0:36.7.0*255", 100.0, "W"),
                "1-0:32.7.0*255": Value("1-0:32.7.0*255", 230.1, "V"),
                "1-0:31.7.0*255": Value("1-0:31.7.0*255", 1.25, "A"),
                "1-0:14.7.0*255": Value("1-0:14.7.0*255", 50.01, "Hz"),
            }
        )
    values.update(extra or {})
    return reading_from_values(meter, at, values)


def settings(**kw: Any) -> MqttSettings:
    base: dict[str, Any] = {"url": "mqtt://127.0.0.1:1883", "client_id": "smlogger-test"}
    base.update(kw)
    return MqttSettings(**base)


def by_topic(messages: list[Message]) -> dict[str, str]:
    return {m.topic: m.payload for m in messages}


# ---- URL, settings --------------------------------------------------------------------------


def test_broker_url_parsing_and_masking() -> None:
    broker = parse_broker_url("mqtt://user:p%40ss%2Fw@broker.lan")
    assert (broker.host, broker.port, broker.tls) == ("broker.lan", 1883, False)
    assert (broker.username, broker.password) == ("user", "p@ss/w")
    assert broker.display() == "mqtt://user:***@broker.lan:1883"
    assert "p@ss" not in repr(broker)
    assert parse_broker_url("mqtts://h").port == 8883
    assert parse_broker_url("mqtt://[::1]:1999").display() == "mqtt://[::1]:1999"
    assert mask_url("mqtt://u:secret@h:1") == "mqtt://u:***@h:1"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://h", "mqtt:// or mqtts://"),
        ("mqtt://", "no broker host"),
        ("mqtt://h:99999", "not a valid broker URL"),
        ("mqtt://h/topic", "no path"),
    ],
)
def test_bad_broker_urls_are_named(url: str, words: str) -> None:
    with pytest.raises(MqttSettingsError, match=r"mqtt\.url") as err:
        parse_broker_url(url)
    assert words in str(err.value)


def test_bad_settings_name_the_key(tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"qos": 3}, "mqtt.qos"),
        ({"prefix": "a/+/b"}, "mqtt.prefix"),
        ({"prefix": "a//b"}, "mqtt.prefix"),
        ({"deadband": "p_sum=lots"}, "mqtt.deadband"),
        ({"interval": -1}, "mqtt.interval"),
        ({"ca_file": tmp_path / "missing.pem", "url": "mqtts://h"}, "mqtt.ca_file"),
        ({"ca_file": tmp_path, "url": "mqtt://h"}, "mqtt.ca_file"),
        ({"client_cert": tmp_path / "c.pem"}, "mqtt.client_cert"),
        ({"meter_names": {METER: "logger"}}, "meter name"),
        ({"meter_names": {METER: "logger/"}}, "meter name"),
        ({"queue_size": 1}, "mqtt.queue_size"),
    ]
    for kw, key in cases:
        with pytest.raises(MqttSettingsError, match=key.replace(".", r"\.")):
            settings(**kw)


def test_password_from_file_wins_and_is_never_shown(tmp_path: Path) -> None:
    pwfile = tmp_path / "pw"
    pwfile.write_text("from-file\n")
    s = settings(url="mqtt://me:in-url@h", password_file=pwfile)
    assert s.broker.password == "from-file"
    assert s.broker.username == "me"
    assert "from-file" not in repr(s) and "in-url" not in s.display_url()
    assert settings(url="mqtt://h", password="pw").broker.username == ""


# ---- rate control -----------------------------------------------------------------------


def test_deadband_rules() -> None:
    rules = parse_deadband("p_sum=10,u_*=1%,0.5")
    assert [(r.pattern, r.amount, r.percent) for r in rules] == [
        ("p_sum", 10.0, False),
        ("u_*", 1.0, True),
        ("*", 0.5, False),
    ]
    assert parse_deadband("")[-1].amount == 0.0
    for bad in ("abc", "-1", "1%,2%", "=3", "nan"):
        with pytest.raises(MqttSettingsError, match=r"mqtt\.deadband"):
            parse_deadband(bad)


def limiter(clock: Clock, interval: float = 0, heartbeat: float = 0, deadband: str = "0") -> Any:
    return RateLimiter(interval, heartbeat, parse_deadband(deadband), clock)


def test_every_frame_but_only_changes_without_deadband() -> None:
    clock = Clock()
    rl = limiter(clock)
    assert rl.offer("m", "p_sum", 100.0) == 100.0
    clock.step(1)
    assert rl.offer("m", "p_sum", 100.0) is None  # unchanged: no news
    clock.step(0.3)
    assert rl.offer("m", "p_sum", 101.0) == 101.0  # sub-second: every change goes out
    assert rl.counters.unchanged == 1


def test_throttle_at_most_every_interval() -> None:
    clock = Clock()
    rl = limiter(clock, interval=10)
    assert rl.offer("m", "p", 1.0) == 1.0
    published = []
    for second in range(1, 31):
        clock.step(1)
        if rl.offer("m", "p", float(second)) is not None:
            published.append(second)
    assert published == [10, 20, 30]
    assert rl.counters.throttled == 27


def test_deadband_absolute_and_percent_per_value() -> None:
    clock = Clock()
    rl = limiter(clock, deadband="p_sum=10,u_*=1%")
    assert rl.offer("m", "p_sum", 500.0) is not None
    assert rl.offer("m", "p_sum", 509.0) is None
    assert rl.offer("m", "p_sum", 505.0) is None
    assert rl.offer("m", "p_sum", 510.5) == 510.5  # compared with the last *published* 500
    assert rl.offer("m", "u_L1", 230.0) is not None
    assert rl.offer("m", "u_L1", 232.0) is None  # < 1 % of 230
    assert rl.offer("m", "u_L1", 232.4) == 232.4
    assert rl.offer("m", "e_sum", 1.0) is not None
    assert rl.offer("m", "e_sum", 1.001) == 1.001  # default rule: any change
    # meters are independent
    assert rl.offer("other", "p_sum", 505.0) == 505.0


def test_heartbeat_republishes_unchanged_values() -> None:
    clock = Clock()
    rl = limiter(clock, heartbeat=60, deadband="5")
    assert rl.offer("m", "p", 100.0) == 100.0
    seen = []
    for second in range(1, 130):
        clock.step(1)
        if rl.offer("m", "p", 101.0) is not None:
            seen.append(second)
    assert seen == [60, 120]


def test_energy_counter_never_published_lower() -> None:
    clock = Clock()
    rl = limiter(clock, heartbeat=30)
    assert rl.offer("m", "e_sum", 100.5, counter=True) == 100.5
    clock.step(1)
    assert rl.offer("m", "e_sum", 100.4, counter=True) is None
    clock.step(30)
    # the heartbeat repeats the highest value, not the lower one
    assert rl.offer("m", "e_sum", 100.4, counter=True) == 100.5
    clock.step(1)
    assert rl.offer("m", "e_sum", 100.6, counter=True) == 100.6
    assert rl.counters.held_back == 2
    # a power value may go down
    assert rl.offer("m", "p_sum", 5.0) == 5.0
    assert rl.offer("m", "p_sum", -5.0) == -5.0


# ---- server ids ---------------------------------------------------------------------------


def test_manufacturer_from_flag_code_and_registers() -> None:
    assert manufacturer("0a01445a47000282225e") == "DZG Metering"
    assert manufacturer("06454d4801027156cd45") == "EMH metering"
    assert manufacturer("09014553591103b599a5") == "EasyMeter"
    assert manufacturer("0a01414243000282225e") == "ABC"  # unknown FLAG: the code itself
    # no FLAG in the id: the manufacturer register
    assert manufacturer("3032323830383136", {"129-129:199.130.3*255": b"EMH"}) == "EMH metering"
    assert manufacturer("3032323830383136", {}) is None
    parsed = parse_server_id("0a01445a47000282225e")
    assert parsed is not None and parsed.label() == "1 DZG00 4208 2910"
    assert firmware({"1-0:0.2.0*0": b"1.02.007"}) == "1.02.007"


# ---- messages ---------------------------------------------------------------------------


def test_reading_becomes_value_topics_state_json_and_discovery() -> None:
    clock = Clock()
    builder = MessageBuilder(settings(meter_names={METER: "house"}), clock=clock, version="1.0")
    messages = builder.reading(reading())
    got = by_topic(messages)
    assert got["smlogger/house/availability"] == "online"
    assert got["smlogger/house/e_sum"] == "12345.6789"
    assert got["smlogger/house/e_export"] == "10"
    assert got["smlogger/house/p_sum"] == "523"
    assert got["smlogger/house/u_L1"] == "230.1"
    assert got["smlogger/house/freq"] == "50.01"
    assert got["smlogger/house/1_0_96_50_1_1"] == "ISK"  # other OBIS values by their key
    assert "smlogger/house/1_0_1_8_0_255" not in got  # no duplicate of e_sum
    state = json.loads(got["smlogger/house/state"])
    assert state["time"] == T0.isoformat() and state["meter_id"] == METER
    assert state["e_sum"] == 12345.6789 and state["p_sum"] == 523.0 and state["i_L1"] == 1.25
    assert "p_L2" not in state  # fields the meter does not send are left out
    assert state["values"]["1-0:1.8.0*255"] == {"value": 12345678.9, "unit": "Wh"}
    assert state["values"]["1-0:96.50.1*1"] == {"value": "49534b", "unit": None}
    configs = {t: json.loads(p) for t, p in got.items() if t.startswith("homeassistant/")}
    assert set(configs) == {
        f"homeassistant/sensor/smlogger_{METER}/{key}/config"
        for key in ("e_sum", "e_export", "p_sum", "p_L1", "u_L1", "i_L1", "freq")
    }
    # discovery before the values: HA subscribes, then gets the retained state
    order = [m.topic for m in messages]
    assert order.index(f"homeassistant/sensor/smlogger_{METER}/e_sum/config") < order.index(
        "smlogger/house/e_sum"
    )
    assert all(m.retain for m in messages)
    assert {m.qos for m in messages} == {1}


def test_discovery_payloads_match_the_ha_sensor_schema() -> None:
    builder = MessageBuilder(
        settings(meter_names={METER: "house"}, meter_models={METER: "MT631"}),
        clock=Clock(),
        version="1.0",
        diagnostics=lambda m: {"state": "connected", "crc_error_rate": 0.01, "last_frame_age_s": 1},
    )
    three_phase = {
        f"1-0:{c}.7.0*255": Value(f"1-0:{c}.7.0*255", v, u)
        for c, v, u in [(56, 1.0, "W"), (76, 2.0, "W"), (52, 231.0, "V"), (72, 229.0, "V"),
                        (51, 1.0, "A"), (71, 2.0, "A")]
    }  # fmt: skip
    extra = {"1-0:1.8.1*255": Value("1-0:1.8.1*255", 5.0, "kWh"), **three_phase}
    messages = builder.reading(reading(extra=extra)) + builder.tick() + builder.announce()
    configs = {
        m.topic: json.loads(m.payload) for m in messages if m.topic.startswith("homeassistant/")
    }
    expected = {
        "e_sum": ("energy", "total_increasing", "kWh"),
        "e_export": ("energy", "total_increasing", "kWh"),
        "e_t1": ("energy", "total_increasing", "kWh"),
        "p_sum": ("power", "measurement", "W"),
        **{f"p_L{n}": ("power", "measurement", "W") for n in (1, 2, 3)},
        **{f"u_L{n}": ("voltage", "measurement", "V") for n in (1, 2, 3)},
        **{f"i_L{n}": ("current", "measurement", "A") for n in (1, 2, 3)},
        "freq": ("frequency", "measurement", "Hz"),
        "link_state": ("enum", None, None),
        "crc_error_rate": (None, "measurement", "%"),
        "last_frame_age": ("duration", "measurement", "s"),
    }
    meter_configs = {t: c for t, c in configs.items() if f"/smlogger_{METER}/" in t}
    assert {t.split("/")[3] for t in meter_configs} == set(expected)
    for topic, config in configs.items():
        assert check_sensor_config(config) == [], topic
    for topic, config in meter_configs.items():
        key = topic.split("/")[3]
        device_class, state_class, unit = expected[key]
        assert config.get("device_class") == device_class, key
        assert config.get("state_class") == state_class, key
        assert config.get("unit_of_measurement") == unit, key
        assert config["unique_id"] == f"smlogger_{METER}_{key}"
        assert config["state_topic"] == f"smlogger/house/{key}"
        availability = [a["topic"] for a in config["availability"]]
        assert availability[0] == "smlogger/logger/smlogger-test/availability"
        if key in DIAGNOSTIC_SENSORS:
            assert config["entity_category"] == "diagnostic"
            assert availability == availability[:1]  # shown while the meter is silent
        else:
            assert "entity_category" not in config
            assert availability[1:] == ["smlogger/house/availability"]
            assert config["availability_mode"] == "all"
        assert config["device"] == {
            "identifiers": [f"smlogger_{METER}"],
            "name": "house",
            "manufacturer": "Iskraemeco",
            "model": "MT631",
            "sw_version": "1.02.007",
            "serial_number": "1 ISK00 7512 6084",
            "via_device": "smlogger_logger_smlogger-test",
        }
    assert configs[f"homeassistant/sensor/smlogger_{METER}/link_state/config"]["options"] == [
        "connected",
        "waiting",
        "no data",
    ]
    logger = configs["homeassistant/sensor/smlogger_logger_smlogger-test/dropped/config"]
    assert logger["device"]["identifiers"] == ["smlogger_logger_smlogger-test"]
    assert logger["entity_category"] == "diagnostic"
    assert set(FIELD_SENSORS) >= {k for k in expected if k not in DIAGNOSTIC_SENSORS}


def test_unique_ids_stable_across_restart_and_renaming() -> None:
    def ids(names: dict[str, str]) -> dict[str, str]:
        builder = MessageBuilder(settings(meter_names=names), clock=Clock(), version="9")
        return {
            json.loads(m.payload)["unique_id"]: m.topic
            for m in builder.reading(reading()) + builder.announce()
            if m.topic.startswith("homeassistant/")
        }

    first, again, renamed = ids({}), ids({}), ids({METER: "garage"})
    assert first == again
    assert set(first) == set(renamed)  # ids come from the meter id, never from its name
    assert set(first.values()) == set(renamed.values())


def test_two_meters_two_devices() -> None:
    builder = MessageBuilder(settings(), clock=Clock(), version="1")
    other = "0a01445a47000282225e"
    messages = builder.reading(reading()) + builder.reading(reading(meter=other, phases=False))
    devices = {
        json.loads(m.payload)["device"]["identifiers"][0]
        for m in messages
        if m.topic.startswith("homeassistant/")
    }
    assert devices == {f"smlogger_{METER}", f"smlogger_{other}"}
    got = by_topic(messages)
    assert got[f"smlogger/{other}/p_sum"] == "523"  # unnamed meters: topic level = meter id
    assert builder.meters()[other]["name"] == "1 DZG00 4208 2910"


def test_rate_rules_apply_to_topics_and_state() -> None:
    clock = Clock()
    builder = MessageBuilder(settings(interval=5, heartbeat=60), clock=clock, version="1")
    builder.reading(reading())
    clock.step(1)
    assert builder.reading(reading(p_sum=600)) == []  # throttled
    clock.step(5)
    got = by_topic(builder.reading(reading(p_sum=600)))
    assert set(got) == {f"smlogger/{METER}/p_sum", f"smlogger/{METER}/state"}
    clock.step(5)
    assert builder.reading(reading(p_sum=600)) == []  # nothing changed
    clock.step(60)
    heartbeat = by_topic(builder.reading(reading(p_sum=600)))
    assert f"smlogger/{METER}/e_sum" in heartbeat and f"smlogger/{METER}/u_L1" in heartbeat


def test_counter_going_backwards_is_not_published_in_topic_or_state() -> None:
    clock = Clock()
    builder = MessageBuilder(settings(), clock=clock, version="1")
    builder.reading(reading(e_sum=100.0))
    clock.step(1)
    got = by_topic(builder.reading(reading(e_sum=99.0, p_sum=1.0)))
    assert f"smlogger/{METER}/e_sum" not in got
    assert json.loads(got[f"smlogger/{METER}/state"])["e_sum"] == 100.0


def test_meter_availability_follows_readings() -> None:
    clock = Clock()
    builder = MessageBuilder(settings(offline_after=30), clock=clock, version="1")
    builder.reading(reading())
    clock.step(20)
    assert builder.tick() == []
    clock.step(11)
    assert by_topic(builder.tick()) == {f"smlogger/{METER}/availability": "offline"}
    assert builder.tick() == []  # said once
    clock.step(1)
    assert by_topic(builder.reading(reading()))[f"smlogger/{METER}/availability"] == "online"


def test_vanished_value_loses_its_ha_config_and_retained_value() -> None:
    clock = Clock()
    builder = MessageBuilder(settings(remove_after=100), clock=clock, version="1")
    builder.reading(reading())
    for _ in range(11):
        clock.step(10)
        builder.reading(reading(phases=False))
        removal = builder.tick()
        if removal:
            break
    got = by_topic(removal)
    for key in ("p_L1", "u_L1", "i_L1", "freq"):
        assert got[f"homeassistant/sensor/smlogger_{METER}/{key}/config"] == ""
        assert got[f"smlogger/{METER}/{key}"] == ""
    assert all(m.retain for m in removal)
    assert builder.removed == 4
    assert "p_L1" not in builder.meters()[METER]["entities"]
    assert f"smlogger/{METER}/p_L1" not in {m.topic for m in builder.retained()}
    # it comes back: config again
    clock.step(1)
    back = by_topic(builder.reading(reading()))
    assert f"homeassistant/sensor/smlogger_{METER}/p_L1/config" in back
    assert back[f"smlogger/{METER}/p_L1"] == "100"


def test_diagnostics_published_periodically() -> None:
    clock = Clock()
    info = {"state": "no data", "crc_error_rate": 0.025, "last_frame_age_s": 75.25}
    builder = MessageBuilder(
        settings(diagnostics_interval=30), clock=clock, diagnostics=lambda m: info, version="1"
    )
    builder.reading(reading())
    got = by_topic(builder.tick())
    assert got[f"smlogger/{METER}/link_state"] == "no data"
    assert got[f"smlogger/{METER}/crc_error_rate"] == "2.5"
    assert got[f"smlogger/{METER}/last_frame_age"] == "75.2"
    assert f"homeassistant/sensor/smlogger_{METER}/link_state/config" in got
    clock.step(10)
    assert builder.tick() == []
    clock.step(20)
    assert f"smlogger/{METER}/link_state" in by_topic(builder.tick())


def test_announce_and_retained_snapshot_for_reconnects() -> None:
    clock = Clock()
    builder = MessageBuilder(settings(), clock=clock, version="1")
    builder.reading(reading())
    clock.step(1)
    builder.reading(reading(p_sum=777))
    snapshot = by_topic(builder.retained())
    assert snapshot[f"smlogger/{METER}/p_sum"] == "777"  # the latest, not the first
    assert json.loads(snapshot[f"smlogger/{METER}/state"])["p_sum"] == 777
    assert f"smlogger/{METER}/p_sum" not in by_topic(
        builder.retained(skip={f"smlogger/{METER}/p_sum"})
    )
    announce = by_topic(builder.announce())
    assert announce["smlogger/logger/smlogger-test/availability"] == "online"
    assert announce[f"smlogger/{METER}/availability"] == "online"
    assert f"homeassistant/sensor/smlogger_{METER}/e_sum/config" in announce
    assert by_topic(builder.offline()) == {
        f"smlogger/{METER}/availability": "offline",
        "smlogger/logger/smlogger-test/availability": "offline",
    }


def test_discovery_off_and_qos_retain_settings() -> None:
    builder = MessageBuilder(settings(discovery=False, qos=0, retain=False), clock=Clock())
    messages = builder.reading(reading())
    assert not [m for m in messages if m.topic.startswith("homeassistant/")]
    values = [m for m in messages if m.live]
    assert values and all(m.qos == 0 and not m.retain for m in values)
    # availability stays retained whatever the setting: a new subscriber must see it
    control = [m for m in messages if not m.live]
    assert control and all(m.retain and m.qos == 1 for m in control)
    assert builder.retained() == []


def test_number_format() -> None:
    assert format_number(523.0) == "523"
    assert format_number(0.1 + 0.2) == "0.3"
    assert format_number(-12.5) == "-12.5"
    assert format_number(1e-7) == "0"


# ---- outbox -------------------------------------------------------------------------------


def test_outbox_drops_oldest_live_messages_first() -> None:
    box = Outbox(maxsize=4)
    control = Message("a/availability", "online", 1, True, live=False)
    live = [Message(f"v/{i}", str(i), 1, True) for i in range(5)]
    assert box.put([control, *live[:3]]) == 0
    assert box.put(live[3:]) == 2
    assert box.dropped == 2
    assert [m.topic for m in box.take(10)] == ["a/availability", "v/2", "v/3", "v/4"]
    box.put([Message(f"c/{i}", "", 1, True, live=False) for i in range(6)])
    assert box.dropped == 4 and len(box) == 4  # only control left: the oldest go
    assert [m.topic for m in box.take(2)] == ["c/2", "c/3"]
    box.push_front([Message("back", "", 1, True)])
    assert box.take(1)[0].topic == "back"


def test_reading_time_is_independent_of_the_clock() -> None:
    clock = Clock()
    builder = MessageBuilder(settings(), clock=clock, version="1")
    later = T0 + timedelta(hours=1)
    state = json.loads(by_topic(builder.reading(reading(at=later)))[f"smlogger/{METER}/state"])
    assert state["time"] == later.isoformat()


def test_unknown_diagnostics_are_not_published() -> None:
    info = {"state": "waiting", "crc_error_rate": None, "last_frame_age_s": None}
    builder = MessageBuilder(settings(), clock=Clock(), diagnostics=lambda m: info, version="1")
    builder.reading(reading())
    got = by_topic(builder.tick())
    assert got[f"smlogger/{METER}/link_state"] == "waiting"
    assert f"smlogger/{METER}/crc_error_rate" not in got
    assert f"smlogger/{METER}/last_frame_age" not in got


def test_the_ha_schema_check_rejects_what_ha_rejects() -> None:
    good = {"name": "E", "unique_id": "u", "state_topic": "s/e", "device_class": "energy",
            "state_class": "total_increasing", "unit_of_measurement": "kWh"}  # fmt: skip
    assert check_sensor_config(good) == []
    for change in (
        {"state_class": "measurement"},  # the Energy dashboard ignores it
        {"unit_of_measurement": "W"},
        {"device_class": "power"},  # power is a measurement in W
        {"unit_of_mesurement": "kWh"},  # typo: HA refuses unknown keys
        {"entity_category": "config"},
        {"availability": [{"topc": "x"}]},
        {"state_topic": "s/#"},
    ):
        assert check_sensor_config({**good, **change}) != [], change
    assert check_sensor_config({"name": "L", "unique_id": "l", "state_topic": "t",
                                "device_class": "enum"}) != []  # fmt: skip


def test_unreadable_password_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MqttSettingsError, match=r"mqtt\.password_file"):
        settings(password_file=tmp_path / "missing")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(MqttSettingsError, match=r"mqtt\.password_file: cannot read"):
        settings(password_file=binary)


def test_configs_left_by_an_earlier_run_are_removed() -> None:
    clock = Clock()
    builder = MessageBuilder(settings(remove_after=100), clock=clock, version="1")
    builder.reading(reading(phases=False))
    assert builder.config_patterns() == [f"homeassistant/+/smlogger_{METER}/+/config"]
    node = f"homeassistant/sensor/smlogger_{METER}"
    builder.found_config(f"{node}/p_L1/config")  # the meter sent it last time, not now
    builder.found_config(f"{node}/e_sum/config")  # ours anyway
    builder.found_config(f"{node}/u_L1/config")  # comes back in time
    builder.found_config("homeassistant/sensor/smlogger_other/p_L1/config")  # not our meter
    clock.step(50)
    builder.reading(reading(extra={"1-0:32.7.0*255": Value("1-0:32.7.0*255", 230.0, "V")},
                            phases=False))  # fmt: skip
    assert builder.tick() == []
    clock.step(51)
    builder.reading(reading(phases=False))
    got = by_topic(builder.tick())
    assert got == {f"{node}/p_L1/config": "", f"smlogger/{METER}/p_L1": ""}
    assert builder.removed == 1
