"""The poll loop with small fake devices on a SimClock: staleness, recovery, no drift,
skipped ticks, setpoint writes. The fakes here (FakeMeter, FakeCharger, *_slot) satisfy
drivers/contract.py and are reused by the supervisor and control API tests."""

from __future__ import annotations

from collections import deque
from typing import Any

from agent.clock import Clock
from agent.site.poller import DeviceSlot
from agent.site.state import DeviceInfo
from drivers.contract import ChargerReading, CpState, DeviceTimeout, Measurement, Setpoint

OK = "ok"


class FakeMeter:
    def __init__(self, name: str, clock: Clock, *, read_delay: float = 0.0) -> None:
        self.name = name
        self.clock = clock
        self.read_delay = read_delay
        self.script: deque[Any] = deque()
        self.read_started: list[float] = []
        self.started = 0
        self.closed = 0
        self.amps = 10.0

    async def start(self) -> None:
        self.started += 1

    async def close(self) -> None:
        self.closed += 1

    async def _outcome(self) -> None:
        self.read_started.append(self.clock.monotonic())
        if self.read_delay:
            await self.clock.sleep(self.read_delay)
        step = self.script.popleft() if self.script else OK
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            await step()

    async def read(self) -> Measurement:
        await self._outcome()
        a = self.amps
        return Measurement(
            timestamp=self.clock.now(), monotonic=self.clock.monotonic(),
            voltage=(230.0, 231.0, 229.0), current=(a, a + 1, a + 2), power=(a * 230, None, None),
            power_total=3 * a * 230, energy_import_wh=1234.0,
        )


class FakeCharger(FakeMeter):
    def __init__(self, name: str, clock: Clock, **kw: Any) -> None:
        super().__init__(name, clock, **kw)
        self.min_current = 6.0
        self.max_current = 32.0
        self.applied: list[Setpoint] = []
        self.apply_errors: deque[BaseException] = deque()
        self.state = CpState.C

    async def read(self) -> ChargerReading:  # type: ignore[override]
        await self._outcome()
        return ChargerReading(
            timestamp=self.clock.now(), monotonic=self.clock.monotonic(), state=self.state,
            current=(self.amps, self.amps, self.amps), power_total=3 * self.amps * 230, energy_wh=500.0,
        )

    async def apply(self, setpoint: Setpoint) -> None:
        if self.apply_errors:
            raise self.apply_errors.popleft()
        self.applied.append(setpoint)


def meter_slot(meter: FakeMeter, *, role: str = "grid_meter", profile: str = "eastron-sdm630", bus: str = "lan", unit: int = 2) -> DeviceSlot:
    return DeviceSlot(DeviceInfo(meter.name, role, profile, bus, unit), meter)


def charger_slot(ch: FakeCharger, connector_id: int, *, profile: str = "abb-terra-ac", bus: str = "lan", unit: int = 1) -> DeviceSlot:
    return DeviceSlot(DeviceInfo(ch.name, "charger", profile, bus, unit, connector_id), ch)


def timeout() -> DeviceTimeout:
    return DeviceTimeout("timeout")


# ---------------------------------------------------------------- tests

import asyncio  # noqa: E402
import logging  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

import pytest  # noqa: E402

from agent.clock import SimClock  # noqa: E402
from agent.site.poller import Poller  # noqa: E402
from drivers.contract import DeviceError  # noqa: E402

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock():
    return SimClock(start=T0)


def stale_lines(caplog):
    return [r.getMessage() for r in caplog.records if " stale since " in r.getMessage()]


def recovered_lines(caplog):
    return [r.getMessage() for r in caplog.records if " recovered after " in r.getMessage()]


