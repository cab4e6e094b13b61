"""Human names of the OBIS codes SML meters send ("1-0:1.8.0*255" -> "Import total").

One plain table, shared by `smlogger decode --summary`, `smlogger scan` and the page. Names
follow IEC 62056-61 / DIN EN 62056-61 (value groups C.D.E) and the manufacturer codes that
German SML meters use; a code not listed has no name (None), never a guessed one.
"""

from __future__ import annotations

import re
from typing import Optional

# keyed by "A-B:C.D.E*F" exactly as the decoder formats codes
OBIS_NAMES: dict[str, str] = {
    # energy registers
    "1-0:1.8.0*255": "Import total",
    "1-0:1.8.1*255": "Import tariff 1",
    "1-0:1.8.2*255": "Import tariff 2",
    "1-0:1.8.3*255": "Import tariff 3",
    "1-0:1.8.4*255": "Import tariff 4",
    "1-0:2.8.0*255": "Export total",
    "1-0:2.8.1*255": "Export tariff 1",
    "1-0:2.8.2*255": "Export tariff 2",
    "1-0:2.8.3*255": "Export tariff 3",
    "1-0:2.8.4*255": "Export tariff 4",
    "1-0:15.8.0*255": "Absolute active energy total",
    "1-0:3.8.0*255": "Reactive energy import total",
    "1-0:4.8.0*255": "Reactive energy export total",
    # power
    "1-0:1.7.0*255": "Import power",
    "1-0:1.7.1*255": "Import power tariff 1",
    "1-0:2.7.0*255": "Export power",
    "1-0:15.7.0*255": "Absolute active power",
    "1-0:16.7.0*255": "Active power total",
    "1-0:36.7.0*255": "Active power L1",
    "1-0:56.7.0*255": "Active power L2",
    "1-0:76.7.0*255": "Active power L3",
    "1-0:21.7.0*255": "Import power L1",
    "1-0:41.7.0*255": "Import power L2",
    "1-0:61.7.0*255": "Import power L3",
    # voltage, current, frequency, phase angles
    "1-0:32.7.0*255": "Voltage L1",
    "1-0:52.7.0*255": "Voltage L2",
    "1-0:72.7.0*255": "Voltage L3",
    "1-0:31.7.0*255": "Current L1",
    "1-0:51.7.0*255": "Current L2",
    "1-0:71.7.0*255": "Current L3",
    "1-0:91.7.0*255": "Current neutral",
    "1-0:14.7.0*255": "Grid frequency",
    "1-0:81.7.1*255": "Phase angle U-L2 to U-L1",
    "1-0:81.7.2*255": "Phase angle U-L3 to U-L1",
    "1-0:81.7.4*255": "Phase angle I-L1 to U-L1",
    "1-0:81.7.15*255": "Phase angle I-L2 to U-L2",
    "1-0:81.7.26*255": "Phase angle I-L3 to U-L3",
    # identification and status
    "1-0:0.0.0*255": "Meter number (property number)",
    "1-0:0.0.9*255": "Server id (meter id)",
    "1-0:96.1.0*255": "Meter id",
    "0-0:96.1.255*255": "Meter serial number",
    "1-0:0.2.0*0": "Firmware version",
    "1-0:96.5.0*255": "Operating status word",
    "1-0:96.50.1*1": "Manufacturer id",
    "1-0:96.50.2*4": "Manufacturer status",
    "1-0:96.90.2*1": "Firmware checksum",
    "1-0:98.10.255*255": "Data list (list name)",
    "1-0:0.9.1*255": "Meter time",
    "1-0:0.9.2*255": "Meter date",
    "129-129:199.130.3*255": "Manufacturer",
    "129-129:199.130.5*255": "Public key",
    "129-129:199.240.6*255": "Manufacturer-specific value",
}

_CODE = re.compile(r"(\d+)-(\d+):(\d+)\.(\d+)\.(\d+)(?:\*(\d+))?")


def obis_name(code: str) -> Optional[str]:
    """The human name of `code` ("1-0:1.8.0*255" or "1-0:1.8.0"), or None when unknown."""
    name = OBIS_NAMES.get(code)
    if name is not None:
        return name
    match = _CODE.fullmatch(code.strip())
    if match is None:
        return None
    a, b, c, d, e, f = match.groups()
    # "1.8.0" without the F group means the current value (*255)
    return OBIS_NAMES.get(f"{int(a)}-{int(b)}:{int(c)}.{int(d)}.{int(e)}*{int(f or 255)}")
