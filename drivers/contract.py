"""The contract between the site and its hardware.

A ``Meter`` yields ``Measurement``s; a ``Charger`` yields ``ChargerReading``s and takes
``Setpoint``s. Both report failure by raising ``DeviceError`` (the device answered, but
wrongly: exception response, NaN/sentinel, garbage) or ``DeviceTimeout`` (no answer).
They never return zeros in place of a value they could not read: a quantity the device
does not provide is ``None``; a quantity it provided wrongly is an error.

Units are fixed here, once: volts, amps, watts, watt-hours, hertz, seconds. Times are a
UTC wall-clock ``datetime`` (for records) plus a monotonic float (for ages and
intervals), both from the injected clock.

Optional abilities (RFID, phase switching, unlock) are separate small protocols, checked
with ``isinstance`` at runtime, so a driver claims only what its device really has.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

Triple = tuple[float | None, float | None, float | None]
NONE3: Triple = (None, None, None)


class DeviceError(Exception):
    """The device answered but the answer is unusable (exception code, NaN, sentinel)."""


class DeviceTimeout(DeviceError):
    """The device did not answer (timeout, connection refused or lost)."""


class CpState(str, enum.Enum):
    """IEC 61851-1 control pilot state as seen by the charger."""

    A = "A"  # 12 V, no EV
    B = "B"  # 9 V, EV connected, not charging
    C = "C"  # 6 V, charging
    D = "D"  # 3 V, charging with ventilation
    E = "E"  # 0 V, error (short, no pilot)
    F = "F"  # -12 V, EVSE not available

    @property
    def plugged(self) -> bool:
        return self in (CpState.B, CpState.C, CpState.D)

    @property
    def charging(self) -> bool:
        return self in (CpState.C, CpState.D)


class EnergyScope(str, enum.Enum):
    """What a charger's energy register counts: its lifetime total or the current session."""

    TOTAL = "total"
    SESSION = "session"


@dataclass(frozen=True, slots=True)
class Measurement:
    """One reading of a meter. ``None`` = the meter has no such register."""

    timestamp: datetime
    monotonic: float
    voltage: Triple = NONE3
    current: Triple = NONE3
    power: Triple = NONE3
    power_total: float | None = None
    energy_import_wh: float | None = None
    energy_export_wh: float | None = None
    frequency: float | None = None


@dataclass(frozen=True, slots=True)
class ChargerReading:
    """One reading of a charger connector."""

    timestamp: datetime
    monotonic: float
    state: CpState
    current: Triple = NONE3
    voltage: Triple = NONE3
    power_total: float | None = None
    energy_wh: float | None = None
    energy_scope: EnergyScope = EnergyScope.TOTAL
    #: Current limit the charger says it applies (A), if it reports one.
    applied_current: float | None = None
    #: Current the charger falls back to on its own when the controller goes silent.
    failsafe_current: float | None = None
    #: Vendor error text when the charger reports a fault, else None.
    fault: str | None = None
    #: Last RFID/idTag presented at the charger, where its profile has one.
    rfid: str | None = None
    #: Phases the charger reports in use (1 or 3), where it reports them.
    phases: int | None = None

    @property
    def plugged(self) -> bool:
        return self.state.plugged


@dataclass(frozen=True, slots=True)
class Setpoint:
    """What the controller wants a connector to do."""

    amps: float
    phases: int = 3
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.amps < 0:
            raise ValueError(f"setpoint amps must be >= 0, got {self.amps}")
        if self.phases not in (1, 3):
            raise ValueError(f"setpoint phases must be 1 or 3, got {self.phases}")


@runtime_checkable
class Device(Protocol):
    """Lifecycle shared by all devices. ``start`` performs init writes (watchdog,
    failsafe registers); ``close`` is idempotent."""

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Meter(Device, Protocol):
    async def read(self) -> Measurement: ...


@runtime_checkable
class Charger(Device, Protocol):
    #: Minimum and maximum current the hardware accepts (A).
    min_current: float
    max_current: float

    async def read(self) -> ChargerReading: ...

    async def apply(self, setpoint: Setpoint) -> None:
        """Write the setpoint. Keep-alive and validity rewrites are the driver's job
        after this returns (the driver remembers the last setpoint)."""
        ...


@runtime_checkable
class PhaseSwitching(Protocol):
    """A charger that can switch between 1 and 3 phases under load management."""

    can_switch_phases: bool


@runtime_checkable
class Unlockable(Protocol):
    async def unlock(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """The poller's view of one device: last good reading and since when it failed."""

    name: str
    last_good: Measurement | ChargerReading | None = None
    last_good_at: datetime | None = None
    last_good_mono: float | None = None
    stale: bool = True
    error: str | None = None
    failing_since: datetime | None = None
    consecutive_failures: int = 0
    extra: dict[str, str] = field(default_factory=dict)
