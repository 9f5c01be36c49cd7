"""Every shipped profile driven through the physical model via its emulator.

For each meter and charger profile (over TCP, and over an RS-485 pty for the profiles
that speak RTU) a one-device site runs in the rig: the real driver must read what the
model says (voltages, currents, power, energy, state, RFID) and the model must receive
what the driver writes (setpoint, pause, phases, failsafe current and timeout,
keep-alive). A new profile file is covered by being there.

The rig's physics runs on a SimClock; the Modbus traffic is real.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from agent.clock import SimClock, SystemClock
from agent.config.model import BusSection, DeviceSection, LimitsSection, SiteConfig
from drivers.contract import CpState, Setpoint
from drivers.profile import load_profile, profile_names
from drivers.registry import build_bus, build_device
from hil.model import Ev
from hil.rig import Rig
from tests.sleepwatch import SleepWatch

PROFILES = {n: load_profile(n) for n in profile_names()}
METER_CASES = [(n, t) for n, p in PROFILES.items() if p.kind == "meter" for t in p.transports]
CHARGER_CASES = [(n, t) for n, p in PROFILES.items() if p.kind == "charger" for t in p.transports]
KEEPALIVE = [n for n, p in PROFILES.items() if p.kind == "charger" and p.keepalive is not None]
RFID = "04A1B2C3"
FAILSAFE_A, FAILSAFE_S = 8.0, 30.0


def one_device_site(tmp_path: Path, name: str, transport: str, role: str, **device) -> SiteConfig:
    if transport == "tcp":
        bus = BusSection(id="bus", type="tcp", host="127.0.0.1", port=0, timeout=1.0)
    else:
        bus = BusSection(id="bus", type="rtu", port=str(tmp_path / "ttyDUT"), baudrate=19200, timeout=1.0)
    dev = dict(id="dut", profile=name, bus="bus", role=role, unit_id=PROFILES[name].unit_id, connector_id=1,
               max_current=16, failsafe_current=FAILSAFE_A, failsafe_timeout=FAILSAFE_S)
    dev.update(device)
    return SiteConfig(limits=LimitsSection(fuse_amps=63), buses=[bus], devices=[DeviceSection(**dev)])


async def start(cfg: SiteConfig, stack: AsyncExitStack, *, driver_clock=None, tick: float = 1.0):
    """The rig on a SimClock, and the registry's drivers for every device of ``cfg``."""
    clock = SimClock()
    rig = Rig(cfg, None, clock, tick=tick)
    await rig.start()
    stack.push_async_callback(rig.stop)
    if cfg.buses[0].type == "tcp":
        cfg.buses[0].port = rig.servers["bus"].port
    bus = build_bus(cfg.buses[0], driver_clock or SystemClock())
    stack.push_async_callback(bus.close)
    drivers = {}
    for d in cfg.devices:
        drivers[d.id] = build_device(d, bus, driver_clock or SystemClock())
        stack.push_async_callback(drivers[d.id].close)
        await drivers[d.id].start()
    return rig, clock, drivers


def resolution(rig: Rig, device_id: str, quantity: str) -> float:
    """The smallest step the device's register for ``quantity`` can show."""
    img = rig.image(device_id)
    spec = img.profile.reads[quantity]
    if spec.scale_factor is not None:
        return 10.0 ** img._sf[spec.scale_factor]
    if spec.type in ("float32", "float64"):
        return 1e-3
    return abs(spec.scale)


def close_to(rig: Rig, quantity: str, got, want) -> None:
    tol = resolution(rig, "dut", quantity) / 2 + 1e-3 + abs(want) * 1e-6
    assert got is not None, f"{quantity}: driver read nothing"
    assert abs(got - want) <= tol, f"{quantity}: driver read {got}, model says {want} (tolerance {tol})"


