"""``smlogger decode`` and ``smlogger bench`` run as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, recording_files

PYTHON = [sys.executable, "-m", "smlogger"]

# libsml-testing's README: sml_server output for the first two frames of this file.
EMH_FIRST_LINES = """\
129-129:199.130.3*255#EMH#
1-0:0.0.0*255#02280816#
1-0:1.8.1*255#14798112.9#Wh
1-0:1.8.2*255#2012.4#Wh
0-0:96.1.255*255#0002280816#
1-0:1.7.0*255#13.8#W
129-129:199.130.3*255#EMH#
1-0:0.0.0*255#02280816#
1-0:1.8.1*255#14798113.0#Wh
1-0:1.8.2*255#2012.4#Wh
""".splitlines()

DZG_JMBERG = """\
1-0:96.50.1*1#DZG#
1-0:96.1.0*255#0a 01 44 5a 47 00 02 82 22 5e #
1-0:1.8.0*255#5430157.7#Wh
1-0:2.8.0*255#26244572.6#Wh
1-0:16.7.0*255#356.24#W
""".splitlines()

DZG_NEG_FIRST = """\
1-0:96.50.1*1#DZG#
1-0:96.1.0*255#0a 01 44 5a 47 00 03 9e 20 53 #
1-0:1.8.0*255#13232.9#Wh
1-0:2.8.0*255#1500321.3#Wh
1-0:16.7.0*255#-105.50#W
""".splitlines()

HOLLEY_FIRST = """\
1-0:96.50.1*1#HLY#
1-0:96.1.0*255#0a 01 48 4c 59 02 00 03 a9 10 #
1-0:1.8.1*255#0.0#Wh
1-0:1.8.2*255#177360.1#Wh
1-0:2.8.0*255#314926.0#Wh
1-0:16.7.0*255#460#W
1-0:32.7.0*255#232.3#V
1-0:52.7.0*255#232.5#V
1-0:72.7.0*255#232.5#V
1-0:31.7.0*255#1.06#A
1-0:51.7.0*255#1.74#A
1-0:71.7.0*255#0.91#A
1-0:81.7.1*255#120#°
1-0:81.7.2*255#240#°
1-0:81.7.4*255#298#°
1-0:81.7.15*255#312#°
1-0:81.7.26*255#288#°
1-0:14.7.0*255#50.0#Hz
1-0:0.2.0*0#1.02.007#
1-0:96.90.2*1#A01A#
1-0:96.5.0*255#1835268#
""".splitlines()


def run(
    *args: str, stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [*PYTHON, *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
        check=False,
    )


def lines(proc: subprocess.CompletedProcess[bytes]) -> list[str]:
    return proc.stdout.decode("utf-8").splitlines()


def test_emh_matches_libsml_sml_server(recordings_dir: Path) -> None:
    proc = run("decode", str(recordings_dir / "EMH_eHZ-GW8E2A500AK2.bin"))
    assert proc.returncode == 0, proc.stderr
    out = lines(proc)
    assert out[: len(EMH_FIRST_LINES)] == EMH_FIRST_LINES
    assert out[10:12] == ["0-0:96.1.255*255#0002280816#", "1-0:1.7.0*255#14.7#W"]
    assert len(out) == 16 * 6


@pytest.mark.parametrize(
    ("name", "first"),
    [
        ("DZG_DVS-7412.2_jmberg.bin", DZG_JMBERG),
        ("DZG_DVS-7420.2V.G2_mtr2_neg.bin", DZG_NEG_FIRST),
        ("HOLLEY_DTZ541-ZDBA.bin", HOLLEY_FIRST),
    ],
)
def test_sml_server_lines(recordings_dir: Path, name: str, first: list[str]) -> None:
    proc = run("decode", str(recordings_dir / name))
    assert proc.returncode == 0, proc.stderr
    assert lines(proc)[: len(first)] == first


def test_dzg_power_correction_in_output(recordings_dir: Path) -> None:
    proc = run("decode", str(recordings_dir / "DZG_DVS-7412.2_jmberg.bin"))
    assert "1-0:16.7.0*255#356.24#W" in lines(proc)


def test_all_recordings_through_stdin(recordings_dir: Path) -> None:
    stream = b"".join(p.read_bytes() for p in recording_files())
    proc = run("decode", "-", "--stats", stdin=stream)
    assert proc.returncode == 0, proc.stderr
    out = lines(proc)
    # One line per value sent (expected.json lists 1579, the entries without value print none).
    assert len(out) == 1579
    assert all(line.count("#") == 2 for line in out)
    stats = json.loads(proc.stderr.decode().strip().splitlines()[-1])
    assert stats["frames_ok"] == 227
    assert stats["bytes"] == len(stream)


def test_stdin_equals_file(recordings_dir: Path) -> None:
    path = recordings_dir / "ISKRA_MT691_eHZ-MS2020.bin"
    from_file = run("decode", str(path))
    from_stdin = run("decode", "-", stdin=path.read_bytes())
    assert from_file.returncode == from_stdin.returncode == 0
    assert from_file.stdout == from_stdin.stdout
    assert len(lines(from_file)) > 18


def test_json_lines(recordings_dir: Path) -> None:
    proc = run("decode", "--json", str(recordings_dir / "EMH_eHZ-GW8E2A500AK2.bin"))
    assert proc.returncode == 0, proc.stderr
    frames = [json.loads(line) for line in lines(proc)]
    assert len(frames) == 16
    for f in frames:
        assert set(f) >= {"offset", "length", "ok", "error", "crc", "messages"}
        assert f["ok"] is True
        assert [m["type"] for m in f["messages"]] == [
            "OpenResponse",
            "GetListResponse",
            "CloseResponse",
        ]
    first = frames[0]
    assert first["offset"] == 0
    assert first["length"] == 252
    body = first["messages"][1]["body"]
    assert body["server_id"] == "3032323830383136"  # bytes as hex
    values = {v["obis"]: v for v in body["values"]}
    assert values["1-0:1.8.1*255"]["value"] == 14798112.9
    assert values["1-0:1.8.1*255"]["unit_symbol"] == "Wh"


def test_json_with_errors(recordings_dir: Path) -> None:
    proc = run("decode", "--json", "--errors", str(recordings_dir / "EasyMeter_Q3A_A1064V1009.bin"))
    assert proc.returncode == 0, proc.stderr
    frames = [json.loads(line) for line in lines(proc)]
    assert [f["error"] for f in frames if not f["ok"]].count("crc") == 3
    assert sum(f["ok"] for f in frames) == 4
    offsets = [f["offset"] for f in frames]
    assert offsets == sorted(offsets)


def test_no_valid_frame_exits_1(recordings_dir: Path) -> None:
    proc = run("decode", str(recordings_dir / "DZG_DVS-7420.2V.G2_mtr1_error.bin"))
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert b"no valid SML frame" in proc.stderr


def test_garbage_exits_1() -> None:
    garbage = bytes((i * 7919) % 251 for i in range(20_000))
    proc = run("decode", "-", stdin=garbage)
    assert proc.returncode == 1
    assert proc.stdout == b""
    empty = run("decode", "-", stdin=b"")
    assert empty.returncode == 1


def test_missing_file_exits_2(tmp_path: Path) -> None:
    proc = run("decode", str(tmp_path / "nope.bin"))
    assert proc.returncode == 2
    assert b"nope.bin" in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_crc_option(recordings_dir: Path) -> None:
    path = str(recordings_dir / "HOLLEY_DTZ541-ZDBA.bin")
    assert run("decode", "--crc", "x25", path).returncode == 0
    # These Holley frames use X-25; demanding KERMIT finds nothing.
    assert run("decode", "--crc", "kermit", path).returncode == 1


def test_progress_bar_on_stderr(recordings_dir: Path) -> None:
    proc = run("decode", "--progress", str(recordings_dir / "ISKRA_MT175_eHZ.bin"))
    assert proc.returncode == 0
    assert b"100.0%" in proc.stderr
    assert b"MB/s" in proc.stderr


def test_broken_pipe_is_quiet(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"".join(p.read_bytes() for p in recording_files()) * 40)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [*PYTHON, "decode", str(big)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read()
        code = proc.wait(timeout=60)
    assert code == 0
    assert b"Traceback" not in err


def test_bench_prints_throughput(recordings_dir: Path) -> None:
    proc = run(
        "bench",
        str(recordings_dir / "ISKRA_MT691_eHZ-MS2020.bin"),
        "--repeat",
        "20",
        "--rounds",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert out.count("MB/s") >= 3
    assert "frames/s" in out
    assert "valid frames: 360" in out


# ---- capture files and --summary ------------------------------------------------------------


def _capture_of(recording: Path, target: Path) -> Path:
    """`recording` written by the logger's own CaptureWriter in 100-byte chunks (as a serial
    port delivers it), plain or gzip by the file name."""
    from datetime import datetime, timezone

    from smlogger.capture import CaptureWriter

    data = recording.read_bytes()
    writer = CaptureWriter(target)
    try:
        for i in range(0, len(data), 100):
            writer.write(
                datetime(2024, 5, 1, 12, 0, i // 100, tzinfo=timezone.utc), data[i : i + 100]
            )
    finally:
        writer.close()
    return target


@pytest.mark.parametrize("name", ["capture.txt", "capture.txt.gz"])
def test_capture_file_decodes_like_the_raw_dump(
    recordings_dir: Path, tmp_path: Path, name: str
) -> None:
    recording = recordings_dir / "EMH_eHZ-HW8E2A5L0EK2P.bin"
    capture = _capture_of(recording, tmp_path / name)
    assert capture.read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"#s")
    raw = run("decode", str(recording))
    captured = run("decode", str(capture))
    assert raw.returncode == captured.returncode == 0, captured.stderr
    assert captured.stdout == raw.stdout and raw.stdout.startswith(b"129-129:199.130.3*255#EMH#")


def test_summary_of_a_gzip_capture(recordings_dir: Path, tmp_path: Path) -> None:
    capture = _capture_of(recordings_dir / "DZG_DVS-7412.2_jmberg.bin", tmp_path / "c.txt.gz")
    proc = run("decode", "--summary", str(capture))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    assert "(capture file, gzip)" in text
    assert "good frames: 1, no errors" in text
    assert "meter 0a01445a47000282225e (1 DZG00 4208 2910): 1 frames, CRC x25 x1" in text
    assert "quirks: dzg-dvs74-unsigned-power" in text
    rows = {line.split()[0]: line for line in text.splitlines() if line[:1].isdigit()}
    assert (
        rows["1-0:1.8.0*255"].split()
        == ["1-0:1.8.0*255", "Import", "total", "Wh", "1"] + ["5430157.7"] * 4
    )
    assert "Active power total" in rows["1-0:16.7.0*255"]


def test_summary_counts_errors_and_first_last_min_max(recordings_dir: Path) -> None:
    proc = run("decode", "--summary", str(recordings_dir / "EMH_eHZ-IW8E2A5L0EK2P_with_error.bin"))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    assert "(raw dump)" in text and "good frames: 11, truncated: 1" in text
    row = next(line for line in text.splitlines() if line.startswith("1-0:1.8.0*255"))
    assert row.split()[3:] == ["Wh", "11", "2795692.7", "2795693.7", "2795692.7", "2795693.7"]


def test_directory_exits_2_saying_so(tmp_path: Path) -> None:
    proc = run("decode", str(tmp_path))
    assert proc.returncode == 2
    assert (
        proc.stderr.decode().strip()
        == f"smlogger decode: {tmp_path}: is a directory, not a recording"
    )


def test_unreadable_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.bin"
    proc = run("decode", str(missing))
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == f"smlogger decode: {missing}: No such file or directory"


def test_noise_says_no_valid_frame_and_how_it_was_read(tmp_path: Path) -> None:
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes((i * 7919) % 251 for i in range(3000)))
    proc = run("decode", "--summary", str(noise))
    assert proc.returncode == 1
    assert (
        f"no valid SML frame found in {noise} (3000 bytes read as a raw dump)"
        in proc.stderr.decode()
    )


def test_obis_names_cover_the_recordings(expected: dict[str, object]) -> None:
    import re

    from smlogger.obisnames import obis_name

    codes = set(re.findall(r"\d+-\d+:\d+\.\d+\.\d+\*\d+", json.dumps(expected)))
    assert codes and all(obis_name(c) for c in codes), sorted(c for c in codes if not obis_name(c))
    assert obis_name("1-0:1.8.0*255") == "Import total"
    assert obis_name("1-0:1.8.0") == "Import total"
    assert obis_name("1-0:99.99.99*255") is None
