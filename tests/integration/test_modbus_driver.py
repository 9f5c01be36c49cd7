"""The generic Modbus driver against real servers built from the same profiles.

Every profile is read and written through its own register image over TCP (the RTU
ones also over a pty), so a new profile file is tested by being there. Then the bus
behaviours that matter on site: a killed device costs a bounded time and is found
again; two devices on one RS-485 line are served one at a time with the gap kept.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from agent.clock import SimClock, SystemClock
from agent.config.model import BusSection, DeviceSection
from drivers.contract import Charger, CpState, DeviceError, DeviceTimeout, EnergyScope, Setpoint
from drivers.modbus.bus import RtuBus, TcpBus
from drivers.modbus.device import ModbusCharger, ModbusMeter
from drivers.profile import load_profile, profile_names
from drivers.registry import RegistryError, build_bus, build_device
from hil.emulator import RegisterImage, serve_rtu_pty, serve_tcp

CLOCK = SystemClock()
ALL = profile_names()
CHARGERS = [n for n in ALL if load_profile(n).kind == "charger"]
RTU = [n for n in ALL if "rtu" in load_profile(n).transports]

VALUES = {
    "voltage_l1": 231.0, "voltage_l2": 229.5, "voltage_l3": 233.0,
    "current_l1": 15.5, "current_l2": 14.25, "current_l3": 13.0,
    "power_l1": 3500.0, "power_l2": 3200.0, "power_l3": 3000.0, "power": 9700.0,
    "energy_import": 1_234_500.0, "energy_export": 4_500.0, "frequency": 50.02,
    "session_energy": 2_500.0, "applied_current": 16.0, "failsafe_current": 8.0,
    "rfid": "04A1B2C3", "phases": 3, "temperature": 31.5, "fault": 0,
}
METER_FIELDS = {"power": "power_total", "energy_import": "energy_import_wh",
                "energy_export": "energy_export_wh", "frequency": "frequency"}
CHARGER_FIELDS = {"power": "power_total", "applied_current": "applied_current",
                  "failsafe_current": "failsafe_current", "rfid": "rfid", "phases": "phases"}


def resolution(img: RegisterImage, q: str) -> float:
    spec = img.profile.reads[q]
    if spec.scale_factor is not None:
        return 10.0 ** img._sf[spec.scale_factor]
    if spec.type in ("float32", "float64", "string"):
        return 1e-3
    return abs(spec.scale)


def load_image(img: RegisterImage, state: str = "C") -> dict[str, object]:
    """Put every test value into the image; return what the driver should read."""
    expect: dict[str, object] = {}
    for q in img.profile.reads:
        if q in VALUES and img.set(q, VALUES[q]):
            expect[q] = img.get(q)
            if isinstance(VALUES[q], float):
                assert abs(expect[q] - VALUES[q]) <= resolution(img, q), f"{q} does not round-trip"
    if img.profile.kind == "charger":
        img.set("state", state)
    return expect


def field_of(reading, q: str):
    if q[:-1] in ("voltage_l", "current_l", "power_l") and q[-1] in "123":
        return getattr(reading, q.split("_")[0])[int(q[-1]) - 1]
    fields = METER_FIELDS if hasattr(reading, "energy_import_wh") else CHARGER_FIELDS
    return getattr(reading, fields[q]) if q in fields else None


def check_reading(reading, expect: dict[str, object], profile) -> None:
    for q, want in expect.items():
        if q in ("temperature", "fault", "enabled", "plug", "charging", "state"):
            continue
        if profile.kind == "charger" and q in ("energy_import", "session_energy"):
            continue
        got = field_of(reading, q)
        if q.startswith("power_l") and profile.kind == "charger":
            continue
        if isinstance(want, str):
            assert got == want, q
        else:
            assert got == pytest.approx(float(want), rel=1e-6, abs=1e-6), q


async def sleeping(clock: SimClock, n: int = 1) -> None:
    """Let freshly started tasks reach their clock.sleep (loop turns, no wall time)."""
    for _ in range(100):
        if clock.pending_sleepers >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError("no task is sleeping on the clock")


def make_driver(profile_name: str, bus, clock=CLOCK, **kw):
    p = load_profile(profile_name)
    if p.kind == "meter":
        return ModbusMeter(f"dev-{profile_name}", p, bus, clock, **kw)
    return ModbusCharger(f"dev-{profile_name}", p, bus, clock, **kw)


class Site:
    """One profile's image behind a real server, and a driver on a real bus."""

    def __init__(self, name: str, **driver_kw) -> None:
        self.name = name
        self.img = RegisterImage(name)
        self.writes: list[tuple[str, object]] = []
        self.wrote = asyncio.Event()
        self.driver_kw = driver_kw

        def record(q, v):
            self.writes.append((q, v))
            self.wrote.set()
        self.img.on_write(record)

    async def __aenter__(self):
        self.handle = await serve_tcp("127.0.0.1", 0, [self.img])
        clock = self.driver_kw.pop("clock", CLOCK)
        self.bus = TcpBus("bus", clock, "127.0.0.1", self.handle.port, timeout=0.3, retries=1)
        self.driver = make_driver(self.name, self.bus, clock, **self.driver_kw)
        return self

    async def __aexit__(self, *exc):
        await self.driver.close()
        await self.bus.close()
        await self.handle.close()

    def last(self, quantity: str):
        return [v for q, v in self.writes if q == quantity][-1]


