"""The topic tree.

<prefix>/logger/<logger>/availability   online/offline of the logger (Last Will: offline)
<prefix>/<meter>/availability           online while readings arrive, else offline
<prefix>/<meter>/state                  JSON of the whole reading
<prefix>/<meter>/<field>                one well-known value (e_sum, p_sum, u_L1, ...)
<prefix>/<meter>/<obis key>             any other OBIS value, e.g. 1_0_96_50_1_1
<prefix>/<meter>/link_state | crc_error_rate | last_frame_age   diagnostics
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DIAGNOSTIC_KEYS = ("link_state", "crc_error_rate", "last_frame_age")
RESERVED = frozenset({"availability", "state", *DIAGNOSTIC_KEYS})
# a meter named like this would collide with the logger's own subtree
RESERVED_METER_NAMES = frozenset({"logger"})


def slug(text: str) -> str:
    """Letters, digits, '_' and '-' only: safe in topics, HA node ids and unique ids."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "_"


def obis_key(obis: str) -> str:
    """1-0:96.50.1*1 -> 1_0_96_50_1_1 (no '*', ':', '.' in topics or HA ids)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", obis).strip("_")


@dataclass(frozen=True)
class Topics:
    """Topic names for one logger under `prefix` (HA discovery under `discovery_prefix`)."""

    prefix: str
    discovery_prefix: str
    logger_id: str

    @property
    def logger_availability(self) -> str:
        return f"{self.prefix}/logger/{self.logger_id}/availability"

    def logger_value(self, key: str) -> str:
        return f"{self.prefix}/logger/{self.logger_id}/{key}"

    def meter(self, meter: str) -> str:
        return f"{self.prefix}/{meter}"

    def availability(self, meter: str) -> str:
        return f"{self.prefix}/{meter}/availability"

    def state(self, meter: str) -> str:
        return f"{self.prefix}/{meter}/state"

    def value(self, meter: str, key: str) -> str:
        return f"{self.prefix}/{meter}/{key}"

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    def discovery(self, node_id: str, object_id: str, component: str = "sensor") -> str:
        return f"{self.discovery_prefix}/{component}/{node_id}/{object_id}/config"
