"""A synthetic 3-phase household meter (ISKRA MT175-like) producing real SML frames.

The load model is a pure function of local time and a seed: base load, cycling fridge/freezer,
lights in the evening, a day plan of kettle, cooking, washing machine and dishwasher runs drawn
per date, and (profiles `pv`, `full`) a PV system with a seasonal sun curve and passing clouds.
Energy registers integrate the exact power between frames, so counters and power always agree.
The frames are encoded by the Rust encoder (`sml.encode`) exactly as a meter would send them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import struct
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

MANUFACTURER = b"ISK"
# raw energy register unit: 0.1 Wh (scaler -1), as MT175 sends it
WH_PER_RAW = 0.1
STATUS_1_8_0 = 0x182


@dataclass(frozen=True)
class Profile:
    """A kind of simulated installation: loads, PV, registers sent, starting counters."""

    name: str
    description: str
    pv_peak_w: float = 0.0
    full_registers: bool = False  # voltages, currents, frequency (PIN-unlocked 3-phase meter)
    start_import_kwh: float = 12339.7
    start_export_kwh: float = 0.0
    sends_export: bool = False


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("household", "3-phase household, import only (MT175 without PV)"),
        Profile(
            "pv",
            "household with a 7 kWp PV system: export around noon (MT175 bidirectional)",
            pv_peak_w=7000.0,
            start_export_kwh=4211.3,
            sends_export=True,
        ),
        Profile(
            "full",
            "household with PV, plus voltages, currents and frequency per phase",
            pv_peak_w=7000.0,
            start_export_kwh=4211.3,
            sends_export=True,
            full_registers=True,
        ),
    )
}


def _rng(*parts: object) -> random.Random:
    # str seeds are hashed with sha512 by random.Random: stable across runs and platforms
    return random.Random("|".join(str(p) for p in parts))


def _unit_noise(*parts: object) -> float:
    """Deterministic value in [-1, 1) for the given key."""
    digest = hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=8).digest()
    value: int = struct.unpack(">Q", digest)[0]
    return value / 2**63 - 1.0


@dataclass(frozen=True)
class Event:
    """An appliance run: `start`/`end` in minutes after local midnight."""

    name: str
    phase: int  # 0..2
    start: float
    end: float
    watts: float
    kind: str = "steady"  # steady | thermostat | washer | dishwasher


@dataclass
class DayPlan:
    """The appliance events and the weather of one simulated day."""

    events: list[Event]
    cloudiness: float  # 0 clear .. 1 overcast
    cloud_phases: tuple[float, float, float]


def plan_day(seed: str, day: date) -> DayPlan:
    """The same plan for the same seed and day: appliances switched on and clouds."""
    rng = _rng(seed, "day", day.isoformat())
    events: list[Event] = []
    weekend = day.weekday() >= 5
    for _ in range(rng.randint(2, 5)):
        # kettle: mornings and afternoons are more likely
        hour = rng.choice([6.8, 7.2, 7.5, 10.0, 15.5, 16.0, 20.5, rng.uniform(8, 21)])
        start = hour * 60 + rng.uniform(-20, 20)
        events.append(Event("kettle", 0, start, start + rng.uniform(2.5, 4.0), 2000.0))
    if rng.random() < (0.8 if weekend else 0.45):
        start = rng.uniform(12.0, 12.5) * 60
        events.append(Event("stove", 1, start, start + rng.uniform(25, 45), 2800.0, "thermostat"))
    if rng.random() < 0.9:
        start = rng.uniform(17.8, 19.0) * 60
        events.append(Event("stove", 2, start, start + rng.uniform(30, 50), 2600.0, "thermostat"))
    if weekend and rng.random() < 0.5:
        start = rng.uniform(16.5, 18.0) * 60
        events.append(Event("oven", 0, start, start + rng.uniform(45, 75), 2400.0, "thermostat"))
    if rng.random() < (0.7 if weekend else 0.35):
        start = rng.uniform(9.0, 16.0) * 60
        events.append(Event("washer", 0, start, start + rng.uniform(95, 130), 2100.0, "washer"))
    if rng.random() < 0.6:
        start = rng.uniform(19.5, 21.5) * 60
        events.append(Event("dishwasher", 2, start, start + 110, 2000.0, "dishwasher"))
    cloud_phases = (rng.uniform(0, 6.3), rng.uniform(0, 6.3), rng.uniform(0, 6.3))
    return DayPlan(events, rng.betavariate(0.8, 1.2), cloud_phases)


def _event_power(event: Event, minute: float) -> float:
    if not event.start <= minute < event.end:
        return 0.0
    into = minute - event.start
    if event.kind == "steady":
        return event.watts
    if event.kind == "thermostat":
        # heating element switching with a 2-minute cycle, ~60 % on, more at the start
        duty = 0.95 if into < 8 else 0.6
        return event.watts if (into % 2.0) / 2.0 < duty else 0.0
    if event.kind == "washer":
        if into < 18:
            return event.watts + 150
        length = event.end - event.start
        if into > length - 10:
            return 450.0 + 150 * math.sin(into * 6.0)  # spinning
        return 160.0 + 140 * abs(math.sin(into * 1.7))  # drum turns
    if event.kind == "dishwasher":
        if into < 20 or 75 <= into < 90:
            return event.watts + 60
        return 55.0 + 30 * abs(math.sin(into * 0.9))
    return 0.0


def _cycle(minute: float, period: float, duty: float, offset: float) -> bool:
    return ((minute + offset) % period) / period < duty


def _day_length_hours(day: date) -> float:
    # about 51 degrees north: 7.7 h in December, 16.3 h in June
    return 12.0 + 4.3 * math.sin(2 * math.pi * (day.timetuple().tm_yday - 80) / 365.0)


def pv_power(profile: Profile, local: datetime, plan: DayPlan) -> float:
    """PV output in W at local time `local` (0 without PV or at night)."""
    if profile.pv_peak_w <= 0:
        return 0.0
    dst = local.dst() or timedelta(0)
    noon = 12.25 + dst.total_seconds() / 3600.0
    half = _day_length_hours(local.date()) / 2.0
    hour = local.hour + local.minute / 60.0 + local.second / 3600.0
    x = (hour - (noon - half)) / (2 * half)
    if not 0.0 < x < 1.0:
        return 0.0
    season = 0.35 + 0.45 * (half * 2 - 7.7) / (16.3 - 7.7)  # ~80 % of kWp in June
    sun = float(math.sin(math.pi * x) ** 1.4)
    minutes = hour * 60.0
    p1, p2, p3 = plan.cloud_phases
    wobble = (
        math.sin(2 * math.pi * minutes / 7.0 + p1)
        + math.sin(2 * math.pi * minutes / 13.0 + p2)
        + math.sin(2 * math.pi * minutes / 29.0 + p3)
    ) / 3.0
    clouds = 1.0 - plan.cloudiness * (0.55 + 0.4 * wobble)
    return profile.pv_peak_w * season * sun * max(0.05, clouds)


@dataclass(frozen=True)
class PhaseState:
    """Per-phase power, voltage and current and the frequency at one instant."""

    power: tuple[float, float, float]  # net W per phase, + import / - export
    voltage: tuple[float, float, float]
    current: tuple[float, float, float]
    frequency: float

    @property
    def total(self) -> float:
        """Net power of all phases in W (negative = export)."""
        return sum(self.power)


class LoadModel:
    """Household power as a function of time; deterministic for a given seed."""

    def __init__(self, profile: Profile, seed: str = "smlogger", tz: Optional[tzinfo] = None):
        self.profile = profile
        self.seed = seed
        self.tz = tz
        self._plans: dict[date, DayPlan] = {}

    def plan(self, day: date) -> DayPlan:
        """The (cached) plan of `day`."""
        plan = self._plans.get(day)
        if plan is None:
            if len(self._plans) > 8:
                self._plans.clear()
            plan = self._plans[day] = plan_day(self.seed, day)
        return plan

    def local(self, when: datetime) -> datetime:
        """`when` in the model's time zone (the local one if none was given)."""
        return when.astimezone(self.tz) if self.tz is not None else when.astimezone()

    def at(self, when: datetime) -> PhaseState:
        """The phase state at `when`: base loads, appliance events and PV."""
        local = self.local(when)
        plan = self.plan(local.date())
        minute = local.hour * 60 + local.minute + local.second / 60.0
        loads = [62.0, 41.0, 33.0]  # router, standby devices, heating pump
        if _cycle(minute, 41.0, 0.36, 7.0):
            loads[1] += 96.0  # fridge
        if _cycle(minute, 63.0, 0.42, 23.0):
            loads[2] += 84.0  # freezer
        evening = 17.5 * 60 <= minute < 23.3 * 60
        morning = 6.4 * 60 <= minute < 8.1 * 60
        if evening:
            loads[0] += 180.0 + 120.0 * math.sin(math.pi * (minute - 1050) / 350.0)
            loads[1] += 60.0
        elif morning:
            loads[0] += 110.0
        for event in plan.events:
            loads[event.phase] += _event_power(event, minute)
        tick = int(when.timestamp())
        loads = [
            max(0.0, w * (1 + 0.02 * _unit_noise(self.seed, tick, i)) + 3 * _unit_noise(tick, i))
            for i, w in enumerate(loads)
        ]
        pv_each = pv_power(self.profile, local, plan) / 3.0
        power = tuple(w - pv_each for w in loads)
        hours = when.timestamp() / 3600.0
        voltage = tuple(
            230.6
            + 1.8 * math.sin(2 * math.pi * hours / 3.0 + i * 2.1)
            - 0.0011 * p
            + 0.25 * _unit_noise(self.seed, "u", tick, i)
            for i, p in enumerate(power)
        )
        current = tuple(abs(p) / (u * 0.97) + 0.06 for p, u in zip(power, voltage))
        frequency = (
            50.0
            + 0.025 * math.sin(2 * math.pi * hours * 4.0)
            + 0.006 * _unit_noise(self.seed, "f", tick)
        )
        return PhaseState(
            power=(power[0], power[1], power[2]),
            voltage=(voltage[0], voltage[1], voltage[2]),
            current=(current[0], current[1], current[2]),
            frequency=frequency,
        )


