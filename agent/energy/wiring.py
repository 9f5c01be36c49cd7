"""Load management plugged into the running agent: profiles, transactions, the dim
contact, GetCompositeSchedule and the status section.

The controller itself (controller.py) knows nothing of the store, the sessions or the
uplink; this module is the glue, kept apart so the supervisor stays a list of parts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any

from agent.energy.controller import EnergyController, policy_of
from agent.energy.model import Policy
from agent.energy.profile_shape import TOP_KEYS, ProfileError, parse_profile
from agent.site.state import SiteState
from drivers.contract import Setpoint

log = logging.getLogger("evsite.energy")


def energy_shape(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A ProfileBook entry (1.6 camelCase + connector_id) in the controller's shape. The
    transactionId is left out: the book accepted a TxProfile only for the transaction
    running on its connector and removes it when that transaction ends."""
    out = {k: v for k, v in stored.items() if k in TOP_KEYS and k != "transactionId"}
    out["connectorId"] = stored["connector_id"]
    return out


def validate_profile(profile: Mapping[str, Any]) -> list[str]:
    """For ProfileBook(validate=...): every problem the controller would refuse."""
    try:
        parse_profile(energy_shape(dict(profile, connector_id=profile.get("connector_id", 0))))
    except ProfileError as exc:
        return [str(p) for p in getattr(exc, "problems", [exc])]
    return []


def build(config: Any, clock: Any, rt: Any) -> EnergyController:
    def source() -> Iterable[Mapping[str, Any]]:
        book = rt.profiles
        return [energy_shape(p) for p in book.profiles] if book is not None else []

    tuning = policy_of(config)   # [limits.policy]
    changed = {k: v for k, v in dataclasses.asdict(tuning).items() if v != getattr(Policy(), k)}
    if changed:
        log.info("load-management policy from [limits.policy]: %s",
                 ", ".join(f"{k} = {v:g} (default {getattr(Policy(), k):g})" for k, v in changed.items()))
    return EnergyController(config, clock, profiles_source=source, tuning=tuning)


def policy_with_fixed_caps(config: Any, energy: EnergyController):
    """A charger with ``fixed_current`` set never gets more than that, even with load
    management (an installer's cap, e.g. for a weak supply cable)."""
    caps = {d.connector_id: d.fixed_current for d in config.chargers() if d.fixed_current is not None}

    def policy(state: SiteState) -> dict[int, Setpoint]:
        out = dict(energy.policy(state))
        for cid, cap in caps.items():
            sp = out.get(cid)
            if sp is not None and sp.amps > cap:
                out[cid] = Setpoint(amps=cap, phases=sp.phases, enabled=sp.enabled and cap > 0)
        return out

    return policy


async def follow_sessions(energy: EnergyController, sessions: Any) -> None:
    """TxProfiles and Relative schedules follow the connectors' transactions."""
    from agent.sessions.events import TransactionEnded, TransactionStarted

    for cid, c in sessions.connectors.items():
        if c.tx is not None:
            energy.set_transaction(cid, c.tx.started_at)
    queue = sessions.subscribe()
    while True:
        ev = await queue.get()
        if isinstance(ev, TransactionStarted):
            energy.set_transaction(ev.connector_id, ev.at)
        elif isinstance(ev, TransactionEnded):
            energy.end_transaction(ev.connector_id)


def composite(energy: EnergyController, config: Any, connector_id: int, duration: int, unit: str) -> dict[str, Any]:
    """1.6 GetCompositeSchedule's chargingSchedule; periods no profile limits get the
    connector's (or the site's) own maximum."""
    schedule = energy.composite_schedule(connector_id, duration, unit)
    if connector_id == 0:
        amps = sum(d.max_current for d in config.chargers())
    else:
        amps = next(d.max_current for d in config.chargers() if d.connector_id == connector_id)
    unlimited = amps if unit == "A" else amps * config.limits.nominal_voltage * 3
    return schedule.to_ocpp(unlimited)


async def start_dim_input(config: Any, energy: EnergyController, stack: AsyncExitStack) -> None:
    if not config.gpio.dim_pin:
        return
    from drivers.gpio import DimInput

    dim = DimInput(config.gpio.dim_pin, energy.set_dim, active_high=config.gpio.dim_active_high,
                   loop=asyncio.get_running_loop())
    dim.start()
    stack.callback(dim.close)
    log.info("grid operator dim contact on %s", config.gpio.dim_pin)


def add_gpio_test_route(control: Any) -> None:
    """Test only: with ``EVSITE_GPIO_MOCK=1`` (drivers/gpio.py) the dim contact is a mock
    pin, and ``POST /test/gpio {"pin": "GPIO17", "state": true}`` closes it (false opens
    it), so an end-to-end test can drive the contact of a real agent process. Without the
    variable the route does not exist."""
    from drivers.gpio import GpioError, drive_mock_pin, mock_gpio

    if not mock_gpio():
        return
    from agent.control.server import ControlError, json_body

    async def handler(request: Any) -> dict[str, Any]:
        body = await json_body(request)
        pin, state = body.get("pin"), body.get("state")
        if not isinstance(pin, str) or not pin:
            raise ControlError(400, "pin must be a pin name such as \"GPIO17\"")
        if not isinstance(state, bool):
            raise ControlError(400, "state must be true (drive the pin high) or false (low)")
        try:
            drive_mock_pin(pin, state)
        except GpioError as exc:
            raise ControlError(400, str(exc)) from None
        log.info("test: mock pin %s driven %s through the control API", pin, "high" if state else "low")
        return {"pin": pin, "state": state}

    control.add_route("POST", "/test/gpio", handler)


__all__ = ["add_gpio_test_route", "build", "composite", "datetime", "energy_shape", "follow_sessions",
           "policy_with_fixed_caps", "start_dim_input", "validate_profile"]