# -- meters ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, transport", METER_CASES)
async def test_meter_profile_reads_the_model(name, transport, tmp_path):
    async with AsyncExitStack() as stack:
        rig, clock, drivers = await start(one_device_site(tmp_path, name, transport, "grid_meter"), stack, tick=10.0)
        meter = drivers["dut"]
        reads = PROFILES[name].reads
        rig.site.model.grid.set_base([10.0, 12.5, 7.0])
        rig.site.publish()
        r = await meter.read()
        truth = rig.meter("dut")
        for i in range(3):
            for q, got, want in ((f"voltage_l{i + 1}", r.voltage[i], truth.voltage[i]),
                                 (f"current_l{i + 1}", r.current[i], truth.current[i]),
                                 (f"power_l{i + 1}", r.power[i], truth.power[i])):
                if q in reads:
                    close_to(rig, q, got, want)
        assert truth.current == (10.0, 12.5, 7.0)
        if "power" in reads:
            close_to(rig, "power", r.power_total, truth.power_total)
        if "frequency" in reads:
            close_to(rig, "frequency", r.frequency, 50.0)

        await clock.advance(3600.0)                    # an hour of the base load
        r = await meter.read()
        truth = rig.meter("dut")
        assert truth.energy_import_wh == pytest.approx(truth.power_total, rel=1e-6)
        close_to(rig, "energy_import", r.energy_import_wh, truth.energy_import_wh)

        if "energy_export" in reads:                   # PV now exports on every phase
            rig.site.model.grid.set_base(-6.0)
            rig.site.publish()
            await clock.advance(3600.0)
            r = await meter.read()
            truth = rig.meter("dut")
            assert truth.energy_export_wh > 3 * 6 * 220
            close_to(rig, "energy_export", r.energy_export_wh, truth.energy_export_wh)
            if "power" in reads:
                assert r.power_total < 0


# -- chargers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, transport", CHARGER_CASES)
async def test_charger_profile_round_trips_through_the_model(name, transport, tmp_path):
    profile = PROFILES[name]
    reads, writes = profile.reads, profile.writes
    cfg = one_device_site(tmp_path, name, transport, "charger", can_switch_phases="phases" in writes)
    async with AsyncExitStack() as stack:
        rig, clock, drivers = await start(cfg, stack)
        charger, m = drivers["dut"], rig.charger("dut")
        # the driver's start wrote the failsafe settings the profile can write
        if "failsafe_current" in writes:
            assert m.failsafe_current == FAILSAFE_A
        if "failsafe_timeout" in writes:
            assert m.failsafe_timeout == FAILSAFE_S and m.watchdog
        assert (await charger.read()).state is CpState.A

        m.plug(Ev(capacity_kwh=60, soc=0.4, max_current=16, ramp_delay=1.0, rfid=RFID), rig.site.model.now)
        rig.site.publish()
        r = await charger.read()
        assert r.state is CpState.B                     # plugged, nothing offered yet
        if "rfid" in reads:
            assert r.rfid == RFID

        await charger.apply(Setpoint(13))
        assert m.setpoint == 13 and m.enabled and m.offered() == 13
        await clock.advance(1.0)                        # ramp delay over: drawing
        r = await charger.read()
        assert r.state is CpState.C
        for i in range(3):
            if f"current_l{i + 1}" in reads:
                close_to(rig, f"current_l{i + 1}", r.current[i], 13.0)
            if f"voltage_l{i + 1}" in reads:
                close_to(rig, f"voltage_l{i + 1}", r.voltage[i], m.voltages[i])
        if "power" in reads:
            close_to(rig, "power", r.power_total, m.power)
        if "applied_current" in reads:
            assert r.applied_current == pytest.approx(13.0)

        await clock.advance(600.0)
        r = await charger.read()
        energy_q = "energy_import" if "energy_import" in reads else "session_energy"
        if energy_q in reads:
            want = m.energy_wh if energy_q == "energy_import" else m.session_wh
            assert want > 500
            close_to(rig, energy_q, r.energy_wh, want)

        if "phases" in writes:                          # switch to one phase
            await charger.apply(Setpoint(13, phases=1))
            assert m.phases == 1
            r = await charger.read()
            if "current_l2" in reads:
                assert r.current[0] == pytest.approx(13.0, abs=0.01) and r.current[1] == 0.0
            if "phases" in reads:
                assert r.phases == 1

        await charger.apply(Setpoint(3))                 # below the minimum: pause
        assert m.offered() == 0.0
        if writes["current"].below_min == "disable":
            assert not m.enabled
        r = await charger.read()
        assert r.state is CpState.B
        if "current_l1" in reads:
            assert r.current[0] == 0.0

        await charger.apply(Setpoint(10))                # and resume
        assert m.enabled and m.offered() == 10.0


