"""The [mqtt] section: file keys, SMLOGGER_MQTT_* variables, flags, errors naming the key,
the password masked everywhere, and the settings the sink gets from it."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from test_config import load, write

from smlogger import config
from smlogger.config import ConfigError
from smlogger.service import mqtt_settings


def test_mqtt_is_off_by_default() -> None:
    cfg = load(["--simulate"])
    assert cfg.mqtt_url == "" and mqtt_settings(cfg) is None


def test_file_environment_and_flags(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    path = write(
        tmp_path,
        f"""
[mqtt]
url = "mqtts://meter:filepw@broker.lan"
prefix = "home/meters"
discovery_prefix = "ha"
qos = 0
retain = false
ca_file = "{ca}"
interval = 5
deadband = "p_sum=10,u_*=1%"
heartbeat = 120
client_id = "cellar"
reconnect_max = 20

[[meter]]
name = "house"
model = "MT631"
simulate = true
""",
    )
    cfg = load(["--config", path], {"SMLOGGER_MQTT_QOS": "2"})
    settings = mqtt_settings(cfg)
    assert settings is not None
    broker = settings.broker
    assert (broker.host, broker.port, broker.tls) == ("broker.lan", 8883, True)
    assert (broker.username, broker.password) == ("meter", "filepw")
    assert settings.prefix == "home/meters" and settings.discovery_prefix == "ha"
    assert settings.qos == 2 and settings.retain is False
    assert settings.ca_file == ca and settings.interval == 5 and settings.heartbeat == 120
    assert settings.deadband == "p_sum=10,u_*=1%" and settings.client_id == "cellar"
    assert settings.reconnect_max == 20
    assert settings.meter_names == {"house": "house"}
    assert settings.meter_models == {"house": "MT631"}
    # flags win
    cfg = load(["--config", path, "--mqtt-prefix", "x", "--no-mqtt-discovery"])
    flagged = mqtt_settings(cfg)
    assert flagged is not None and flagged.prefix == "x" and flagged.discovery is False


def test_reconnect_max_defaults_to_a_minute() -> None:
    settings = mqtt_settings(load(["--simulate", "--mqtt", "mqtt://h"]))
    assert settings is not None and settings.reconnect_max == 60


def test_made_up_meter_names_are_not_topic_names() -> None:
    settings = mqtt_settings(load(["--simulate", "--mqtt", "mqtt://h"]))
    assert settings is not None and settings.meter_names == {}  # topics use the meter id


def test_password_from_environment_and_file(tmp_path: Path) -> None:
    env = {"SMLOGGER_MQTT": "mqtt://meter@h", "SMLOGGER_MQTT_PASSWORD": "envpw"}
    cfg = load(["--simulate"], env)
    settings = mqtt_settings(cfg)
    assert settings is not None and settings.broker.password == "envpw"
    assert "envpw" in cfg.secrets()
    pwfile = tmp_path / "pw"
    pwfile.write_text("filepw\n")
    cfg = load(["--simulate", "--mqtt-password-file", str(pwfile)], env)
    settings = mqtt_settings(cfg)
    assert settings is not None and settings.broker.password == "filepw"
    assert "filepw" in cfg.secrets()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--mqtt", "http://h"], "option --mqtt: invalid value 'http://h'"),
        (["--mqtt", "mqtt://u:s3cr3t@h/x"], "no path"),
        (["--mqtt-qos", "3"], "option --mqtt-qos"),
        (["--mqtt-prefix", "a/#"], "option --mqtt-prefix"),
        (["--mqtt-deadband", "lots"], "option --mqtt-deadband"),
        (["--mqtt-interval", "-1"], "option --mqtt-interval"),
        (["--mqtt-reconnect-max", "0.5"], "option --mqtt-reconnect-max: invalid value '0.5'"),
        (["--mqtt-reconnect-max", "7200"], "option --mqtt-reconnect-max"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(["--simulate", *argv])
    assert words in str(err.value)
    assert "s3cr3t" not in str(err.value)


def test_cross_checks_name_the_key(tmp_path: Path) -> None:
    cfg = load(["--simulate", "--mqtt", "mqtt://h", "--mqtt-ca-file", str(tmp_path / "no.pem")])
    with pytest.raises(ConfigError, match=r"mqtt\.ca_file"):
        mqtt_settings(cfg)
    path = write(tmp_path, '[mqtt]\nurl = "mqtt://h"\nqos_level = 1\n')
    with pytest.raises(
        ConfigError, match=r"unknown key 'mqtt\.qos_level' \(allowed in \[mqtt\]: url, "
    ):
        load(["--config", path, "--simulate"])


def test_password_masked_in_dump_example_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    cfg = load(["--simulate", "--mqtt", "mqtt://meter:hunter2%40x@h:1884"])
    dumped = config.dump(cfg)
    assert 'url = "mqtt://meter:***@h:1884"' in dumped and "hunter2" not in dumped
    example = config.example()
    assert "[mqtt]" in example and "# url = " in example and "SMLOGGER_MQTT_DEADBAND" in example
    logger = logging.getLogger("test-mqtt-redact")
    logger.addFilter(config.RedactingFilter(cfg.secrets()))
    with caplog.at_level(logging.INFO, logger="test-mqtt-redact"):
        logger.info("connecting with %s and %s", "hunter2@x", "hunter2%40x")
    assert "hunter2" not in caplog.text


def test_run_help_lists_the_mqtt_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "smlogger", "run", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--mqtt URL", "--mqtt-deadband", "SMLOGGER_MQTT_HEARTBEAT", "mqtt.ca_file"):
        assert flag in result.stdout