# -- every profile through its emulator ---------------------------------------------------

@pytest.mark.parametrize("name", ALL)
async def test_every_profile_reads_through_its_emulator_over_tcp(name):
    async with Site(name) as s:
        expect = load_image(s.img, "C")
        await s.driver.start()
        reading = await s.driver.read()
        check_reading(reading, expect, s.img.profile)
        if s.img.profile.kind == "charger":
            assert reading.state is CpState.C
            if "energy_import" in expect:
                assert reading.energy_wh == pytest.approx(expect["energy_import"])
            elif "session_energy" in expect:
                assert reading.energy_wh == pytest.approx(expect["session_energy"])
                assert reading.energy_scope is EnergyScope.SESSION
            assert reading.fault is None
        else:
            assert reading.power_total is not None or reading.energy_import_wh is not None


@pytest.mark.parametrize("name", RTU)
async def test_rtu_profiles_read_and_write_over_a_pty(name, tmp_path):
    link = str(tmp_path / "ttyRS485")
    img = RegisterImage(name)
    expect = load_image(img, "B")
    writes: list[tuple[str, object]] = []
    img.on_write(lambda q, v: writes.append((q, v)))
    handle = await serve_rtu_pty([img], link, baudrate=19200, parity="E")
    bus = RtuBus("line", CLOCK, link, baudrate=19200, parity="E", timeout=0.3, retries=0, gap_ms=0)
    driver = make_driver(name, bus)
    try:
        await driver.start()
        reading = await driver.read()
        check_reading(reading, expect, img.profile)
        if img.profile.kind == "charger":
            assert reading.state is CpState.B
            await driver.apply(Setpoint(amps=10))
            assert ("current", pytest.approx(10)) in writes
    finally:
        await driver.close()
        await bus.close()
        await handle.close()


@pytest.mark.parametrize("name", CHARGERS)
async def test_every_charger_takes_setpoints_as_its_profile_says(name):
    async with Site(name, max_current=32, min_current=6) as s:
        p = s.img.profile
        cur = p.writes["current"]
        await s.driver.start()

        await s.driver.apply(Setpoint(amps=13.7))
        whole = cur.type not in ("float32", "float64") and cur.scale == 1
        want = 13.0 if whole else 13.7
        assert s.last("current") == pytest.approx(want), "rounded down, never up"
        if "enable" in p.writes:
            assert s.last("enable") is True

        await s.driver.apply(Setpoint(amps=3.0))          # below min_current: pause
        if cur.below_min == "disable":
            assert s.last("enable") is False
            assert s.last("current") == pytest.approx(want)
        else:
            assert s.last("current") == 0

        await s.driver.apply(Setpoint(amps=20, enabled=False))
        if cur.below_min == "zero":
            assert s.last("current") == 0

        await s.driver.apply(Setpoint(amps=500))          # clamped to the charger's max
        assert s.last("current") == pytest.approx(min(32, p.max_current))


