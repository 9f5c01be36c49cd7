"""Shared by the load-management end-to-end tests (tests/e2e/test_energy_*.py): a small
site whose fuse binds, and questions asked of the rig's ground truth (hil/trace.py).

The site: a grid meter on its own Modbus TCP endpoint (so a silent meter holds up no
charger read: a tick lasts one bus timeout, not one per device), and Phoenix EV-CC
chargers on another (whole-amp setpoints, no watchdog). Every charger starts a session
by itself when an EV plugs in (``free_charging_tag``), so energy flows without a tag
being presented: these tests are about limits, not authorization. The agent polls every
``POLL`` seconds and the rig runs in real time (speed 1): a poll cycle on the agent is a
poll cycle of site time, and the trace's wall clock compares with the test's.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil.harness import Harness
from hil.trace import ev_current

STATION = "E2E-ENERGY"
#: the agent's poll interval (s): one control cycle
POLL = 0.5
#: the grid meter's Modbus timeout (s); no retries
METER_TIMEOUT = 0.3
#: amps of measurement noise and float rounding a ground-truth comparison allows
TOL = 0.01


def write_energy_site(tmp_path: Path, *, chargers: int = 2, fuse: float = 32, charger_max: float = 16,
                      grid_stale_after: float = 10, failsafe_amps: float = 6, dim_power_w: float | None = None) -> Path:
    """The site config the harness derives its copy from. ``dim_power_w``: the dim
    contact on GPIO17 (closed = high) holds each charger to that power."""
    gpio = "" if dim_power_w is None else textwrap.dedent(f"""
        [gpio]
        dim_pin = "GPIO17"
        dim_active_high = true
        dim_power_w = {dim_power_w}
        """)
    devices = "".join(textwrap.dedent(f"""
        [[devices]]
        id = "c{n}"
        role = "charger"
        profile = "phoenix-evcc-eth"
        bus = "lan"
        unit_id = {n}
        connector_id = {n}
        max_current = {charger_max}
        free_charging_tag = "FREE-{n}"
        """) for n in range(1, chargers + 1))
    path = tmp_path / "site.toml"
    path.write_text(textwrap.dedent(f"""
        [site]
        name = "e2e energy site"
        poll_interval = {POLL}
        state_dir = "state"

        [uplink]
        url = "ws://127.0.0.1:9/ocpp"
        station_id = "{STATION}"
        call_timeout = 5
        backoff_initial = 0.2
        backoff_max = 1
        ping_interval = 5

        [limits]
        fuse_amps = {fuse}
        grid_stale_after = {grid_stale_after}
        failsafe_amps = {failsafe_amps}

        [[buses]]
        id = "meterlan"
        type = "tcp"
        host = "127.0.0.1"
        port = 1502
        timeout = {METER_TIMEOUT}
        retries = 0

        [[buses]]
        id = "lan"
        type = "tcp"
        host = "127.0.0.1"
        port = 1503
        timeout = 0.5

        [[devices]]
        id = "grid"
        role = "grid_meter"
        profile = "eastron-sdm630"
        bus = "meterlan"
        unit_id = 100
        """) + gpio + devices)
    return path


def ev(**kw: Any) -> dict[str, Any]:
    """A big battery that stays below its taper for the whole test, quick to draw."""
    return {"capacity_kwh": 80, "soc": 0.2, "max_current": 16, "phases": 3, "ramp_delay": 0.3, **kw}


async def wait_truth(h: Harness, predicate: Callable[[dict[str, Any]], Any], *, timeout: float = 15.0,
                     what: str = "condition") -> dict[str, Any]:
    """The rig's ground truth (its ``truth`` command) once ``predicate`` holds. The rig
    has no push for physics, so this asks every 0.1 s; each answer is the site then."""
    truth: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                truth = await h.rig("truth")
                if predicate(truth):
                    return truth
                await asyncio.sleep(0.1)
    except TimeoutError:
        chargers = {k: (v["state"], v["currents"]) for k, v in truth.get("chargers", {}).items()}
        raise TimeoutError(f"rig: {what} not reached within {timeout:g} s; chargers {chargers}, "
                           f"meters {truth.get('meters')}") from None


def drawing(truth: dict[str, Any], amps: float, *chargers: str) -> bool:
    """Every named charger's EV draws ``amps`` (within 0.1 A) on each of its phases."""
    return all(all(abs(a - amps) < 0.1 for a in truth["chargers"][c]["currents"]) for c in chargers)


async def samples(h: Harness, since: int = 0) -> list[dict[str, Any]]:
    """The rig's ground-truth trace from sample ``since`` (trace_start must have run)."""
    return await h.rig("trace", since=since)


def first(trace: list[dict[str, Any]], predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    return next((s for s in trace if predicate(s)), None)


def grid_within(fuse: float) -> Callable[[dict[str, Any]], bool]:
    """Every phase of the grid meter (ground truth) at or under ``fuse``."""
    return lambda s: all(a <= fuse + TOL for a in s["meters"]["grid"])


def evs_within(amps: float) -> Callable[[dict[str, Any]], bool]:
    """All EVs together draw at most ``amps`` on every phase."""
    return lambda s: all(a <= amps + TOL for a in ev_current(s))


def describe(s: dict[str, Any]) -> str:
    """One line of a sample for assertion messages."""
    chargers = " ".join(f"{k} {v['setpoint']:g}A/{max(v['current']):.1f}A" for k, v in s["chargers"].items())
    return f"#{s['seq']} t={s['t']:.2f} {s['why']}: grid {s['meters'].get('grid')} | {chargers}"


def now() -> float:
    """Wall time, comparable with a trace sample's ``wall`` (another process)."""
    return time.time()
