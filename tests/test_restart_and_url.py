"""A restarted simulated meter continues its counters (never backwards), and `smlogger run`
prints the page's address -- against real `smlogger run` processes."""

from __future__ import annotations

import signal
from pathlib import Path

import peewee
import pytest
from helpers import free_port, wait_for
from test_run_process import EVER, start, stop

from smlogger.store import StoreReader, open_database

# smlogger run as a process
pytestmark = pytest.mark.slow


def _energies(data_dir: Path) -> list[float]:
    if not (data_dir / "smlogger.db").exists():
        return []
    db = open_database(None, data_dir)
    try:
        return [r.e_sum for r in StoreReader(db).export(None, *EVER) if r.e_sum is not None]
    except peewee.OperationalError:  # the logger has not created its tables yet
        return []
    finally:
        db.close()


def test_simulator_counters_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ["--simulate", "--interval", "0.1", "--data-dir", str(data), "--no-http"]
    # database batches within seconds (default: every 10 minutes)
    args += ["--sync-interval", "0.5", "--commit-interval", "0"]
    counts = []
    for _ in range(2):
        proc, log_path = start(args, tmp_path)
        try:
            before = len(_energies(data))

            def stored(b: int = before) -> bool:
                return len(_energies(data)) >= b + 10

            wait_for(stored, what="readings stored")
        finally:  # a failed wait must not leave the logger running after the test
            code, _ = stop(proc, signal.SIGTERM)
        assert code == 0, log_path.read_text()
        counts.append(len(_energies(data)))
    energies = _energies(data)
    first_run = energies[: counts[0]]
    assert energies[counts[0]] >= first_run[-1], "the second run started below the first's end"
    assert energies == sorted(energies)
    assert "counters restored from" in log_path.read_text()
    assert len(list(data.glob("simulated-*.json"))) == 1


def test_run_prints_the_page_url(tmp_path: Path) -> None:
    port = free_port()
    proc, log_path = start(
        ["--simulate", "--no-db", "--no-csv", "--http", f"127.0.0.1:{port}"], tmp_path
    )
    try:
        wait_for(
            lambda: f"web page: http://127.0.0.1:{port}/" in log_path.read_text(),
            what="the page URL in the log",
        )
    finally:
        code, _ = stop(proc, signal.SIGTERM)
    assert code == 0