async def test_site_config_narrows_the_current_range():
    async with Site("alfen-eve", min_current=8, max_current=16) as s:
        assert (s.driver.min_current, s.driver.max_current) == (8, 16)
        await s.driver.apply(Setpoint(amps=7))
        assert s.last("current") == 0
        await s.driver.apply(Setpoint(amps=20))
        assert s.last("current") == pytest.approx(16)


async def test_heidelberg_start_writes_standby_watchdog_and_failsafe():
    async with Site("heidelberg-ec", failsafe_current=6, failsafe_timeout=30) as s:
        await s.driver.start()
        assert s.writes == [("init", (258, 4)), ("failsafe_timeout", pytest.approx(30.0)),
                            ("failsafe_current", pytest.approx(6.0))]
        assert s.img.raw("holding", 257) == [30000]       # ms on the wire
        assert s.img.raw("holding", 262) == [60]          # 0.1 A on the wire


async def test_failsafe_timeout_too_long_for_the_register_is_a_clear_error():
    async with Site("heidelberg-ec", failsafe_timeout=120) as s:   # 120 000 ms > uint16
        with pytest.raises(DeviceError, match="failsafe_timeout.*outside uint16"):
            await s.driver.start()


async def test_vestel_keepalive_runs_on_the_clock_and_stops_with_close():
    clock = SimClock()
    async with Site("vestel-evc04", clock=clock, failsafe_timeout=20, failsafe_current=6) as s:
        await s.driver.start()
        assert ("failsafe_timeout", 20) in s.writes and ("failsafe_current", 6) in s.writes
        s.wrote.clear()
        s.writes.clear()
        await sleeping(clock)
        await clock.advance(5)                            # timeout / 4
        await asyncio.wait_for(s.wrote.wait(), 2)
        assert s.writes == [("keepalive", 1)]
        await s.driver.close()
        await s.driver.close()                            # idempotent
        assert clock.pending_sleepers == 0


async def test_alfen_setpoint_is_rewritten_before_its_validity_runs_out():
    clock = SimClock()
    async with Site("alfen-eve", clock=clock) as s:
        await s.driver.start()
        await s.driver.apply(Setpoint(amps=11))
        s.wrote.clear()
        s.writes.clear()
        await sleeping(clock)
        await clock.advance(25)
        await asyncio.wait_for(s.wrote.wait(), 2)
        assert s.writes == [("current", pytest.approx(11))]


class AnswerRacesTheCancel(TcpBus):
    """The real bus; once armed, each write then waits for an answer the test gives,
    with ``asyncio.wait_for`` as pymodbus waits for a Modbus answer.

    On Python 3.11 ``wait_for`` returns the result, swallowing the cancellation, when a
    cancel and the answer land in the same loop turn. Over a pty that happened by chance
    (a keep-alive SimClock test hung in ``close()``); here the test makes it happen.
    """

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.armed = False
        self.in_write = asyncio.Event()
        self.answer: asyncio.Future[None] | None = None

    async def write(self, *a, **kw) -> None:
        await super().write(*a, **kw)
        if self.armed:
            self.answer = asyncio.get_running_loop().create_future()
            self.in_write.set()
            await asyncio.wait_for(self.answer, 5)


async def test_close_stops_a_keepalive_whose_cancellation_was_swallowed():
    clock = SimClock()
    img = RegisterImage("heidelberg-ec")
    async with await serve_tcp("127.0.0.1", 0, [img]) as handle:
        bus = AnswerRacesTheCancel("b", clock, "127.0.0.1", handle.port, timeout=0.3, retries=0)
        drv = make_driver("heidelberg-ec", bus, clock, failsafe_timeout=30, failsafe_current=6)
        closing = asyncio.get_running_loop().create_future()
        closing.set_result(None)
        try:
            await drv.start()
            await drv.apply(Setpoint(amps=10))
            keepalive = drv._keepalive_task
            assert keepalive is not None
            bus.armed = True
            await sleeping(clock)
            await clock.advance(10)                       # 0.33 x 30 s: the setpoint is rewritten
            await asyncio.wait_for(bus.in_write.wait(), 5)
            bus.answer.set_result(None)                   # the answer, and in the same turn ...
            closing = asyncio.create_task(drv.close())    # ... close() cancels the keep-alive
            done, _ = await asyncio.wait([closing], timeout=5)   # (wait() cancels nothing)
            assert closing in done, "close() still waits for a keep-alive that went back to sleep"
            assert keepalive.done() and clock.pending_sleepers == 0
        finally:
            if not closing.done():
                closing.cancel()
                await asyncio.wait([closing])
            await drv.close()
            await bus.close()


