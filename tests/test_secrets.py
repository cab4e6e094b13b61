"""Secrets: `*_file` options, warnings about readable secret files and flags, private data files."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for

from smlogger import config as cfgmod
from smlogger.config import ConfigError
from smlogger.secretfiles import apply_umask, url_password
from smlogger.store.url import open_database

TOKEN = "t0k3n with spaces"
PASSWORD = "p@ss:w/rd%"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cfgmod.add_arguments(parser)
    return parser.parse_args(argv)


def load(argv: list[str], env: dict[str, str] | None = None) -> cfgmod.Config:
    return cfgmod.load(parse(argv), env or {}, require_meter=False)


def secret_file(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


# ---- *_file options ----------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["", "\n", "\r\n", "\n\n"])
def test_token_file_from_flag_env_and_config_file(tmp_path: Path, ending: str) -> None:
    path = secret_file(tmp_path, "token", TOKEN + ending)
    by_flag = load(["--http-token-file", str(path)])
    by_env = load([], {"SMLOGGER_HTTP_TOKEN_FILE": str(path)})
    conf = secret_file(tmp_path, "c.toml", f'[http]\ntoken_file = "{path}"\n')
    by_file = load(["--config", str(conf)])
    for config in (by_flag, by_env, by_file):
        assert config.http_token == TOKEN
        assert TOKEN in config.secrets()
        assert config.warnings == ()
    # the effective configuration shows where the token comes from, never the token
    dump = cfgmod.dump(by_flag)
    assert str(path) in dump and TOKEN not in dump


def test_password_file_goes_into_the_database_url(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "pw", PASSWORD + "\n")
    config = load(
        [
            "--db-url",
            "mysql://smlogger@db.example:3306/smart_meter",
            "--db-password-file",
            str(path),
        ]
    )
    assert url_password(config.database_url) == PASSWORD
    assert config.database_url.startswith("mysql://smlogger:")
    assert config.database_url.endswith("@db.example:3306/smart_meter")
    assert PASSWORD in config.secrets()
    assert PASSWORD not in cfgmod.dump(config)
    assert config.warnings == ()  # no secret on the command line: the flag names only a file


def test_password_file_reaches_a_real_database_driver(tmp_path: Path) -> None:
    # the encoded password must come out of the URL parser exactly as written in the file
    path = secret_file(tmp_path, "pw", PASSWORD + "\n")
    config = load(
        ["--db-url", "postgresql://smlogger@127.0.0.1:1/x", "--db-password-file", str(path)]
    )
    db = open_database(config.database_url, tmp_path)
    assert db.connect_params["password"] == PASSWORD


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--http-token-file", "{missing}"], "No such file"),
        (["--http-token-file", "{dir}"], "Is a directory"),
        (["--http-token-file", "{empty}"], "is empty"),
        (["--http-token-file", "{two}"], "more than one line"),
        (["--http-token-file", "{good}", "--http-token", "x"], "http.token is set as well"),
        (["--db-password-file", "{good}"], "names no user"),
        (["--db-url", "sqlite:///x.db", "--db-password-file", "{good}"], "names no user"),
        (
            ["--db-url", "mysql://u:pw@h/db", "--db-password-file", "{good}"],
            "already contains a password",
        ),
    ],
)
def test_bad_secret_files_are_named(tmp_path: Path, argv: list[str], needle: str) -> None:
    paths = {
        "missing": tmp_path / "nope",
        "dir": tmp_path,
        "empty": secret_file(tmp_path, "empty", "\n"),
        "two": secret_file(tmp_path, "two", "a\nb\n"),
        "good": secret_file(tmp_path, "good", "secret-text\n"),
    }
    argv = [a.format(**{k: str(v) for k, v in paths.items()}) for a in argv]
    with pytest.raises(ConfigError) as info:
        load(argv)
    text = str(info.value)
    assert needle in text
    assert "_file (flag --" in text and "environment SMLOGGER_" in text
    assert "secret-text" not in text


def test_unreadable_secret_file(tmp_path: Path) -> None:
    # root reads every file: the child drops the capabilities that let it (setpriv, util-linux)
    path = secret_file(tmp_path, "token", TOKEN, mode=0o600)
    os.chown(path, 65534, 65534)
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to read as someone who may not")  # CI runs as root
    code = (
        "import argparse\n"
        "from smlogger import config\n"
        "p = argparse.ArgumentParser(); config.add_arguments(p)\n"
        f"config.load(p.parse_args(['--http-token-file', {str(path)!r}]), {{}}, "
        "require_meter=False)\n"
    )
    result = subprocess.run(
        [setpriv, "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(cfgmod.__file__).parents[1])},
        timeout=60,
    )
    assert result.returncode != 0
    expected = "http.token_file (flag --http-token-file, environment SMLOGGER_HTTP_TOKEN_FILE)"
    assert expected in result.stderr
    assert "Permission denied" in result.stderr and TOKEN not in result.stderr


# ---- warnings ----------------------------------------------------------------------------------


def test_world_readable_config_with_a_secret_warns(tmp_path: Path) -> None:
    conf = secret_file(tmp_path, "c.toml", f'[http]\ntoken = "{TOKEN}"\n', mode=0o644)
    config = load(["--config", str(conf)])
    assert len(config.warnings) == 1
    warning = config.warnings[0]
    assert str(conf) in warning and "http.token" in warning and "every user" in warning
    assert "0644" in warning and f"chmod 0600 {conf}" in warning
    assert TOKEN not in warning
    conf.chmod(0o600)
    assert load(["--config", str(conf)]).warnings == ()


def test_database_password_in_a_readable_config_warns(tmp_path: Path) -> None:
    conf = secret_file(
        tmp_path, "c.toml", '[database]\nurl = "mysql://u:hunter2@h/db"\n', mode=0o604
    )
    [warning] = load(["--config", str(conf)]).warnings
    assert "the password in database.url" in warning and "hunter2" not in warning
    # a URL without a password is no secret: the same mode is fine
    conf.write_text('[database]\nurl = "mysql://u@h/db"\n')
    assert load(["--config", str(conf)]).warnings == ()


def test_group_readable_is_fine_only_for_the_services_own_group(tmp_path: Path) -> None:
    conf = secret_file(tmp_path, "c.toml", f'[http]\ntoken = "{TOKEN}"\n', mode=0o640)
    os.chown(conf, -1, os.getegid())
    assert load(["--config", str(conf)]).warnings == ()
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another group")  # CI runs as root
    os.chown(conf, -1, os.getegid() + 4242)
    [warning] = load(["--config", str(conf)]).warnings
    assert "its group" in warning and "0640" in warning


def test_readable_token_file_warns(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "token", TOKEN, mode=0o644)
    [warning] = load([], {"SMLOGGER_HTTP_TOKEN_FILE": str(path)}).warnings
    assert str(path) in warning and "http.token" in warning


def test_secret_flags_warn_about_ps_and_env_does_not(tmp_path: Path) -> None:
    [warning] = load(["--http-token", TOKEN]).warnings
    assert "--http-token" in warning and "`ps`" in warning
    assert "SMLOGGER_HTTP_TOKEN" in warning and "http.token_file" in warning
    assert TOKEN not in warning
    [warning] = load(["--db-url", "mysql://u:pw@h/db"]).warnings
    assert "--db-url" in warning and "database.password_file" in warning
    assert load(["--db-url", "mysql://u@h/db"]).warnings == ()
    assert load([], {"SMLOGGER_HTTP_TOKEN": TOKEN}).warnings == ()


# ---- the running logger ------------------------------------------------------------------------


def test_apply_umask_never_loosens(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        assert apply_umask() == 0o022
        assert os.umask(0o027) == 0o077
        apply_umask()
        assert os.umask(0o277) == 0o077
        apply_umask()
        assert os.umask(old) == 0o277
    finally:
        os.umask(old)


def _get_json(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


@pytest.mark.slow  # smlogger run as a process
def test_running_logger_warns_and_keeps_its_files_private(tmp_path: Path) -> None:
    """A world-readable config with a token: warned in the log and in /api/status; every file and
    directory the logger creates (SQLite, CSV, disk queue, capture) is 0600/0700 although the
    parent process's umask is the permissive 0022."""
    from helpers import free_port

    port = free_port()
    data = tmp_path / "data"
    ram = tmp_path / "ram"
    conf = secret_file(
        tmp_path,
        "smlogger.toml",
        f'data_dir = "{data}"\n[http]\nlisten = "127.0.0.1:{port}"\ntoken = "{TOKEN}"\n'
        # readings reach the files within a second and the database every 10 readings
        # (defaults: 10 minutes); the RAM tier sits where the test can see it
        f'[storage]\nsync_interval = 1\ncommit_interval = 0\nram_dir = "{ram}"\n'
        "[database]\nbatch_size = 10\n"
        f'[[meter]]\nsimulate = true\ninterval = 0.05\ncapture = "{data}/raw/capture.bin"\n',
        mode=0o644,
    )
    log_path = tmp_path / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    old = os.umask(0o022)
    try:
        with open(log_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "smlogger", "run", "--config", str(conf)],
                stderr=err,
                env=env,
            )
    finally:
        os.umask(old)
    try:
        url = f"http://127.0.0.1:{port}/api/status"

        def stored() -> bool:
            try:
                sinks = _get_json(url, TOKEN)["sinks"]
            except OSError:
                return False
            return all(s.get("written", 0) >= 5 for s in sinks.values()) and len(sinks) == 2

        wait_for(stored, 60, "readings written by both sinks")
        # the recommended way (config file) keeps the token out of what `ps` shows everyone
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert "smlogger.toml" in cmdline and TOKEN not in cmdline
        status = _get_json(url, TOKEN)
        [warning] = status["warnings"]
        # the RAM tier is as private as the data dir (checked while it is in use)
        ram_paths = list(ram.rglob("*"))
        assert any(p.is_file() for p in ram_paths), ram_paths
        for path in ram_paths:
            mode = stat.S_IMODE(path.lstat().st_mode)
            assert mode & 0o077 == 0, f"{path} is {mode:04o}"
        assert str(conf) in warning and "every user" in warning and TOKEN not in warning
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    log_text = log_path.read_text()
    assert f"WARNING smlogger: {conf} holds http.token" in log_text
    assert TOKEN not in log_text

    seen = {"dir": 0, "file": 0}
    for path in [data, *data.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        kind = "dir" if path.is_dir() else "file"
        seen[kind] += 1
        assert mode & 0o077 == 0, f"{path} is {mode:04o}"
    names = {p.name for p in data.rglob("*")}
    assert {"smlogger.db", "spool", "csv", "capture.bin"} <= names, names
    assert any(p.parent.name == "spool" for p in data.rglob("*") if p.is_file())
    assert seen["file"] >= 5 and seen["dir"] >= 3