@dataclass
class Registers:
    """Energy registers in exact Wh; the frame carries them truncated to 0.1 Wh."""

    import_wh: float
    export_wh: float
    last: Optional[datetime] = None
    last_power: float = 0.0

    def advance(self, when: datetime, power_w: float) -> None:
        """Integrate power since the last call into the import/export registers."""
        if self.last is not None and when > self.last:
            hours = (when - self.last).total_seconds() / 3600.0
            # trapezoid between the previous and the current sample
            p0, p1 = self.last_power, power_w
            if (p0 >= 0) == (p1 >= 0):
                energy = (p0 + p1) / 2 * hours
                if energy >= 0:
                    self.import_wh += energy
                else:
                    self.export_wh -= energy
            else:
                # sign change: split at the zero crossing
                cross = p0 / (p0 - p1)
                first = p0 / 2 * hours * cross
                second = p1 / 2 * hours * (1 - cross)
                for part in (first, second):
                    if part >= 0:
                        self.import_wh += part
                    else:
                        self.export_wh -= part
        if self.last is None or when > self.last:
            self.last = when
        self.last_power = power_w


@dataclass
class SimulatedMeter:
    """A deterministic meter: SML frames for any instant from a profile and a seed."""

    profile: Profile = field(default_factory=lambda: PROFILES["household"])
    seed: str = "smlogger"
    serial: int = 0
    tz: Optional[tzinfo] = None
    model: LoadModel = field(init=False)
    registers: Registers = field(init=False)
    _transaction: int = field(init=False, default=0)
    _sec_index_base: int = field(init=False, default=0)
    _started: Optional[datetime] = field(init=False, default=None)
    _public_key: bytes = field(init=False, default=b"")

    def __post_init__(self) -> None:
        rng = _rng(self.seed, "meter")
        if not self.serial:
            self.serial = rng.randrange(10_000_000, 99_999_999)
        self.model = LoadModel(self.profile, self.seed, self.tz)
        self.registers = Registers(
            import_wh=self.profile.start_import_kwh * 1000.0,
            export_wh=self.profile.start_export_kwh * 1000.0,
        )
        self._transaction = rng.randrange(1 << 24, 1 << 32)
        self._sec_index_base = rng.randrange(10_000_000, 90_000_000)
        self._public_key = rng.randbytes(48)

    @property
    def server_id(self) -> bytes:
        """The SML server id: 0A 01, FLAG code, fabrication block, 4-byte serial."""
        # 0A 01 <FLAG manufacturer> <fabrication block> <serial, 4 bytes big-endian>
        return b"\x0a\x01" + MANUFACTURER + b"\x00" + self.serial.to_bytes(4, "big")

    @property
    def meter_id(self) -> str:
        """The server id in hex, as readings carry it."""
        return self.server_id.hex()

    def _next_tid(self) -> bytes:
        self._transaction = (self._transaction + 1) & 0xFFFFFFFFFF
        return self._transaction.to_bytes(5, "big")

    def sample(self, when: datetime) -> PhaseState:
        """Advance the registers to `when` and return the phase state there."""
        if when.tzinfo is None:
            raise ValueError("simulation time must be timezone-aware")
        state = self.model.at(when)
        self.registers.advance(when, state.total)
        if self._started is None:
            self._started = when
        return state

    def messages(self, when: datetime) -> list[dict[str, Any]]:
        """The Open/GetList/Close message dicts the meter sends at `when`."""
        state = self.sample(when)
        assert self._started is not None
        sec_index = self._sec_index_base + int((when - self._started).total_seconds())
        sensor_time = {"kind": "sec_index", "value": sec_index}
        import_raw = int(self.registers.import_wh / WH_PER_RAW)
        export_raw = int(self.registers.export_wh / WH_PER_RAW)
        values: list[dict[str, Any]] = [
            {"obis": "129-129:199.130.3*255", "raw": MANUFACTURER},
            {"obis": "1-0:0.0.9*255", "raw": self.server_id},
            {
                "obis": "1-0:1.8.0*255",
                "status": STATUS_1_8_0,
                "unit": 30,
                "scaler": -1,
                "raw": import_raw,
            },
            {"obis": "1-0:1.8.1*255", "unit": 30, "scaler": -1, "raw": import_raw},
            {"obis": "1-0:1.8.2*255", "unit": 30, "scaler": -1, "raw": 0},
        ]
        if self.profile.sends_export:
            values += [
                {"obis": "1-0:2.8.0*255", "unit": 30, "scaler": -1, "raw": export_raw},
                {"obis": "1-0:2.8.1*255", "unit": 30, "scaler": -1, "raw": export_raw},
                {"obis": "1-0:2.8.2*255", "unit": 30, "scaler": -1, "raw": 0},
            ]
        values.append(
            {"obis": "1-0:16.7.0*255", "unit": 27, "scaler": 0, "raw": round(state.total)}
        )
        for code, watts in zip(("36", "56", "76"), state.power):
            values.append(
                {"obis": f"1-0:{code}.7.0*255", "unit": 27, "scaler": 0, "raw": round(watts)}
            )
        if self.profile.full_registers:
            for code, volts in zip(("32", "52", "72"), state.voltage):
                values.append(
                    {
                        "obis": f"1-0:{code}.7.0*255",
                        "unit": 35,
                        "scaler": -1,
                        "raw": round(volts * 10),
                    }
                )
            for code, amps in zip(("31", "51", "71"), state.current):
                values.append(
                    {
                        "obis": f"1-0:{code}.7.0*255",
                        "unit": 33,
                        "scaler": -2,
                        "raw": round(amps * 100),
                    }
                )
            values.append(
                {
                    "obis": "1-0:14.7.0*255",
                    "unit": 44,
                    "scaler": -2,
                    "raw": round(state.frequency * 100),
                }
            )
        values.append({"obis": "129-129:199.130.5*255", "raw": self._public_key})
        file_id = (sec_index & 0xFFFFFF).to_bytes(3, "big")
        return [
            {
                "type": "OpenResponse",
                "transaction_id": self._next_tid(),
                "body": {
                    "req_file_id": file_id,
                    "server_id": self.server_id,
                    "ref_time": sensor_time,
                },
            },
            {
                "type": "GetListResponse",
                "transaction_id": self._next_tid(),
                "body": {
                    "server_id": self.server_id,
                    "list_name": "1-0:98.10.255*255",
                    "act_sensor_time": sensor_time,
                    "values": values,
                },
            },
            {"type": "CloseResponse", "transaction_id": self._next_tid(), "body": {}},
        ]

    def frame(self, when: datetime) -> bytes:
        """The encoded transport frame the meter sends at `when`."""
        from smlogger import sml as sml_api

        data: bytes = sml_api.encode(self.messages(when))
        return data