async def test_phase_switching_only_when_allowed_and_supported():
    async with Site("vestel-evc04", can_switch_phases=True) as s:
        assert s.driver.can_switch_phases
        await s.driver.apply(Setpoint(amps=10, phases=1))
        assert s.last("phases") == 1 and s.img.raw("holding", 405) == [0]
        await s.driver.apply(Setpoint(amps=10, phases=3))
        assert s.last("phases") == 3
    async with Site("heidelberg-ec", can_switch_phases=True) as s:
        assert not s.driver.can_switch_phases


async def test_charger_without_state_register_derives_it():
    async with Site("vestel-evc04") as s:
        for state in "ABC":
            s.img.set("state", state)
            assert (await s.driver.read()).state is CpState(state)


async def test_one_phase_alfen_reads_none_for_missing_phases():
    async with Site("alfen-eve") as s:
        load_image(s.img)
        s.img.fault("nan", quantity="voltage_l2")
        s.img.fault("nan", quantity="current_l3")
        r = await s.driver.read()
        assert r.voltage[1] is None and r.current[2] is None and r.voltage[0] == pytest.approx(231)


async def test_nan_in_a_required_value_is_an_error_naming_device_and_quantity():
    async with Site("eastron-sdm630") as s:
        s.img.fault("nan", quantity="energy_import")
        with pytest.raises(DeviceError, match="dev-eastron-sdm630: energy_import: device reports no value"):
            await s.driver.read()


async def test_abb_b23_sentinel_is_an_error():
    async with Site("abb-b23") as s:
        load_image(s.img)
        s.img.fault("nan", quantity="power_l2")
        with pytest.raises(DeviceError, match="power_l2.*0x7FFFFFFF"):
            await s.driver.read()


async def test_garbage_state_is_an_error():
    async with Site("heidelberg-ec") as s:
        s.img.fault("garbage", quantity="state")
        with pytest.raises(DeviceError, match="state: raw value 65535 not in the profile's map"):
            await s.driver.read()


async def test_block_reads_merge_a_profile_into_few_requests():
    async with Site("eastron-sdm630") as s:
        await s.driver.read()
        # 0x00-0x11, 0x34-0x35, 0x46-0x4B: three requests for thirteen values
        assert [(r.function_code, r.address, r.count) for r in s.handle.requests] == [
            (4, 0x00, 0x12), (4, 0x34, 2), (4, 0x46, 6)]


async def test_sunspec_discovery_at_the_second_base():
    img = RegisterImage("sunspec-203", sunspec_base=50000)
    expect = load_image(img)
    async with await serve_tcp("127.0.0.1", 0, [img]) as handle:
        bus = TcpBus("b", CLOCK, "127.0.0.1", handle.port, timeout=0.3, retries=0)
        drv = make_driver("sunspec-203", bus)
        await drv.start()
        check_reading(await drv.read(), expect, img.profile)
        await drv.close()
        await bus.close()


async def test_sunspec_without_the_model_is_a_clear_error():
    img = RegisterImage("sunspec-203")
    img._mem["holding"][img.model_address] = 201        # a different meter model
    async with await serve_tcp("127.0.0.1", 0, [img]) as handle:
        bus = TcpBus("b", CLOCK, "127.0.0.1", handle.port, timeout=0.3, retries=0)
        drv = make_driver("sunspec-203", bus)
        with pytest.raises(DeviceError, match="SunSpec model 203 not in the model chain at 40000"):
            await drv.start()
        await drv.close()
        await bus.close()


