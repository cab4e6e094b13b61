"""Human names of the OBIS codes electricity meters send over SML.

One plain table, keyed by the code without its storage field ("1-0:1.8.0"); `obis_name` also
takes the full form "1-0:1.8.0*255" that the decoder prints.
"""

from __future__ import annotations

OBIS_NAMES: dict[str, str] = {
    "1-0:0.0.0": "Property number",
    "1-0:0.0.9": "Device id",
    "1-0:0.2.0": "Firmware version",
    "1-0:1.7.0": "Import power",
    "1-0:1.8.0": "Import total",
    "1-0:1.8.1": "Import tariff 1",
    "1-0:1.8.2": "Import tariff 2",
    "1-0:1.8.3": "Import tariff 3",
    "1-0:1.8.4": "Import tariff 4",
    "1-0:2.7.0": "Export power",
    "1-0:2.8.0": "Export total",
    "1-0:2.8.1": "Export tariff 1",
    "1-0:2.8.2": "Export tariff 2",
    "1-0:13.7.0": "Power factor",
    "1-0:14.7.0": "Frequency",
    "1-0:15.7.0": "Absolute power",
    "1-0:15.8.0": "Absolute energy total",
    "1-0:16.7.0": "Power total",
    "1-0:16.8.0": "Energy balance",
    "1-0:21.7.0": "Import power L1",
    "1-0:41.7.0": "Import power L2",
    "1-0:61.7.0": "Import power L3",
    "1-0:31.7.0": "Current L1",
    "1-0:51.7.0": "Current L2",
    "1-0:71.7.0": "Current L3",
    "1-0:91.7.0": "Current neutral",
    "1-0:32.7.0": "Voltage L1",
    "1-0:52.7.0": "Voltage L2",
    "1-0:72.7.0": "Voltage L3",
    "1-0:36.7.0": "Power L1",
    "1-0:56.7.0": "Power L2",
    "1-0:76.7.0": "Power L3",
    "1-0:81.7.1": "Phase angle U-L2 to U-L1",
    "1-0:81.7.2": "Phase angle U-L3 to U-L1",
    "1-0:81.7.4": "Phase angle I-L1 to U-L1",
    "1-0:81.7.15": "Phase angle I-L2 to U-L2",
    "1-0:81.7.26": "Phase angle I-L3 to U-L3",
    "1-0:96.1.0": "Meter serial number",
    "1-0:96.5.0": "Status word",
    "1-0:96.50.1": "Manufacturer",
    "1-0:96.90.2": "Firmware checksum",
    "1-0:98.10.255": "Data set",
    "129-129:199.130.3": "Manufacturer",
    "129-129:199.130.5": "Public key",
}


def obis_name(code: str) -> str | None:
    """The human name of an OBIS code ("1-0:1.8.0*255" or "1-0:1.8.0"), or None if unknown."""
    key = code.strip()
    if "*" in key:
        key = key.split("*", 1)[0]
    return OBIS_NAMES.get(key)
