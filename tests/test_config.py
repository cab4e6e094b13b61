"""Configuration: file, environment, flags, error messages and secret masking."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import typing
from pathlib import Path

import pytest

from smlogger import config
from smlogger.config import ConfigError
from smlogger.masking import mask_url
from smlogger.store.url import redact_url


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return parser.parse_args(argv)


def load(argv: list[str], env: dict[str, str] | None = None, **kw: bool) -> config.Config:
    return config.load(parse(argv), env or {}, **kw)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "smlogger.toml"
    path.write_text(text)
    return str(path)


def test_defaults_with_a_single_source() -> None:
    cfg = load(["--port", "/dev/ttyUSB0"])
    assert cfg.data_path == Path("~/.local/share/smlogger").expanduser()
    assert cfg.csv_path == cfg.data_path / "csv"
    assert cfg.http_address == ("127.0.0.1", 8080)
    assert cfg.database_url == "" and cfg.database_enabled and cfg.csv_enabled
    assert cfg.csv_rotate == "daily" and cfg.store_interval == 0
    [meter] = cfg.meters
    assert (meter.name, meter.port, meter.baudrate, meter.parity) == (
        "meter",
        "/dev/ttyUSB0",
        9600,
        "N",
    )
    assert meter.source_kind == "port" and meter.watchdog == 30


def test_file_environment_and_flags_in_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
store_interval = 10
[csv]
rotate = "hourly"
keep_days = 30
[http]
listen = "0.0.0.0:9000"
[[meter]]
name = "house"
port = "/dev/ttyUSB0"
baudrate = 2400
[[meter]]
name = "heatpump"
tcp = "192.168.1.50:8888"
direction_from_status = true
""",
    )
    cfg = load(["--config", path])
    assert cfg.store_interval == 10.0 and cfg.csv_rotate == "hourly" and cfg.csv_keep_days == 30
    assert cfg.http_address == ("0.0.0.0", 9000)
    assert [(m.name, m.source_kind) for m in cfg.meters] == [("house", "port"), ("heatpump", "tcp")]
    assert cfg.meters[0].baudrate == 2400 and cfg.meters[1].direction_from_status

    env = {"SMLOGGER_CSV_ROTATE": "size", "SMLOGGER_STORE_INTERVAL": "5", "SMLOGGER_WATCHDOG": "12"}
    cfg = load(["--config", path], env)
    assert cfg.csv_rotate == "size" and cfg.store_interval == 5.0
    # a meter option without a source applies to every configured meter
    assert [m.watchdog for m in cfg.meters] == [12.0, 12.0]

    cfg = load(["--config", path, "--csv-rotate", "daily", "--no-csv-compress"], env)
    assert cfg.csv_rotate == "daily" and cfg.csv_compress is False

    # a source on the command line replaces the configured meters
    cfg = load(["--config", path, "--simulate"], env)
    assert [m.source_kind for m in cfg.meters] == ["simulate"]
    assert cfg.meters[0].watchdog == 12.0


def test_cli_source_updates_the_single_configured_meter(tmp_path: Path) -> None:
    path = write(tmp_path, '[[meter]]\nname = "house"\nport = "/dev/ttyUSB0"\nbaudrate = 2400\n')
    cfg = load(["--config", path, "--port", "/dev/ttyUSB1"])
    [meter] = cfg.meters
    assert (meter.name, meter.port, meter.baudrate) == ("house", "/dev/ttyUSB1", 2400)
    cfg = load(["--config", path, "--tcp", "h:1"])
    assert (cfg.meters[0].tcp, cfg.meters[0].port) == ("h:1", "")


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[database]\nlegacy_table = true\n[[meter]]\nsimulate = true\n")
    cfg = load([], {"SMLOGGER_CONFIG": path})
    assert cfg.database_legacy_table and cfg.meters[0].simulate