async def test_device_goes_stale_after_three_failures_logged_once_naming_device_and_time(clock, caplog):
    grid = FakeMeter("grid", clock)
    poller = Poller([meter_slot(grid)], clock=clock, interval=1.0)
    caplog.set_level(logging.INFO, "evsite.poller")
    for _ in range(3):  # 12:00:00 .. 12:00:02 good
        await poller.tick()
        await clock.advance(1.0)
    good = poller.latest.grid().last_good
    grid.script.extend([timeout()] * 6)
    states = []
    for _ in range(6):  # 12:00:03 .. 12:00:08 failing
        states.append(await poller.tick())
        await clock.advance(1.0)
    assert [s.grid().stale for s in states] == [False, False, True, True, True, True]
    assert stale_lines(caplog) == ["device grid (eastron-sdm630 on lan unit 2) stale since 12:00:03Z: timeout"]
    last = states[-1].grid()
    assert last.last_good is good  # kept, never replaced by zeros
    assert last.error == "timeout" and last.consecutive_failures == 6
    assert states[-1].age("grid") == pytest.approx(6.0)


async def test_recovery_is_logged_once(clock, caplog):
    grid = FakeMeter("grid", clock)
    poller = Poller([meter_slot(grid)], clock=clock, interval=1.0, stale_after=2)
    caplog.set_level(logging.INFO, "evsite.poller")
    await poller.tick()
    grid.script.extend([DeviceError("exception code 2"), DeviceError("exception code 2")])
    for _ in range(5):
        await clock.advance(1.0)
        await poller.tick()
    assert len(stale_lines(caplog)) == 1 and stale_lines(caplog)[0].endswith("stale since 12:00:01Z: exception code 2")
    assert recovered_lines(caplog) == [
        "device grid (eastron-sdm630 on lan unit 2) recovered after 2 failed polls (stale since 12:00:01Z)"
    ]
    h = poller.latest.grid()
    assert not h.stale and h.error is None and h.last_good_at == T0.replace(second=5)


async def test_a_short_glitch_is_neither_stale_nor_logged(clock, caplog):
    grid = FakeMeter("grid", clock)
    poller = Poller([meter_slot(grid)], clock=clock, interval=1.0)
    caplog.set_level(logging.INFO, "evsite.poller")
    await poller.tick()
    grid.script.extend([timeout(), timeout()])
    states = [await poller.tick() for _ in range(3)]
    assert not any(s.grid().stale for s in states)
    assert stale_lines(caplog) == [] and recovered_lines(caplog) == []


async def test_device_that_never_answers_is_stale_from_the_start_and_announced_once(clock, caplog):
    grid = FakeMeter("grid", clock)
    grid.script.extend([timeout()] * 5)
    poller = Poller([meter_slot(grid)], clock=clock, interval=1.0)
    caplog.set_level(logging.INFO, "evsite.poller")
    assert poller.latest.grid().stale  # before any tick: nothing known
    for _ in range(5):
        s = await poller.tick()
        assert s.grid().stale and s.grid().last_good is None
    assert len(stale_lines(caplog)) == 1


async def test_driver_bug_counts_as_failure_with_one_traceback(clock, caplog):
    grid = FakeMeter("grid", clock)
    grid.script.extend([KeyError("register 0x48"), KeyError("register 0x48")])
    poller = Poller([meter_slot(grid)], clock=clock, interval=1.0)
    await poller.tick()
    await poller.tick()
    assert poller.latest.grid().error == "KeyError: 'register 0x48'"
    bugs = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert len(bugs) == 1 and bugs[0].exc_info is not None


async def test_devices_are_read_concurrently_and_started_once(clock):
    a = FakeMeter("grid", clock, read_delay=0.4)
    b = FakeMeter("sub", clock, read_delay=0.4)
    poller = Poller([meter_slot(a), meter_slot(b, role="sub_meter", unit=3)], clock=clock, interval=1.0)
    t = asyncio.create_task(poller.tick())
    await clock.advance(0)  # let the tick start its reads
    await clock.advance(0.4)
    state = await t
    assert a.read_started == b.read_started == [1000.0]
    assert state.monotonic == pytest.approx(1000.4)
    t = asyncio.create_task(poller.tick())
    await clock.advance(0)
    await clock.advance(0.4)
    await t
    assert a.started == b.started == 1


