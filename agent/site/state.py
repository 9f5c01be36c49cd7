"""The site as seen at one poll: an immutable snapshot handed to every consumer.

Sessions, the allocator, the store sampler and the control API all look at the same
``SiteState`` object, so they can never disagree about what a device read in a tick, and
none of them can change it under the others (frozen, read-only mappings).

A device that failed to answer keeps its last good reading here, with its age and the
error; a value that was never read is absent, never zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from agent.timefmt import utc_text
from drivers.contract import ChargerReading, DeviceHealth, Measurement, Setpoint


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the config says a device is: static for the agent's lifetime."""

    id: str
    role: str  # grid_meter | sub_meter | charger
    profile: str
    bus: str
    unit_id: int
    connector_id: int | None = None  # chargers only

    def describe(self) -> str:
        """``grid (eastron-sdm630 on lan unit 2)``: how logs name a device."""
        return f"{self.id} ({self.profile} on {self.bus} unit {self.unit_id})"


def _frozen(m: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return m if isinstance(m, MappingProxyType) else MappingProxyType(dict(m))


@dataclass(frozen=True)
class SiteState:
    taken_at: datetime
    monotonic: float
    tick: int
    health: Mapping[str, DeviceHealth]
    devices: Mapping[str, DeviceInfo] = field(default_factory=dict)
    #: setpoints in force when the snapshot was taken (last written), by connector id
    setpoints: Mapping[int, Setpoint] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.taken_at.tzinfo is None:
            raise ValueError("SiteState.taken_at must be timezone-aware UTC")
        missing = set(self.health) - set(self.devices) if self.devices else set()
        if missing:
            raise ValueError(f"SiteState health for unknown device(s): {sorted(missing)}")
        object.__setattr__(self, "health", _frozen(self.health))
        object.__setattr__(self, "devices", _frozen(self.devices))
        object.__setattr__(self, "setpoints", _frozen(self.setpoints))

    # -- lookups --
    def grid(self) -> DeviceHealth | None:
        """The grid meter's health, or None on a site without one."""
        for info in self.devices.values():
            if info.role == "grid_meter":
                return self.health.get(info.id)
        return None

    def charger(self, connector_id: int) -> DeviceHealth:
        """The health of the charger serving ``connector_id``."""
        return self.health[self.charger_id(connector_id)]

    connector = charger  # the name docs/architecture.md uses

    def charger_id(self, connector_id: int) -> str:
        for info in self.devices.values():
            if info.role == "charger" and info.connector_id == connector_id:
                return info.id
        known = sorted(i.connector_id for i in self.devices.values() if i.connector_id is not None)
        raise KeyError(f"no charger for connector {connector_id} (connectors: {known})")

    def connector_ids(self) -> list[int]:
        return sorted(i.connector_id for i in self.devices.values() if i.role == "charger" and i.connector_id is not None)

    def age(self, device_id: str) -> float | None:
        """Seconds since the device's last good reading, None if it never answered."""
        h = self.health[device_id]
        return None if h.last_good_mono is None else max(0.0, self.monotonic - h.last_good_mono)

    def stale_devices(self) -> list[str]:
        return sorted(k for k, h in self.health.items() if h.stale)

    # -- the control API's view --
    def as_dict(self, setpoints: Mapping[int, Setpoint] | None = None) -> dict[str, Any]:
        """JSON-ready view: devices with age of last good reading and error, connectors
        with state/current/energy/setpoint, the grid per phase. ``setpoints`` overrides
        the snapshot's own (the poller may have written new ones since)."""
        sps = self.setpoints if setpoints is None else setpoints
        devices = []
        for dev_id in sorted(self.health):
            h = self.health[dev_id]
            info = self.devices.get(dev_id)
            age = self.age(dev_id)
            devices.append({
                "id": dev_id,
                "role": info.role if info else None,
                "profile": info.profile if info else None,
                "bus": info.bus if info else None,
                "unit_id": info.unit_id if info else None,
                "age_s": None if age is None else round(age, 3),
                "last_good_at": utc_text(h.last_good_at) if h.last_good_at else None,
                "stale": h.stale,
                "error": h.error,
                "failing_since": utc_text(h.failing_since) if h.failing_since else None,
                "consecutive_failures": h.consecutive_failures,
            })
        connectors = []
        for cid in self.connector_ids():
            dev_id = self.charger_id(cid)
            h = self.health[dev_id]
            r = h.last_good if isinstance(h.last_good, ChargerReading) else None
            sp = sps.get(cid)
            connectors.append({
                "connector_id": cid,
                "device": dev_id,
                "state": r.state.value if r else None,
                "plugged": r.plugged if r else None,
                "current": list(r.current) if r else None,
                "power_w": r.power_total if r else None,
                "energy_wh": r.energy_wh if r else None,
                "energy_scope": r.energy_scope.value if r else None,
                "fault": r.fault if r else None,
                "setpoint": None if sp is None else {"amps": sp.amps, "phases": sp.phases, "enabled": sp.enabled},
                "stale": h.stale,
            })
        grid = None
        g = self.grid()
        if g is not None:
            m = g.last_good if isinstance(g.last_good, Measurement) else None
            grid = {
                "device": g.name,
                "stale": g.stale,
                "age_s": None if g.last_good_mono is None else round(max(0.0, self.monotonic - g.last_good_mono), 3),
                "current": list(m.current) if m else None,
                "voltage": list(m.voltage) if m else None,
                "power": list(m.power) if m else None,
                "power_w": m.power_total if m else None,
                "energy_import_wh": m.energy_import_wh if m else None,
            }
        return {
            "taken_at": utc_text(self.taken_at),
            "tick": self.tick,
            "devices": devices,
            "connectors": connectors,
            "site": {"grid": grid},
        }
