"""Shared fixtures: where the real meter recordings live (never copied into the repo); the
timeout of the quick tests; the logging set-up restored after each test."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from test_serial_pty import PtyPair

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = Path(os.environ.get("SMLOGGER_RECORDINGS", ROOT.parent / "shared" / "recordings"))

# Tests not marked `slow` take seconds even on a loaded machine: one that hangs should fail
# after two minutes, not after the 300 s that pyproject allows the server and browser tests
# (and not before a wait_for inside it gives up with its own message: see MIN_WAIT_S).
QUICK_TIMEOUT_S = 120


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") is None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(QUICK_TIMEOUT_S))


@pytest.fixture(scope="session", autouse=True)
def _ram_tier_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Loggers started by tests (and their child processes, which inherit the environment)
    keep their RAM tier (storage.ram_dir = auto) in the test run's tmp dir, not in /dev/shm,
    where a killed test logger's directory would stay until the next reboot."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUNTIME_DIRECTORY", str(tmp_path_factory.mktemp("runtime")))
        yield


# the loggers whose level `cli.setup_logging` sets (besides the root logger's handlers)
LOGGERS_SET_UP = ("", "peewee", "asyncio", "urllib3", "smlogger")


def _pytests_own(handler: logging.Handler) -> bool:
    # pytest adds (and removes) its capture handlers around each phase of a test by itself
    return type(handler).__module__.startswith("_pytest")


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A test that runs `cli.main` in-process gets `setup_logging`: the root logger's handlers
    replaced by one bound to that test's captured stderr, and levels changed. Both go back
    after the test, so later tests log (and caplog) as before."""
    root = logging.getLogger()
    handlers = [h for h in root.handlers if not _pytests_own(h)]
    levels = {name: logging.getLogger(name).level for name in LOGGERS_SET_UP}
    yield
    for handler in list(root.handlers):
        if not _pytests_own(handler) and handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def recording_files() -> list[Path]:
    """All recordings in byte-wise sorted file-name order (the benchmark stream order)."""
    files = sorted(RECORDINGS.glob("*.bin"), key=lambda p: p.name.encode())
    if not files:
        raise RuntimeError(f"no recordings under {RECORDINGS}; ../shared must sit beside the repo")
    return files


@pytest.fixture(scope="session")
def recordings_dir() -> Path:
    return RECORDINGS


@pytest.fixture(scope="session")
def expected() -> dict[str, Any]:
    with open(RECORDINGS / "expected.json", encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[PtyPair]:
    """A socat pseudo-terminal pair (meter end, logger end), stopped after the test."""
    from test_serial_pty import PtyPair  # the pty tests' own module: only loaded when used

    pair = PtyPair(tmp_path)
    pair.start()
    yield pair
    if pair.proc is not None:
        pair.stop()