async def test_failed_start_is_retried_on_the_next_tick(clock):
    grid = FakeMeter("grid", clock)
    calls = []

    async def start():
        calls.append(1)
        if len(calls) == 1:
            raise DeviceTimeout("connection refused")

    grid.start = start
    poller = Poller([meter_slot(grid)], clock=clock, interval=1.0)
    s1 = await poller.tick()
    s2 = await poller.tick()
    assert s1.grid().error == "connection refused"
    assert not s2.grid().stale and len(calls) == 2


async def test_run_schedules_by_deadline_without_drift(clock):
    grid = FakeMeter("grid", clock, read_delay=0.3)
    poller = Poller([meter_slot(grid)], clock=clock, interval=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    await clock.advance(0)  # the loop starts at t=0
    for _ in range(9):  # to t=4.5: the tick of t=4 has finished at 4.3
        await clock.advance(0.5)
    stop.set()
    await task
    starts = [round(t - 1000.0, 6) for t in grid.read_started]
    assert starts == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert poller.ticks_skipped == 0


async def test_overrunning_tick_skips_missed_deadlines_with_one_log_line(clock, caplog):
    grid = FakeMeter("grid", clock)

    async def slow():
        await clock.sleep(2.5)

    grid.script.extend([OK, slow])
    poller = Poller([meter_slot(grid)], clock=clock, interval=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    await clock.advance(0)  # the loop starts at t=0
    for _ in range(12):
        await clock.advance(0.5)
    stop.set()
    await task
    starts = [round(t - 1000.0, 6) for t in grid.read_started]
    # tick at 1.0 runs until 3.5: deadlines 2.0 and 3.0 are skipped, no burst at 3.5
    assert starts == [0.0, 1.0, 4.0, 5.0, 6.0]
    assert poller.ticks_skipped == 2
    skips = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert skips == ["poll tick 2 took 2.50 s (interval 1.00 s): skipped 2 tick(s)"]


async def test_stop_during_a_tick_lets_it_finish(clock):
    grid = FakeMeter("grid", clock, read_delay=0.5)
    seen = []
    poller = Poller([meter_slot(grid)], clock=clock, interval=1.0, consumers=[seen.append])
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    await clock.advance(0)  # the loop starts at t=0
    await clock.advance(0.2)
    stop.set()  # mid-read
    await clock.advance(0.3)
    await task
    assert [s.tick for s in seen] == [1] and poller.last_progress == pytest.approx(1000.5)


async def test_consumers_get_every_state_in_order_sync_and_async(clock):
    order = []

    async def sessions(state):
        order.append(("sessions", state.tick))

    def sampler(state):
        order.append(("sampler", state.tick))

    poller = Poller([meter_slot(FakeMeter("grid", clock))], clock=clock, interval=1.0, consumers=[sessions])
    poller.add_consumer(sampler)
    await poller.tick()
    await poller.tick()
    assert order == [("sessions", 1), ("sampler", 1), ("sessions", 2), ("sampler", 2)]


async def test_progress_moves_only_when_a_tick_completes(clock):
    gate = asyncio.Event()
    grid = FakeMeter("grid", clock)

    async def stuck():
        await gate.wait()

    grid.script.extend([OK, stuck])
    poller = Poller([meter_slot(grid)], clock=clock, interval=1.0)
    assert poller.last_progress is None
    await poller.tick()
    assert poller.last_progress == 1000.0
    await clock.advance(1.0)
    t = asyncio.create_task(poller.tick())
    await clock.advance(0)
    await clock.advance(5.0)
    assert poller.last_progress == 1000.0
    waiter = asyncio.create_task(poller.wait_for_tick(2))
    await clock.advance(0)
    assert not waiter.done() and poller.ticks_completed == 1
    gate.set()
    await t
    await waiter
    assert poller.last_progress == 1006.0 and poller.ticks_completed == 2
    await poller.wait_for_tick(1)  # already reached: returns at once


# ---------------------------------------------------------------- setpoints

def fixed(amps):
    return lambda state: {cid: Setpoint(amps) for cid in state.connector_ids()}


async def test_setpoint_written_once_then_only_when_changed(clock):
    ch = FakeCharger("cp1", clock)
    wanted = {"amps": 16.0}
    poller = Poller([charger_slot(ch, 1)], clock=clock, interval=1.0,
                    setpoints=lambda s: {1: Setpoint(wanted["amps"])})
    for _ in range(3):
        await poller.tick()
    assert ch.applied == [Setpoint(16.0)]
    wanted["amps"] = 10.0
    state = await poller.tick()
    assert state.setpoints == {1: Setpoint(16.0)}  # the snapshot: what was in force when taken
    assert poller.setpoints == {1: Setpoint(10.0)}  # written after it
    await poller.tick()
    assert ch.applied == [Setpoint(16.0), Setpoint(10.0)]


async def test_setpoint_not_written_while_device_fails_and_rewritten_when_back(clock):
    ch = FakeCharger("cp1", clock)
    poller = Poller([charger_slot(ch, 1)], clock=clock, interval=1.0, setpoints=fixed(16.0))
    await poller.tick()
    ch.script.extend([timeout(), timeout()])
    await poller.tick()
    await poller.tick()
    assert ch.applied == [Setpoint(16.0)]  # no writes into a silent device
    await poller.tick()
    assert ch.applied == [Setpoint(16.0), Setpoint(16.0)]  # it may have rebooted: rewrite


async def test_failed_write_is_retried_and_logged_once(clock, caplog):
    ch = FakeCharger("cp1", clock)
    ch.apply_errors.extend([DeviceError("illegal data value"), DeviceError("illegal data value")])
    caplog.set_level(logging.INFO, "evsite.poller")
    poller = Poller([charger_slot(ch, 1)], clock=clock, interval=1.0, setpoints=fixed(16.0))
    for _ in range(4):
        await poller.tick()
    assert ch.applied == [Setpoint(16.0)]
    msgs = [r.getMessage() for r in caplog.records if "setpoint" in r.getMessage()]
    assert msgs == [
        "setpoint 16.0 A for connector 1 on cp1 (abb-terra-ac on lan unit 1) not written: illegal data value",
        "setpoint for connector 1 on cp1 (abb-terra-ac on lan unit 1) written again",
    ]


async def test_driver_asking_for_a_rewrite_gets_one(clock):
    ch = FakeCharger("cp1", clock)
    ch.needs_setpoint = False
    poller = Poller([charger_slot(ch, 1)], clock=clock, interval=1.0, setpoints=fixed(16.0))
    await poller.tick()
    await poller.tick()
    ch.needs_setpoint = True
    await poller.tick()
    assert len(ch.applied) == 2


async def test_setpoint_for_unknown_connector_is_an_error_naming_it(clock):
    poller = Poller([charger_slot(FakeCharger("cp1", clock), 1)], clock=clock, interval=1.0,
                    setpoints=lambda s: {7: Setpoint(6.0)})
    with pytest.raises(ValueError, match="connector 7"):
        await poller.tick()


def test_bad_arguments_are_named(clock):
    with pytest.raises(ValueError, match="poll interval"):
        Poller([], clock=clock, interval=0)
    with pytest.raises(ValueError, match="duplicate device ids: \\['grid'\\]"):
        Poller([meter_slot(FakeMeter("grid", clock)), meter_slot(FakeMeter("grid", clock))], clock=clock, interval=1)


# ---------------------------------------------------------------- SiteState

async def test_site_state_helpers_and_dict_view(clock):
    grid, ch = FakeMeter("grid", clock), FakeCharger("cp1", clock)
    grid.amps = 20.0
    poller = Poller([meter_slot(grid), charger_slot(ch, 1)], clock=clock, interval=1.0, setpoints=fixed(16.0))
    await poller.tick()
    await clock.advance(2.5)
    ch.script.append(timeout())
    state = await poller.tick()
    assert state.grid().last_good.current == (20.0, 21.0, 22.0)
    assert state.charger(1).name == "cp1" and state.connector(1) is state.charger(1)
    with pytest.raises(KeyError, match="no charger for connector 2 \\(connectors: \\[1\\]\\)"):
        state.charger(2)
    with pytest.raises(TypeError):
        state.health["x"] = None  # read-only for every consumer
    d = state.as_dict(setpoints=poller.setpoints)
    assert d["taken_at"] == "2026-03-01T12:00:02.500Z" and d["tick"] == 2
    devs = {x["id"]: x for x in d["devices"]}
    assert devs["grid"]["age_s"] == 0.0 and devs["grid"]["error"] is None
    assert devs["cp1"]["age_s"] == 2.5 and devs["cp1"]["error"] == "timeout"
    assert devs["cp1"]["last_good_at"] == "2026-03-01T12:00:00.000Z"
    [c] = d["connectors"]
    assert c["state"] == "C" and c["current"] == [10.0, 10.0, 10.0] and c["energy_wh"] == 500.0
    assert c["setpoint"] == {"amps": 16.0, "phases": 3, "enabled": True}
    assert d["site"]["grid"]["current"] == [20.0, 21.0, 22.0] and d["site"]["grid"]["power_w"] == 13800.0


def test_site_state_rejects_naive_time_and_unknown_devices():
    from agent.site.state import SiteState
    from drivers.contract import DeviceHealth

    with pytest.raises(ValueError, match="timezone-aware"):
        SiteState(taken_at=datetime(2026, 1, 1), monotonic=0.0, tick=0, health={})
    info = meter_slot(FakeMeter("grid", SimClock())).info
    with pytest.raises(ValueError, match="unknown device\\(s\\): \\['ghost'\\]"):
        SiteState(taken_at=T0, monotonic=0.0, tick=0, health={"ghost": DeviceHealth("ghost")}, devices={"grid": info})


# ---------------------------------------------------------------- agent/site/devices.py

def test_fixed_setpoints_use_fixed_current_else_max_current():
    from agent.config.model import DeviceSection, LimitsSection, SiteConfig
    from agent.site.devices import fixed_setpoints

    cfg = SiteConfig(limits=LimitsSection(fuse_amps=32), devices=[
        DeviceSection(id="a", profile="p", bus="b", role="charger", connector_id=1, fixed_current=10.0),
        DeviceSection(id="b", profile="p", bus="b", role="charger", connector_id=2, max_current=20.0, phases=1),
        DeviceSection(id="c", profile="p", bus="b", role="charger", connector_id=3, fixed_current=0.0),
        DeviceSection(id="g", profile="p", bus="b", role="grid_meter"),
    ])
    assert fixed_setpoints(cfg)(None) == {
        1: Setpoint(10.0, 3, True), 2: Setpoint(20.0, 1, True), 3: Setpoint(0.0, 3, False),
    }


async def test_close_quietly_survives_errors_and_hangs(caplog):
    from agent.site.devices import close_all

    class Hangs:
        async def close(self):
            await asyncio.Event().wait()

    class Fails:
        async def close(self):
            raise DeviceError("port vanished")

    class Fine:
        closed = False

        async def close(self):
            Fine.closed = True

    await close_all([(Hangs(), "device a"), (Fails(), "device b"), (Fine(), "device c")], timeout=0.01)
    assert Fine.closed
    text = caplog.text
    assert "device a did not close within 0.01 s; abandoned" in text
    assert "device b: error while closing: DeviceError: port vanished" in text