def test_single_meter_table_form(tmp_path: Path) -> None:
    path = write(tmp_path, '[meter]\nreplay = "x.bin"\nspeed = "max"\n')
    [meter] = load(["--config", path]).meters
    assert (meter.replay, meter.speed) == ("x.bin", "max")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[csv]\nrotate = "weekly"\n',
            "csv.rotate: invalid value 'weekly': 'weekly' is not allowed;"
            " use one of: hourly, daily, size",
        ),
        ("[csv]\nrotat = 'daily'\n", "unknown key 'csv.rotat'; did you mean 'rotate'?"),
        ("store_intervall = 3\n", "unknown key 'store_intervall'; did you mean 'store_interval'?"),
        ("store_interval = -1\n", "store_interval: invalid value -1: must be at least 0, not -1"),
        ("store_interval = 'often'\n", "store_interval: invalid value 'often': expected a number"),
        (
            "[storage]\ncommit_interval = 7200\n",
            "storage.commit_interval: invalid value 7200: must be at most 3600, not 7200",
        ),
        (
            "[storage]\ncommit_interval = -5\n",
            "storage.commit_interval: invalid value -5: must be at least 0, not -5",
        ),
        (
            "[http]\nlisten = 'localhost'\n",
            "http.listen: invalid value 'localhost': expected HOST:PORT",
        ),
        (
            "[[meter]]\nport = '/dev/x'\nbaudrate = 'fast'\n",
            "meter[1].baudrate: invalid value 'fast': expected a whole number",
        ),
        (
            "[[meter]]\nport = '/dev/x'\nparity = 'X'\n",
            "meter[1].parity: invalid value 'X': 'X' is not allowed; use one of: N, E, O, M, S",
        ),
        ("[[meter]]\nprot = '/dev/x'\n", "meter[1]: unknown key 'prot'; did you mean 'port'?"),
        ("[[meter]]\nport = '/dev/x'\ntcp = 'h:1'\n", "meter[1]: more than one source (port, tcp)"),
        (
            "[[meter]]\nbaudrate = 9600\n",
            "meter[1]: no source; set one of port, tcp, replay or simulate",
        ),
        (
            "[[meter]]\nspeed = 'slow'\nsimulate = true\n",
            "meter[1].speed: invalid value 'slow': "
            "'slow' is not allowed; use 1, 10, another factor > 0, or max",
        ),
        (
            "[[meter]]\nname='a'\nsimulate=true\n[[meter]]\nname='a'\nsimulate=true\n",
            "meter[2].name: 'a' is used by two meters",
        ),
        (
            "[database]\nurl = 'oracle://u:topsecret@h/db'\n",
            "database.url: invalid value 'oracle://u:***@h/db'",
        ),
        ("[csv\nrotate=1\n", "not valid TOML"),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(["--config", path])
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "topsecret" not in str(info.value)


def test_commit_interval_from_file_env_and_flag(tmp_path: Path) -> None:
    assert load(["--simulate"]).storage_commit_interval == 600.0
    path = write(tmp_path, "[storage]\ncommit_interval = 900\n")
    assert load(["--config", path, "--simulate"]).storage_commit_interval == 900.0
    env = {"SMLOGGER_COMMIT_INTERVAL": "120"}
    assert load(["--simulate"], env).storage_commit_interval == 120.0
    assert load(["--simulate", "--commit-interval", "0"], env).storage_commit_interval == 0.0
    with pytest.raises(ConfigError, match=r"option --commit-interval: invalid value 'soon'"):
        load(["--simulate", "--commit-interval", "soon"])


def test_environment_and_flag_errors_name_the_variable() -> None:
    with pytest.raises(
        ConfigError,
        match=r"environment variable SMLOGGER_CSV_KEEP_DAYS: invalid "
        r"value 'many': expected a number",
    ):
        load(["--simulate"], {"SMLOGGER_CSV_KEEP_DAYS": "many"})
    with pytest.raises(
        ConfigError,
        match=r"option --http: invalid value '8080': expected "
        r"HOST:PORT",
    ):
        load(["--simulate", "--http", "8080"])
    with pytest.raises(
        ConfigError,
        match=r"environment variable SMLOGGER_SIMULATE: invalid value "
        r"'perhaps': expected true or false",
    ):
        load([], {"SMLOGGER_SIMULATE": "perhaps"})
    with pytest.raises(ConfigError, match="no meter: give a source"):
        load([])
    with pytest.raises(ConfigError, match=r"config file /nonexistent\.toml not found"):
        load(["--config", "/nonexistent.toml"])


def test_every_option_has_env_and_flag() -> None:
    seen_env = set()
    for option in config.ALL_OPTIONS:
        assert option.env.startswith("SMLOGGER_") and option.flag.startswith("--")
        assert option.env not in seen_env
        seen_env.add(option.env)
    assert config._GLOBAL_BY_KEY["database.url"].env == "SMLOGGER_DB_URL"


def test_dataclasses_hold_exactly_the_options_with_typed_defaults() -> None:
    # the option table is the only place with defaults: every field is an option (and back),
    # and every default is a valid value of the field's type
    for cls, options, extra in (
        (
            config.Config,
            config.GLOBAL_OPTIONS,
            {"meters", "config_file", "secret_files", "warnings"},
        ),
        (config.MeterConfig, config.METER_OPTIONS, set()),
    ):
        hints = typing.get_type_hints(cls)
        assert set(hints) == {o.attr for o in options} | extra
        assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(cls))
        for option in options:
            assert option.parse(option.default) == option.default, option.key
            assert isinstance(option.default, hints[option.attr]), option.key


