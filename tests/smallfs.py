"""A really small filesystem for disk-full tests: a size-limited tmpfs mounted in a temp dir.

CI runs as root, so the tests mount for real; when mounting is impossible the test fails and
says why (a skipped disk-full test would hide exactly the losses it is there to catch).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_filesystem(mount_point: Path, size_kib: int) -> Iterator[Path]:
    """Mount a tmpfs of `size_kib` KiB on `mount_point` for the duration of the block."""
    mount_point.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"cannot mount a {size_kib} KiB tmpfs on {mount_point} (the disk-full tests need "
            f"root, as in CI): {result.stderr.strip() or result.returncode}"
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path, name: str = "filler") -> Path:
    """Write a file into `directory` until the filesystem is full; returns its path."""
    path = directory / name
    block = b"\xee" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        # the last few hundred bytes too: a half-page may still be free
        for size in (1024, 256, 64, 16, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, block[:size]):
                    pass
    finally:
        os.close(fd)
    return path