def make_meter(
    profile: str = "household", *, seed: str = "smlogger", tz: Optional[tzinfo] = None
) -> SimulatedMeter:
    """A meter of the named profile; raises ValueError naming the known profiles."""
    try:
        chosen = PROFILES[profile]
    except KeyError:
        raise ValueError(
            f"unknown simulation profile {profile!r}; use one of {', '.join(PROFILES)}"
        ) from None
    return SimulatedMeter(profile=chosen, seed=seed, tz=tz)


# ---- counters that survive a restart ---------------------------------------------------------

SAVE_EVERY_S = 60.0  # the copy in the RAM directory (tmpfs): costs the SD card nothing
# The copy in the data dir, and the one used when there is no RAM directory. A save replaces
# the file (new inode, a page and directory metadata): once a minute that was ~6 MB/day of
# SD-card writes, a quarter of the 50 MB/day budget; every 15 minutes it is 0.4 MB/day.
DISK_EVERY_S = 900.0
# the catch-up after a restore counts power upwards in steps of this many seconds
_CATCH_UP_STEP_S = 1.0
_CATCH_UP_MAX_STEPS = 20_000


class CounterFile:
    """The simulated meter's energy registers, saved to survive a restart.

    A real meter keeps counting while the logger is off, and its counters never go back; so
    does the simulated one. `maybe_save` writes a copy to the RAM directory (`ram_path`, a
    tmpfs: survives kill -9, not a reboot) every `every_s` and one to the data dir (`path`)
    every `disk_every_s`; `save` (on stop) writes both. `restore` takes the newer copy and
    counts the time since it was written (see `catch_up`).
    """

    def __init__(
        self,
        path: Path,
        every_s: float = SAVE_EVERY_S,
        *,
        ram_path: Optional[Path] = None,
        disk_every_s: float = DISK_EVERY_S,
    ) -> None:
        self.path = path
        self.ram_path = ram_path
        self.every_s = every_s
        # without a RAM directory the data-dir copy is the only one: saved every every_s
        self.disk_every_s = disk_every_s if ram_path is not None else every_s
        self._saved_at: Optional[float] = None
        self._disk_saved_at: Optional[float] = None

    def _load(self, path: Path) -> Optional[tuple[str, Registers]]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            registers = Registers(
                import_wh=float(data["import_wh"]),
                export_wh=float(data["export_wh"]),
                last=datetime.fromisoformat(data["time"]),
                last_power=float(data["power_w"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("simulated meter: ignoring unreadable counters in %s (%s)", path, exc)
            return None
        return str(data.get("meter_id")), registers

    def restore(self, meter: SimulatedMeter, now: Optional[datetime] = None) -> bool:
        """Load the newest saved registers into `meter` and count the time since they were
        saved (`catch_up`); False when there are none (or none readable) for this meter."""
        found: list[tuple[datetime, Path, Registers]] = []
        for path in (self.path, self.ram_path):
            loaded = None if path is None else self._load(path)
            if path is None or loaded is None or loaded[0] != meter.meter_id:
                continue  # (another meter id: another seed)
            if loaded[1].last is not None:
                found.append((loaded[1].last, path, loaded[1]))
        if not found:
            return False
        when, path, registers = max(found, key=lambda item: (item[0], item[2].import_wh))
        # the copy may be `every` s older than the last frame the logger stored
        every = self.every_s if path == self.ram_path else self.disk_every_s
        meter.registers = registers
        catch_up(meter, when, now or datetime.now(timezone.utc), window_s=every + 5.0)
        log.info(
            "simulated meter: counters restored from %s (import %.1f kWh)",
            path,
            meter.registers.import_wh / 1000,
        )
        return True

    def maybe_save(self, meter: SimulatedMeter, monotonic: float) -> None:
        """Save the RAM copy every `every_s`, the data-dir copy every `disk_every_s`."""
        if self.ram_path is not None and (
            self._saved_at is None or monotonic - self._saved_at >= self.every_s
        ):
            self._write(self.ram_path, meter)
            self._saved_at = monotonic
        if self._disk_saved_at is None or monotonic - self._disk_saved_at >= self.disk_every_s:
            self._write(self.path, meter)
            self._disk_saved_at = monotonic

    def save(self, meter: SimulatedMeter) -> None:
        """Write every copy now (on stop)."""
        if self.ram_path is not None:
            self._write(self.ram_path, meter)
        self._write(self.path, meter)

    def _write(self, path: Path, meter: SimulatedMeter) -> None:
        """Write the registers atomically (a crash leaves the old or the new file)."""
        regs = meter.registers
        if regs.last is None:
            return
        data = {
            "meter_id": meter.meter_id,
            "time": regs.last.isoformat(),
            "import_wh": regs.import_wh,
            "export_wh": regs.export_wh,
            "power_w": regs.last_power,
        }
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("simulated meter: cannot save counters to %s: %s", path, exc)


def catch_up(meter: SimulatedMeter, since: datetime, now: datetime, window_s: float) -> None:
    """Count the registers of `meter` on from `since` (when they were saved) to `now`.

    The logger may have stored frames for up to `window_s` seconds after the save (the copy
    is saved every so often; kill -9 or a power cut skip the save at stop), and a counter
    must never come back below one of them. So that window is counted with an upper bound:
    per step the larger of the power at its start and end (separately for import and
    export), a little more than the frames counted. The rest of the gap, when the logger was
    not running, is left to the next frame's integration, as a real meter's counting would
    be unknown to us too.
    """
    end = min(now, since + timedelta(seconds=window_s))
    span = (end - since).total_seconds()
    if span <= 0:
        return
    step = max(_CATCH_UP_STEP_S, span / _CATCH_UP_MAX_STEPS)
    regs = meter.registers
    moment = since
    power = meter.model.at(since).total  # (each step's end is the next one's start)
    while moment < end:
        nxt = min(end, moment + timedelta(seconds=step))
        hours = (nxt - moment).total_seconds() / 3600.0
        samples = [power, meter.model.at(nxt).total]
        regs.import_wh += max(0.0, *samples) * hours
        regs.export_wh += max(0.0, *(-p for p in samples)) * hours
        moment, power = nxt, samples[1]
    regs.last = end
    regs.last_power = power