async def test_charx_connectors_share_a_unit_id_but_not_a_charger(tmp_path):
    cfg = one_device_site(tmp_path, "phoenix-charx", "tcp", "charger", id="charx-1", connector_index=1, unit_id=1)
    cfg.devices.append(DeviceSection(id="charx-2", profile="phoenix-charx", bus="bus", role="charger", unit_id=1,
                                     connector_index=2, connector_id=2, phases=1, wiring=["L3"], max_current=16))
    async with AsyncExitStack() as stack:
        rig, clock, drivers = await start(cfg, stack)
        for cid in ("charx-1", "charx-2"):
            rig.charger(cid).plug(Ev(ramp_delay=0, rfid=f"TAG-{cid}"), rig.site.model.now)
        rig.site.publish()
        await drivers["charx-2"].apply(Setpoint(10))
        assert rig.charger("charx-2").offered() == 10.0 and rig.charger("charx-1").offered() == 0.0
        await clock.advance(1.0)
        one, two = await drivers["charx-1"].read(), await drivers["charx-2"].read()
        assert one.state is CpState.B and one.rfid == "TAG-charx-1"
        assert two.state is CpState.C and two.rfid == "TAG-charx-2"
        assert two.current == pytest.approx((10.0, 0.0, 0.0), abs=0.01)   # 1-phase connector
        assert rig.site.model.phase_currents(["charx-2"], base=False)["L3"] == pytest.approx(10.0)


@pytest.mark.parametrize("name", KEEPALIVE)
async def test_keepalive_holds_off_the_failsafe_until_the_controller_goes_silent(name, tmp_path):
    """Driver and rig on one SimClock: the keep-alive task's writes land in the model."""
    transport = "tcp" if "tcp" in PROFILES[name].transports else "rtu"
    cfg = one_device_site(tmp_path, name, transport, "charger")
    async with AsyncExitStack() as stack:
        shared = SleepWatch()
        rig = Rig(cfg, None, shared, tick=1.0)
        await rig.start()
        stack.push_async_callback(rig.stop)
        if transport == "tcp":
            cfg.buses[0].port = rig.servers["bus"].port
        else:
            cfg.buses[0].gap_ms = 0   # the RS-485 gap would wait on the simulated clock
        bus = build_bus(cfg.buses[0], shared)
        stack.push_async_callback(bus.close)
        charger = build_device(cfg.devices[0], bus, shared)
        stack.push_async_callback(charger.close)
        wrote = asyncio.Event()
        rig.image("dut").on_write(lambda q, v: wrote.set())
        m = rig.charger("dut")
        m.plug(Ev(ramp_delay=0), rig.site.model.now)
        await charger.start()
        await charger.apply(Setpoint(13))
        period = PROFILES[name].keepalive.period_for(FAILSAFE_S)
        timeout = m.failsafe_timeout
        assert timeout is not None and period < timeout
        keepalive = charger._keepalive_task.get_name()
        for _ in range(int(timeout // period) + 2):    # longer than the timeout in all
            # time moves only once the last rewrite's answer is in and the task sleeps
            # again (over a pty that can take a few ms on a loaded machine; advancing
            # before it lost the wake-up and the wait below timed out)
            await asyncio.wait_for(shared.until_asleep(keepalive), 5)
            wrote.clear()
            await shared.advance(period)
            await asyncio.wait_for(wrote.wait(), 5)   # the keep-alive write arrived
            assert not m.silent(shared.monotonic()) and m.offered() == 13.0
        await charger.close()                          # the controller goes silent
        await shared.advance(timeout + 1)
        assert m.silent() and m.offered() == FAILSAFE_A
        assert rig.register("dut", "current_l1") == pytest.approx(FAILSAFE_A, abs=0.01)
