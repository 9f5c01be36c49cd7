"""The Heidelberg Energy Control's keep-alive, over its real transport (RTU on a pty).

A Heidelberg has a watchdog (register 257): when the controller has written nothing for
that long, the box falls back to its failsafe current (262). Held at 0 A with no car
plugged, nothing else is written to it, so the profile's keep-alive rewrites the current
setpoint at a third of the watchdog timeout. Without it an idle box would start offering
its failsafe current to the next car plugged in, whatever the site's load allows.

The driver and the rig share one SimClock; bytes go over two real ptys through
pymodbus on both ends. Time only moves while the keep-alive task sleeps on the clock
(``tests.sleepwatch``): a write still on the line when time jumps would be stamped
late, or the task's next sleep would start after the jump and the test would measure
its own scheduling instead of the driver (that race made the earlier SimClock
keep-alive test over a pty time out now and then).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from agent.config.model import BusSection, DeviceSection, LimitsSection, SiteConfig
from drivers.contract import Setpoint
from drivers.modbus.device import ModbusCharger
from drivers.profile import PROFILE_DIR, Profile, load_profile, load_profile_file
from drivers.registry import build_bus
from hil.model import Ev
from hil.rig import Rig
from tests.sleepwatch import SleepWatch

WATCHDOG_S = 30.0          # the site config's failsafe_timeout, written to register 257
FAILSAFE_A = 8.0           # and its failsafe_current, register 262
STEP_S = 1.0               # the rig's physics tick; time moves one tick at a time
IDLE_S = 5 * WATCHDOG_S    # long enough for the watchdog to have fired several times


def heidelberg_site(tmp_path: Path) -> SiteConfig:
    # gap_ms 0: the profile's 100 ms RS-485 gap is waited on the driver's clock, which is
    # simulated here; the keep-alive's own timing is what is under test
    bus = BusSection(id="rs485", type="rtu", port=str(tmp_path / "ttyRS485"), baudrate=19200, parity="E",
                     timeout=1.0, gap_ms=0)
    dev = DeviceSection(id="wallbox", profile="heidelberg-ec", bus="rs485", role="charger", unit_id=1,
                        connector_id=1, max_current=16, failsafe_current=FAILSAFE_A,
                        failsafe_timeout=WATCHDOG_S)
    return SiteConfig(limits=LimitsSection(fuse_amps=63), buses=[bus], devices=[dev])


async def idle_at_zero(tmp_path: Path, profile: Profile) -> dict:
    """A Heidelberg driven by ``profile``, told 0 A with no car, left alone for IDLE_S.

    Returns what the emulated box saw: the model times of the writes after the
    setpoint, and at every step whether its watchdog held it at the failsafe.
    """
    cfg = heidelberg_site(tmp_path)
    clock = SleepWatch()
    async with AsyncExitStack() as stack:
        rig = Rig(cfg, None, clock, tick=STEP_S)
        await rig.start()
        stack.push_async_callback(rig.stop)
        bus = build_bus(cfg.buses[0], clock)
        stack.push_async_callback(bus.close)
        charger = ModbusCharger("wallbox", profile, bus, clock, unit_id=1, max_current=16,
                                failsafe_current=FAILSAFE_A, failsafe_timeout=WATCHDOG_S)
        stack.push_async_callback(charger.close)
        m = rig.charger("wallbox")
        writes: list[tuple[float, str, object]] = []
        rig.image("wallbox").on_write(lambda q, v: writes.append((clock.monotonic(), q, v)))

        await charger.start()                        # standby off, watchdog 30 s, failsafe 8 A
        assert m.watchdog and m.failsafe_timeout == WATCHDOG_S and m.failsafe_current == FAILSAFE_A
        await charger.apply(Setpoint(0))             # no session: held at 0 A
        assert m.setpoint == 0.0 and m.offered() == 0.0
        t0 = clock.monotonic()
        del writes[:]

        keepalive = charger._keepalive_task.get_name() if charger._keepalive_task else None
        silent, offered = [], []
        while clock.monotonic() - t0 < IDLE_S:
            if keepalive is not None:
                await asyncio.wait_for(clock.until_asleep(keepalive), 10)   # no write on the line
            await clock.advance(STEP_S)
            silent.append(m.silent(clock.monotonic()))
            offered.append(m.offered(clock.monotonic()))
        if keepalive is not None:
            await asyncio.wait_for(clock.until_asleep(keepalive), 10)

        # a car plugged in now gets what the box offers: 0 A held, or the failsafe
        m.plug(Ev(ramp_delay=0), rig.site.model.now)
        return {"t0": t0, "writes": writes, "silent": silent, "offered": offered,
                "plugged_offer": m.offered(clock.monotonic())}


async def test_an_idle_heidelberg_at_0_a_never_falls_to_its_failsafe(tmp_path):
    profile = load_profile("heidelberg-ec")
    seen = await idle_at_zero(tmp_path, profile)

    # what the box went through: never held at its failsafe, 0 A offered throughout,
    # and 0 A for a car plugged in at the end
    assert not any(seen["silent"]), f"watchdog fired {seen['silent'].index(True) + 1} s after the last setpoint"
    assert set(seen["offered"]) == {0.0}
    assert seen["plugged_offer"] == 0.0
    # because the driver rewrote the 0 A setpoint, and only that, before each timeout
    assert {(q, v) for _, q, v in seen["writes"]} == {("current", 0.0)}
    times = [seen["t0"], *(t for t, _, _ in seen["writes"])]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # at the profile's period: a third of the watchdog, plus at most one physics step
    # for where within a step a rewrite lands
    period = profile.keepalive.period_for(WATCHDOG_S)
    assert max(gaps) <= period + STEP_S < WATCHDOG_S, gaps
    assert len(gaps) >= IDLE_S // (period + STEP_S), f"{len(gaps)} rewrites in {IDLE_S:g} s"


async def test_without_the_keepalive_the_idle_heidelberg_falls_to_its_failsafe(tmp_path):
    """The same run with ``[keepalive]`` cut out of the shipped profile file: the
    emulated watchdog is real, so the test above would fail."""
    text = (PROFILE_DIR / "heidelberg-ec.toml").read_text()
    head, sep, tail = text.partition("\n[keepalive]")
    assert sep, "the shipped Heidelberg profile has no [keepalive] section"
    after = tail.split("\n[", 1)                   # the sections after it stay
    cut = tmp_path / "heidelberg-ec.toml"
    cut.write_text(head + ("\n[" + after[1] if len(after) > 1 else "\n"))
    profile = load_profile_file(cut)
    assert profile.keepalive is None and profile.writes == load_profile("heidelberg-ec").writes
    seen = await idle_at_zero(tmp_path, profile)

    assert [q for _, q, _ in seen["writes"]] == []
    first = seen["silent"].index(True)
    assert first + 1 == pytest.approx(WATCHDOG_S, abs=STEP_S)
    assert seen["offered"][first] == FAILSAFE_A
    assert seen["plugged_offer"] == FAILSAFE_A
