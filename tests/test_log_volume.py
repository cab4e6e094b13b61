"""Log volume during a database outage (issue 11): a Pi's journal must not pay for it.

A real logger process (`smlogger run --simulate`) writes to a real MariaDB while its page is
open (an event stream) and polled like the page does it; MariaDB is stopped for 20 s and
started again. The log may say that the database went away and came back (for the writer and
for the web reads), nothing more: at most 10 lines, no tracebacks. Before issue 11 the same
outage with 5 page requests gave 524 lines. (An outage that a loaded machine stretches past a
minute may add one "repeated N times" summary per condition and minute: that is the design.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from helpers import HTTP_TROUBLE, free_port, wait_for
from servers import MariaDBServer
from webload import SseClients

from smlogger.logutil import DEFAULT_INTERVAL_S

PAGE_PATHS = (
    "/",
    "/api/meters",
    "/api/live",
    "/api/history",
    "/api/consumption?period=day",
    "/api/status",
)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def sql_status(base: str) -> dict[str, Any]:
    status: dict[str, Any] = get_json(f"{base}/api/status")["sinks"]["sql"]
    return status


class Poller:
    """Requests what the open page requests, every 0.5 s, in a thread."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.answers: dict[int, int] = {}
        self.rounds = 0  # requests of every path done
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            for path in PAGE_PATHS:
                try:
                    with urllib.request.urlopen(self.base + path, timeout=10) as response:
                        response.read()
                        status = response.status
                except urllib.error.HTTPError as exc:
                    status = exc.code
                except OSError:
                    status = 0
                self.answers[status] = self.answers.get(status, 0) + 1
            self.rounds += 1


@pytest.mark.slow
def test_mariadb_outage_of_20_s_logs_at_most_10_lines(tmp_path: Path) -> None:
    with MariaDBServer.running(tmp_path / "mariadb") as srv:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = tmp_path / "stderr.txt"
        env = {**os.environ, "HOME": str(tmp_path / "home")}
        for inherited in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            env.pop(inherited, None)
        args = ["--simulate", "--interval", "0.5", "--http", f"127.0.0.1:{port}"]
        args += ["--db-url", srv.url(), "--log-level", "INFO"]
        # every reading is committed at once (default: batches every 5 minutes), so the
        # writer meets the outage at once and retries all through it: the most log lines
        args += ["--sync-interval", "0"]
        with open(log_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "smlogger", "run", *args], stderr=err, env=env
            )
        poller = Poller(base)
        sse = None
        try:
            wait_for(
                lambda: sql_status(base)["written"] >= 3, 60, "rows in MariaDB", ignore=HTTP_TROUBLE
            )
            sse = SseClients("127.0.0.1", port, 1, ["127.0.0.1"]).start()
            poller.thread.start()
            time.sleep(2)
            before = log_path.read_text().splitlines()
            outage_from = time.monotonic()
            srv.stop()
            wait_for(
                lambda: sql_status(base)["db"] == "down",
                30,
                "the outage noticed",
                ignore=HTTP_TROUBLE,
            )
            time.sleep(20)
            srv.start()
            wait_for(
                lambda: sql_status(base)["db"] == "ok" and sql_status(base)["queue_depth"] == 0,
                90,
                "the backlog written after the outage",
                ignore=HTTP_TROUBLE,
            )
            # the page's reads find the database again: two more rounds of them
            rounds = poller.rounds
            wait_for(lambda: poller.rounds >= rounds + 2, 30, "the page's requests after it")
            outage_s = time.monotonic() - outage_from
            status = sql_status(base)
            assert status["last_error"] is None, status  # no stale error after recovery
            assert sse.readings[0] > 0
        finally:
            poller.stop.set()
            if sse is not None:
                sse.stop()
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()  # no logger left behind for the next test
                proc.wait(10)
                pytest.fail(f"smlogger run ignored SIGTERM for 60 s:\n{log_path.read_text()}")
        after = log_path.read_text().splitlines()
    outage_lines = after[len(before) :]
    # the shutdown at the end logs a few lines of its own
    outage_lines = [line for line in outage_lines if "received: flushing" not in line]
    shutdown_at = next(
        (i for i, line in enumerate(outage_lines) if "SIGTERM" in line), len(outage_lines)
    )
    outage_lines = outage_lines[:shutdown_at]
    report = "\n".join(outage_lines)
    print(f"{len(outage_lines)} lines during the outage:\n{report}")
    assert poller.answers.get(503, 0) > 0, poller.answers  # the page did hit the dead database
    # one line per change of state; a condition that lasts a minute or more adds its counted
    # summary once a minute (StateLog), at most once per minute for each condition that began
    repeats = [line for line in outage_lines if "(repeated " in line]
    changes = [line for line in outage_lines if "(repeated " not in line]
    assert len(changes) <= 10, report
    assert len(repeats) <= len(changes) * int(outage_s // DEFAULT_INTERVAL_S), (outage_s, report)
    assert not any("Traceback" in line for line in outage_lines), report
    # the lines name what happened: the writer's and the web reads' outage and recovery
    assert any("database unavailable" in line for line in outage_lines), report
    assert any("database back" in line for line in outage_lines), report
