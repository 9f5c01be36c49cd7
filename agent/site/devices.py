"""From the config's [[buses]] and [[devices]] to driver objects the poller can use.

The drivers package decides *how* a profile becomes a driver (``drivers.registry``);
this module only walks the config, keeps each device's identity (``DeviceInfo``) next
to its driver, and ties every bus and device to the supervisor's exit stack so they are
closed in reverse order however the agent stops. Nothing here talks to hardware: a device
that is down at boot is started by the poller later, the site must come up without it.

Also here until load management is wired: the fixed setpoint policy (each charger gets
its configured ``fixed_current``, else its ``max_current``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from contextlib import AsyncExitStack
from typing import Any

from agent.clock import Clock
from agent.config.model import DeviceSection, SiteConfig
from agent.site.poller import DeviceSlot, SetpointPolicy
from agent.site.state import DeviceInfo, SiteState
from drivers.contract import Setpoint

log = logging.getLogger("evsite.devices")

#: a device or bus that does not close within this is abandoned (logged): shutdown
#: must finish inside systemd's stop timeout even with a wedged serial line
CLOSE_TIMEOUT = 1.0


def device_info(d: DeviceSection) -> DeviceInfo:
    return DeviceInfo(
        id=d.id, role=d.role, profile=d.profile, bus=d.bus, unit_id=d.unit_id,
        connector_id=d.connector_id if d.role == "charger" else None,
    )


async def close_quietly(thing: Any, what: str, timeout: float = CLOSE_TIMEOUT) -> None:
    """Close a bus or device; errors and hangs are logged, never raised, so one bad
    device cannot keep the store from being closed after it."""
    close = getattr(thing, "close", None)
    if close is None:
        return
    try:
        async with asyncio.timeout(timeout):
            result = close()
            if inspect.isawaitable(result):
                await result
    except TimeoutError:
        log.warning("%s did not close within %g s; abandoned", what, timeout)
    except Exception as exc:
        log.warning("%s: error while closing: %s: %s", what, type(exc).__name__, exc)


async def close_all(things: list[tuple[Any, str]], timeout: float = CLOSE_TIMEOUT) -> None:
    """Close many at once: shutdown time is one close timeout, not one per device."""
    await asyncio.gather(*(close_quietly(thing, what, timeout) for thing, what in things))


async def open_devices(config: SiteConfig, clock: Clock, stack: AsyncExitStack) -> list[DeviceSlot]:
    """Build every bus and device of the config; closing is registered on ``stack``
    (devices first, then their buses), including for what was built before a failure."""
    from drivers.registry import build_bus, build_device

    opened_buses: list[tuple[Any, str]] = []
    opened_devices: list[tuple[Any, str]] = []
    stack.push_async_callback(close_all, opened_buses)
    stack.push_async_callback(close_all, opened_devices)
    buses: dict[str, Any] = {}
    for bus_cfg in config.buses:
        bus = build_bus(bus_cfg, clock)
        if inspect.isawaitable(bus):
            bus = await bus
        buses[bus_cfg.id] = bus
        opened_buses.append((bus, f"bus {bus_cfg.id}"))
    slots = []
    for dev_cfg in config.devices:
        driver = build_device(dev_cfg, buses[dev_cfg.bus], clock)
        if inspect.isawaitable(driver):
            driver = await driver
        info = device_info(dev_cfg)
        opened_devices.append((driver, f"device {info.describe()}"))
        slots.append(DeviceSlot(info, driver))
    return slots


def fixed_setpoints(config: SiteConfig) -> SetpointPolicy:
    """Each charger at its ``fixed_current`` (else ``max_current``): the policy until
    the allocator is wired in."""
    fixed = {}
    for d in config.chargers():
        amps = d.fixed_current if d.fixed_current is not None else d.max_current
        fixed[d.connector_id] = Setpoint(amps=amps, phases=d.phases, enabled=amps > 0)

    def policy(state: SiteState) -> dict[int, Setpoint]:
        return dict(fixed)

    return policy