async def test_charx_second_connector_uses_its_stride():
    c2 = RegisterImage("phoenix-charx", connector_index=2)
    c2.set("state", "C")
    c2.set("current_l1", 12.5)
    async with await serve_tcp("127.0.0.1", 0, [RegisterImage("phoenix-charx"), c2]) as handle:
        bus = TcpBus("b", CLOCK, "127.0.0.1", handle.port, timeout=0.3, retries=0)
        drv = make_driver("phoenix-charx", bus, connector_index=2)
        r = await drv.read()
        assert r.state is CpState.C and r.current[0] == pytest.approx(12.5)
        await drv.apply(Setpoint(amps=10))
        assert c2.get("current") == 10
        await drv.close()
        await bus.close()


# -- a device dies and comes back ------------------------------------------------------------

async def test_killed_tcp_device_times_out_quickly_and_is_found_again():
    async with Site("heidelberg-ec", failsafe_current=6, failsafe_timeout=30) as s:
        await s.driver.start()
        await s.driver.read()
        await s.handle.stop()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(DeviceTimeout, match="heidelberg|unit 1"):
            await s.driver.read()
        assert loop.time() - t0 <= s.bus.timeout * (s.bus.retries + 1) + 0.2
        # it comes back from a power cycle: registers forgot the init writes
        s.img._mem["holding"].update({258: 0, 262: 0, 257: 0})
        s.writes.clear()
        await s.handle.start()
        reading = await s.driver.read()
        assert reading.state is CpState.A
        assert [q for q, _ in s.writes] == ["init", "failsafe_timeout", "failsafe_current"]
        assert s.img.raw("holding", 258) == [4]


async def test_setpoint_is_restored_after_the_device_comes_back():
    async with Site("alfen-eve") as s:
        await s.driver.apply(Setpoint(amps=12))
        await s.handle.stop()
        with pytest.raises(DeviceTimeout):
            await s.driver.read()
        s.writes.clear()
        await s.handle.start()
        await s.driver.read()
        assert ("current", pytest.approx(12)) in s.writes


async def test_silent_device_costs_at_most_the_bus_timeout_per_attempt():
    async with Site("eastron-sdm630") as s:
        s.img.fault("silent")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(DeviceTimeout, match="no answer within 0.3 s \\(2 attempts\\)"):
            await s.driver.read()
        assert loop.time() - t0 <= 0.3 * 2 + 0.2


# -- one RS-485 line, two devices ------------------------------------------------------------

async def test_two_devices_on_one_rtu_line_are_serialized_with_the_gap(tmp_path):
    link = str(tmp_path / "ttyRS485")
    meter, evse = RegisterImage("eastron-sdm630"), RegisterImage("evse-din", unit_id=2)
    handle = await serve_rtu_pty([meter, evse], link)
    bus = RtuBus("line", CLOCK, link, timeout=0.5, retries=0)      # gap from the profiles
    m = make_driver("eastron-sdm630", bus)
    c = make_driver("evse-din", bus, unit_id=2)
    try:
        assert bus.gap == pytest.approx(0.1)                       # SDM630's 100 ms wins
        await asyncio.gather(m.read(), c.read(), m.read(), c.read())
        times = [r.at for r in handle.requests]
        assert len(times) == 8 and {r.unit_id for r in handle.requests} == {1, 2}
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert min(gaps) >= 0.1 - 0.005, gaps
    finally:
        await m.close()
        await c.close()
        await bus.close()
        await handle.close()


async def test_separate_buses_run_concurrently():
    a, b = RegisterImage("eastron-sdm630"), RegisterImage("eastron-sdm630")
    ha, hb = await serve_tcp("127.0.0.1", 0, [a]), await serve_tcp("127.0.0.1", 0, [b])
    ba = TcpBus("a", CLOCK, "127.0.0.1", ha.port, timeout=0.5, retries=0, gap_ms=100)
    bb = TcpBus("b", CLOCK, "127.0.0.1", hb.port, timeout=0.5, retries=0, gap_ms=100)
    ma, mb = make_driver("eastron-sdm630", ba), make_driver("eastron-sdm630", bb)
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.gather(ma.read(), mb.read())
        # each does 3 requests with 2 gaps of 100 ms; serialized it would be >= 0.5 s
        assert loop.time() - t0 < 0.45
    finally:
        for x in (ma, mb, ba, bb, ha, hb):
            await x.close()


