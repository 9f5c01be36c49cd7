"""From site config to driver objects: the one place profile names become drivers.

Fails loudly and early: an unknown profile name lists the known ones; a profile on a
transport it does not support (a TCP-only charger on an RS-485 line), or a meter
profile in a charger's role, is refused before anything talks to hardware.
"""

from __future__ import annotations

from typing import Any

from agent.clock import Clock
from drivers.contract import Charger, Meter
from drivers.modbus.bus import Bus, RtuBus, TcpBus
from drivers.modbus.device import ModbusCharger, ModbusMeter
from drivers.profile import Profile, ProfileError, load_profile


class RegistryError(ValueError):
    """A device or bus in the config cannot be built; the message says which and why."""


def build_bus(bus_cfg: Any, clock: Clock) -> Bus:
    """A ``TcpBus`` or ``RtuBus`` from an ``agent.config.model.BusSection``."""
    kind = getattr(bus_cfg, "type", None)
    common = {"timeout": bus_cfg.timeout, "retries": bus_cfg.retries, "gap_ms": bus_cfg.gap_ms}
    try:
        if kind == "tcp":
            port = bus_cfg.port if bus_cfg.port not in ("", None) else 502
            return TcpBus(bus_cfg.id, clock, bus_cfg.host, int(port), **common)
        if kind == "rtu":
            return RtuBus(bus_cfg.id, clock, str(bus_cfg.port), baudrate=bus_cfg.baudrate, parity=bus_cfg.parity,
                          stopbits=bus_cfg.stopbits, bytesize=bus_cfg.bytesize, **common)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"bus {bus_cfg.id}: {exc}") from None
    raise RegistryError(f"bus {getattr(bus_cfg, 'id', '?')}: type must be tcp or rtu, got {kind!r}")


def profile_for(device_cfg: Any) -> Profile:
    try:
        return load_profile(device_cfg.profile)
    except ProfileError as exc:
        raise RegistryError(f"device {device_cfg.id}: {exc}") from None


def build_device(device_cfg: Any, bus: Bus, clock: Clock) -> Meter | Charger:
    """The driver for an ``agent.config.model.DeviceSection`` on ``bus``."""
    profile = profile_for(device_cfg)
    if bus.kind not in profile.transports:
        raise RegistryError(
            f"device {device_cfg.id}: profile {profile.name} supports {', '.join(profile.transports)}, "
            f"but bus {bus.name} is {bus.kind}")
    role = device_cfg.role
    wants = "charger" if role == "charger" else "meter"
    if profile.kind != wants:
        raise RegistryError(f"device {device_cfg.id}: role {role} needs a {wants} profile, "
                            f"{profile.name} is a {profile.kind}")
    unit_id = getattr(device_cfg, "unit_id", None)
    if profile.kind == "meter":
        return ModbusMeter(device_cfg.id, profile, bus, clock, unit_id=unit_id)
    try:
        return ModbusCharger(
            device_cfg.id, profile, bus, clock, unit_id=unit_id,
            connector_index=device_cfg.connector_index,
            min_current=device_cfg.min_current, max_current=device_cfg.max_current,
            failsafe_current=device_cfg.failsafe_current, failsafe_timeout=device_cfg.failsafe_timeout,
            can_switch_phases=device_cfg.can_switch_phases,
        )
    except ValueError as exc:
        raise RegistryError(str(exc)) from None
