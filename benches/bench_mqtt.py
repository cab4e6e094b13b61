"""What MQTT costs the 1 Hz daemon: CPU and resident memory with MQTT on vs off.

Starts a private mosquitto on 127.0.0.1 and two `smlogger run --simulate --interval 1`
daemons side by side (same machine load for both: SQLite + CSV each, one with
`--mqtt`), lets them warm up, then samples /proc/PID/stat (utime + stime) and
/proc/PID/status (VmRSS) for `--seconds` (default 60). A subscriber counts what arrives.

    python benches/bench_mqtt.py                  # 60 s, profile full (U/I/f: 17 values)
    python benches/bench_mqtt.py --seconds 300 --profile household

Prints the figures and writes them to benches/RESULTS.md under "## MQTT" (replacing an
older MQTT section, leaving the rest of the file alone). No assertions: it prints numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benches" / "RESULTS.md"
HEADING = "## MQTT"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_broker(base: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = base / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "persistence false", "allow_anonymous true"]
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


@dataclass
class Sample:
    """CPU ticks and RSS samples of one daemon."""

    name: str
    proc: subprocess.Popen[bytes]
    ticks0: int = 0
    t0: float = 0.0
    ticks1: int = 0
    t1: float = 0.0
    rss_kib: list[int] = field(default_factory=list)

    def ticks(self) -> int:
        # fields 14/15 of /proc/PID/stat, after the parenthesised command name
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        rest = stat[stat.rindex(")") + 2 :].split()
        return int(rest[11]) + int(rest[12])

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_percent(self) -> float:
        return (self.ticks1 - self.ticks0) / os.sysconf("SC_CLK_TCK") / (self.t1 - self.t0) * 100


def start_daemon(base: Path, name: str, profile: str, mqtt: str | None) -> subprocess.Popen[bytes]:
    data = base / name
    args = [sys.executable, "-m", "smlogger", "run", "--simulate", "--profile", profile,
            "--interval", "1", "--data-dir", str(data), "--http", "off", "-q"]  # fmt: skip
    if mqtt:
        args += ["--mqtt", mqtt, "--mqtt-client-id", f"bench-{name}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(base / "home")}
    with open(base / f"{name}.log", "wb") as log:
        return subprocess.Popen(args, env=env, stderr=log)


def count_messages(port: int, stop: threading.Event, counter: list[int]) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter")
    client.on_connect = lambda c, *a: c.subscribe("smlogger/#")

    def on_message(c: object, u: object, m: object) -> None:
        counter[0] += 1

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    stop.wait()
    client.loop_stop()


def write_results(text: str) -> None:
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if HEADING in old.splitlines():
        lines = old.splitlines(keepends=True)
        start = next(i for i, line in enumerate(lines) if line.rstrip() == HEADING)
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        new = "".join(lines[:start]) + text + "".join(lines[end:])
    else:
        new = old.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time (>= 60)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument("--profile", default="full", choices=("household", "pv", "full"))
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="smlogger-bench-mqtt-"))
    broker, port = start_broker(base)
    runs = [
        Sample("off", start_daemon(base, "off", args.profile, None)),
        Sample("on", start_daemon(base, "on", args.profile, f"mqtt://127.0.0.1:{port}")),
    ]
    stop = threading.Event()
    received = [0]
    counter = threading.Thread(target=count_messages, args=(port, stop, received), daemon=True)
    counter.start()
    try:
        time.sleep(args.warmup)
        for run in runs:
            if run.proc.poll() is not None:
                raise RuntimeError(f"daemon {run.name} exited: {(base / (run.name + '.log'))}")
            run.ticks0, run.t0 = run.ticks(), time.monotonic()
        received0 = received[0]
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            for run in runs:
                run.rss_kib.append(run.rss())
            time.sleep(1.0)
        for run in runs:
            run.ticks1, run.t1 = run.ticks(), time.monotonic()
        messages = received[0] - received0
    finally:
        stop.set()
        for run in runs:
            run.proc.send_signal(signal.SIGTERM)
            run.proc.wait(15)
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(base, ignore_errors=True)

    off, on = runs
    rows = []
    for run in runs:
        mean_mib = statistics.mean(run.rss_kib) / 1024
        rows.append(
            f"| MQTT {run.name} | {run.cpu_percent():.2f} | {mean_mib:.1f} "
            f"| {max(run.rss_kib) / 1024:.1f} |"
        )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join(
        [
            HEADING,
            "",
            f"`python benches/bench_mqtt.py --seconds {args.seconds:g} --profile {args.profile}` "
            f"({stamp}, {platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}): two `smlogger run --simulate --interval 1` daemons "
            "side by side (SQLite + CSV each), one also publishing to a local mosquitto; "
            f"CPU from /proc/PID/stat over {args.seconds:g} s after {args.warmup:g} s warm-up, "
            "RSS from /proc/PID/status every second.",
            "",
            "| Daemon | CPU % | RSS mean MiB | RSS max MiB |",
            "|---|---:|---:|---:|",
            *rows,
            "",
            f"MQTT costs {on.cpu_percent() - off.cpu_percent():+.2f} CPU percentage points and "
            f"{(statistics.mean(on.rss_kib) - statistics.mean(off.rss_kib)) / 1024:+.1f} MiB; "
            f"{messages / args.seconds:.1f} messages/s arrived at a subscriber (default rate "
            "rules: every changed value, heartbeat 300 s).",
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_results(text)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