def test_loaded_configuration_is_frozen() -> None:
    cfg = load(["--simulate"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.csv_rotate = "hourly"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.meters[0].name = "other"  # type: ignore[misc]
    assert isinstance(cfg.meters, tuple)


def test_speed_is_validated_once_and_read_as_a_factor(tmp_path: Path) -> None:
    assert config.parse_speed("MAX") == "max" and config.parse_speed(10) == "10"
    with pytest.raises(ValueError, match="use 1, 10, another factor > 0, or max"):
        config.parse_speed("0")
    replay = str(tmp_path / "x.bin")
    assert load(["--replay", replay, "--speed", "max"]).meters[0].speed_factor is None
    assert load(["--replay", replay, "--speed", "10"]).meters[0].speed_factor == 10.0
    assert load(["--replay", replay]).meters[0].speed_factor == 1.0


def test_env_booleans_and_numbers() -> None:
    cfg = load(
        [],
        {
            "SMLOGGER_SIMULATE": "yes",
            "SMLOGGER_CSV": "off",
            "SMLOGGER_HTTP": "off",
            "SMLOGGER_DB_BATCH_SIZE": "50",
            "SMLOGGER_PROFILE": "PV",
        },
    )
    assert cfg.meters[0].simulate and not cfg.csv_enabled and cfg.http_address is None
    assert cfg.database_batch_size == 50 and cfg.meters[0].profile == "pv"


def test_passwords_masked_in_dump_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    cfg = load(
        ["--simulate", "--db-url", "mysql://logger:s3cr3t-pw@db.lan:3306/smart_meter"],
        {"SMLOGGER_HTTP_TOKEN": "tok-XYZ-123"},
    )
    text = config.dump(cfg)
    assert "s3cr3t-pw" not in text and "tok-XYZ-123" not in text
    assert 'url = "mysql://logger:***@db.lan:3306/smart_meter"' in text
    assert 'token = "***"' in text
    assert set(cfg.secrets()) == {"s3cr3t-pw", "tok-XYZ-123"}

    logger = logging.getLogger("test-redaction")
    redactor = config.RedactingFilter(cfg.secrets())
    logger.addFilter(redactor)
    try:
        with caplog.at_level(logging.INFO, logger="test-redaction"):
            logger.info("connecting to %s", cfg.database_url)
            logger.info("token is tok-XYZ-123")
    finally:
        logger.removeFilter(redactor)
    assert "s3cr3t-pw" not in caplog.text and "tok-XYZ-123" not in caplog.text
    assert "mysql://logger:***@db.lan:3306/smart_meter" in caplog.text


def test_mask_url_variants() -> None:
    assert mask_url("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"
    assert mask_url("mysql://u@h/db") == "mysql://u@h/db"
    assert mask_url("sqlite:////var/lib/x.db") == "sqlite:////var/lib/x.db"
    assert mask_url("mysql://u:pw@[::1]:3306/db") == "mysql://u:***@[::1]:3306/db"
    assert mask_url("mysql://u:pw@[fe80::1%25eth0]/db") == "mysql://u:***@[fe80::1%25eth0]/db"
    assert mask_url("mysql://u:p@ss@h:3306/db?ssl=1") == "mysql://u:***@h:3306/db?ssl=1"
    assert mask_url("mysql://u:pw@h:notaport/db") == "mysql://u:***@h:notaport/db"
    # the store's database description uses the same function
    assert redact_url("mysql://u:pw@[::1]:3306/db") == "mysql://u:***@[::1]:3306/db"
    assert redact_url(None) == "sqlite (default)"


def test_example_is_valid_and_complete(tmp_path: Path) -> None:
    text = config.example()
    for option in config.ALL_OPTIONS:
        assert option.flag in text and option.env in text
    cfg = load(["--config", write(tmp_path, text)])
    assert cfg.meters[0].port == "/dev/ttyUSB0" and cfg.meters[0].name == "house"
    assert cfg.database_url == "" and cfg.http_token == ""


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = load(["--simulate", "--csv-rotate", "hourly", "--store-interval", "2.5"])
    again = load(["--config", write(tmp_path, config.dump(cfg))])
    assert again.csv_rotate == "hourly" and again.store_interval == 2.5
    assert again.meters == cfg.meters
