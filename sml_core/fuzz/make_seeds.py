"""Write the committed seed corpus of the fuzz targets into sml_core/fuzz/seeds/<target>/.

The seeds come from public test vectors (../shared/SML-VECTORS.json beside the checkout) and
from the project's own encoder (the simulator's meters), never from the recordings: they are
small, redistributable, and cover transport framing, both CRC variants, escapes, truncation and
every message type the vectors hold. Run from the repository root after changing the encoder:

    PYTHONPATH=. python3 sml_core/fuzz/make_seeds.py [PATH/TO/SML-VECTORS.json]

File names are the content's SHA-1, as libFuzzer names corpus files, so re-running is stable.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from smlogger import sml
from smlogger.simulate import make_meter

ROOT = Path(__file__).resolve().parent
ESCAPE = b"\x1b" * 4


def payload(frame: bytes) -> bytes:
    """The SML file inside a transport frame: start and end sequences cut, escapes undone."""
    body = frame[8 : frame.rfind(ESCAPE + b"\x1a")]
    return body.replace(ESCAPE + ESCAPE, ESCAPE)


def frames_from_vectors(path: Path) -> list[bytes]:
    """The frames of the public test vectors (hex in SML-VECTORS.json)."""
    return [bytes.fromhex(v["hex"]) for v in json.loads(path.read_text()) if v.get("hex")]


def frames_from_encoder() -> list[bytes]:
    """One frame per simulator profile, plus one whose payload needs escaping, X-25 and KERMIT."""
    when = datetime(2024, 6, 1, 12, tzinfo=timezone.utc)
    frames = [make_meter(p, seed="fuzz").frame(when) for p in ("household", "pv", "full")]
    # an escape sequence inside the data and a KERMIT CRC (Holley DTZ541)
    inner = payload(frames[0])
    escaped = inner[:20] + ESCAPE + inner[20:]
    frames.append(sml.frame(escaped))
    frames.append(sml.frame(inner, crc="kermit"))
    return frames


def seeds(frames: list[bytes]) -> dict[str, list[bytes]]:
    """Inputs per target: whole streams with damage for the decoder, payloads for the parser."""
    decode: list[bytes] = []
    for index, frame in enumerate(frames):
        cut = bytes([index % 64])  # first byte: chunk size of the chunked feeding
        decode.append(cut + frame)
        decode.append(cut + frame[: len(frame) // 2])  # truncated
        damaged = bytearray(frame)
        damaged[len(frame) // 3] ^= 0x40  # CRC error
        decode.append(cut + bytes(damaged))
    decode.append(b"\x07" + b"".join(frames[:3]) + b"\x00\xff" + frames[-1])  # back to back
    parse = [payload(f) for f in frames]
    crc = [b"", b"\x1b" * 8, *frames[:2]]
    return {"decode_stream": decode, "parse_file": parse, "crc": crc}


def main(argv: list[str]) -> int:
    """Write the seed files; the process exit code."""
    vectors = Path(argv[1]) if len(argv) > 1 else ROOT.parents[2] / "shared" / "SML-VECTORS.json"
    frames = frames_from_vectors(vectors) + frames_from_encoder()
    for target, inputs in seeds(frames).items():
        folder = ROOT / "seeds" / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for data in inputs:
            (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
        print(f"{target}: {len(inputs)} seeds in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
