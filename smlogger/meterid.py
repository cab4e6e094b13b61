"""What a meter's server id says about the meter: the printed meter number and the maker.

SML server ids follow DIN 43863-5: one byte id type (0x09 or 0x0A), a
byte for the media (1 = electricity), the three-letter FLAG manufacturer code, one byte of
fabrication block and the serial number (4 bytes, big-endian). Older EMH/ISKRA meters
(ED300L, MT175) send type 0x06 followed directly by the FLAG code, then media and block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

# FLAG codes (flagassociation.com) of makers whose meters speak SML on the optical port. Codes
# not listed are shown as they are: the code itself is still more useful than nothing.
MANUFACTURERS: Mapping[str, str] = {
    "APA": "Apator",
    "DNT": "Dr. Neuhaus",
    "DZG": "DZG Metering",
    "EBZ": "eBZ",
    "EFR": "EFR",
    "ELS": "Elster",
    "EMH": "EMH metering",
    "ESY": "EasyMeter",
    "HAG": "Hager",
    "HLY": "Holley",
    "ISK": "Iskraemeco",
    "ITR": "Itron",
    "KAM": "Kamstrup",
    "KFM": "Kaifa",
    "LGZ": "Landis+Gyr",
    "LOG": "Logarex",
    "SAG": "Sagemcom",
}

# OBIS registers in which meters also name their maker as text
MANUFACTURER_OBIS = ("129-129:199.130.3*255", "1-0:96.50.1*1")
FIRMWARE_OBIS = ("1-0:0.2.0*0",)


@dataclass(frozen=True)
class ServerId:
    """The parts of a DIN 43863-5 server id."""

    kind: int
    flag: str
    media: int
    block: int
    serial: int

    def label(self) -> str:
        """The number printed on the meter, e.g. "1 DZG00 4208 2910"."""
        digits = f"{self.serial:08d}"
        return f"{self.media:X} {self.flag}{self.block:02X} {digits[:-4]} {digits[-4:]}"


def _flag(raw: bytes) -> Optional[str]:
    if len(raw) != 3 or not raw.isalpha():
        return None
    text = raw.decode("ascii")
    return text if text == text.upper() else None


def parse_server_id(meter_id: str) -> Optional[ServerId]:
    """The parts of a hex server id such as "0a01445a47000282225e", or None for other ids."""
    try:
        raw = bytes.fromhex(meter_id)
    except ValueError:
        return None
    if len(raw) == 10 and raw[0] in (0x09, 0x0A):
        flag = _flag(raw[2:5])
        if flag is not None:
            return ServerId(raw[0], flag, raw[1], raw[5], int.from_bytes(raw[6:10], "big"))
    if len(raw) == 10 and raw[0] == 0x06:
        flag = _flag(raw[1:4])
        if flag is not None:
            return ServerId(raw[0], flag, raw[4], raw[5], int.from_bytes(raw[6:10], "big"))
    return None


def meter_label(meter_id: str) -> str:
    """The meter number printed on the meter (DIN 43863-5) for a 10-byte server id such as
    0a01445a47000282225e -> "1 DZG00 4208 2910"; other ids unchanged."""
    parsed = parse_server_id(meter_id)
    if parsed is None or parsed.kind not in (0x09, 0x0A):
        return meter_id
    return parsed.label()


def _text(value: object) -> Optional[str]:
    if isinstance(value, bytes) and value and all(0x20 <= b < 0x7F for b in value):
        return value.decode("ascii").strip() or None
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def manufacturer(meter_id: str, values: Mapping[str, object] | None = None) -> Optional[str]:
    """The meter's maker: from the FLAG code of its server id, else from the manufacturer
    register it sends (`values`: OBIS -> raw value), else None."""
    parsed = parse_server_id(meter_id)
    code = parsed.flag if parsed is not None else None
    if code is None and values:
        for obis in MANUFACTURER_OBIS:
            code = _text(values.get(obis))
            if code:
                break
    if not code:
        return None
    return MANUFACTURERS.get(code.upper(), code)


def firmware(values: Mapping[str, object]) -> Optional[str]:
    """The firmware version a meter reports (only some do), else None."""
    for obis in FIRMWARE_OBIS:
        text = _text(values.get(obis))
        if text:
            return text
    return None