# -- the registry ---------------------------------------------------------------------------

def tcp_bus_cfg(port: int = 5020, **kw) -> BusSection:
    return BusSection(id="lan", type="tcp", host="127.0.0.1", port=port, timeout=0.3, **kw)


def device_cfg(profile: str, role: str, **kw) -> DeviceSection:
    return DeviceSection(id=f"d-{profile}", profile=profile, bus="lan", role=role, **kw)


async def test_registry_builds_working_drivers_from_config():
    img = RegisterImage("alfen-eve")
    load_image(img, "B")
    async with await serve_tcp("127.0.0.1", 0, [img]) as handle:
        bus = build_bus(tcp_bus_cfg(handle.port), CLOCK)
        drv = build_device(device_cfg("alfen-eve", "charger", unit_id=1, max_current=16,
                                      failsafe_current=6, failsafe_timeout=60), bus, CLOCK)
        assert isinstance(drv, Charger) and isinstance(drv, ModbusCharger) and drv.max_current == 16
        assert (await drv.read()).state is CpState.B
        await drv.close()
        await bus.close()


def test_registry_unknown_profile_lists_known_ones():
    with pytest.raises(RegistryError, match=r"device d-nope: unknown device profile 'nope'; known profiles: .*alfen-eve"):
        build_device(device_cfg("nope", "charger"), build_bus(tcp_bus_cfg(), CLOCK), CLOCK)


def test_registry_refuses_profile_on_wrong_transport():
    rtu = build_bus(BusSection(id="rs485", type="rtu", port="/dev/ttyUSB0"), CLOCK)
    with pytest.raises(RegistryError, match="alfen-eve supports tcp, but bus rs485 is rtu"):
        build_device(device_cfg("alfen-eve", "charger"), rtu, CLOCK)


def test_registry_refuses_meter_profile_in_charger_role():
    with pytest.raises(RegistryError, match="role charger needs a charger profile, eastron-sdm630 is a meter"):
        build_device(device_cfg("eastron-sdm630", "charger"), build_bus(tcp_bus_cfg(), CLOCK), CLOCK)


def test_registry_bus_settings():
    bus = build_bus(BusSection(id="rs485", type="rtu", port="/dev/ttyUSB0", baudrate=19200, parity="E",
                               gap_ms=40, timeout=0.5, retries=2), CLOCK)
    assert isinstance(bus, RtuBus) and bus.kind == "rtu"
    assert (bus.baudrate, bus.parity, bus.gap, bus.timeout, bus.retries) == (19200, "E", 0.04, 0.5, 2)
    bus.require_gap(100)                                  # config fixed it: profiles cannot raise it
    assert bus.gap == 0.04
    tcp = build_bus(BusSection(id="lan", type="tcp", host="10.0.0.5"), CLOCK)
    assert isinstance(tcp, TcpBus) and tcp.port == 502
    with pytest.raises(RegistryError, match="bus lan: tcp needs a host"):
        build_bus(BusSection(id="lan", type="tcp"), CLOCK)


def test_charger_driver_refuses_a_meter_profile():
    with pytest.raises(ValueError, match="is a meter, not a charger"):
        ModbusCharger("x", load_profile("abb-b23"), build_bus(tcp_bus_cfg(), CLOCK), CLOCK)


def test_floor_current_never_rounds_up():
    w = load_profile("heidelberg-ec").writes["current"]
    for amps in (6.0, 6.09, 13.77, 15.999):
        assert ModbusCharger._floor_current(w, amps) <= amps
        assert amps - ModbusCharger._floor_current(w, amps) < 0.1 + 1e-9
    assert math.isclose(ModbusCharger._floor_current(w, 13.77), 13.7)
