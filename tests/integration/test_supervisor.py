"""The supervisor end to end in-process: start order and READY, watchdog only while the
poll loop ticks, SIGTERM mid-poll with a real SQLite file left intact, crashes that exit
non-zero with the error logged, and the uplink hook.

Devices are the fakes from tests/unit/test_poller.py; the store here is a minimal
aiosqlite stand-in (one row per tick, in a transaction) until agent/store lands, so the
"store intact after SIGTERM" check runs against a real SQLite file today.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import time

import aiosqlite
import pytest

from agent import supervisor
from agent.clock import SimClock, SystemClock
from agent.config.model import ControlSection, DeviceSection, LimitsSection, SiteConfig, SiteSection
from agent.control.client import ControlClient
from agent.sdnotify import Notifier
from agent.site.devices import device_info
from agent.site.poller import DeviceSlot
from agent.supervisor import Parts, run_agent
from drivers.contract import Setpoint
from tests.unit.test_poller import OK, FakeCharger, FakeMeter


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="evs-", dir="/tmp")  # short: Unix socket paths
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def notify(workdir):
    path = os.path.join(workdir, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)

    class Inbox:
        def __init__(self):
            self.messages: list[str] = []

        def drain(self) -> list[str]:
            new = []
            while True:
                try:
                    new.append(sock.recv(4096).decode())
                except BlockingIOError:
                    break
            self.messages += new
            return new

        def notifier(self, watchdog_usec=None):
            return Notifier(path, watchdog_usec)

    yield Inbox()
    sock.close()


def make_config(workdir, poll_interval=1.0):
    return SiteConfig(
        site=SiteSection(name="test site", poll_interval=poll_interval, state_dir=os.path.join(workdir, "state")),
        limits=LimitsSection(fuse_amps=32.0),
        control=ControlSection(socket=os.path.join(workdir, "control.sock")),
        devices=[
            DeviceSection(id="grid", profile="eastron-sdm630", bus="lan", unit_id=2, role="grid_meter"),
            DeviceSection(id="cp1", profile="abb-terra-ac", bus="lan", unit_id=1, role="charger",
                          connector_id=1, fixed_current=10.0),
        ],
    )


class TickStore:
    """A real SQLite file: one row per tick, written in its own transaction."""

    def __init__(self, db, events):
        self.db, self.events = db, events

    @classmethod
    async def open(cls, path, events):
        db = await aiosqlite.connect(path)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("CREATE TABLE IF NOT EXISTS ticks (n INTEGER PRIMARY KEY, grid_a REAL NOT NULL)")
        await db.commit()
        events.append("store opened")
        return cls(db, events)

    async def record(self, tick, amps):
        await self.db.execute("INSERT INTO ticks VALUES (?, ?)", (tick, amps))
        await self.db.commit()

    async def close(self):
        await self.db.close()
        self.events.append("store closed")


class Sessions:
    def __init__(self, store, events):
        self.store, self.events, self.crash_at = store, events, None

    async def on_site_state(self, state):
        if state.tick == self.crash_at:
            raise RuntimeError("session table corrupt")
        g = state.grid()
        await self.store.record(state.tick, g.last_good.current[0] if g.last_good else -1)

    async def close(self):
        self.events.append("sessions closed")


def make_parts(workdir, clock, events, sessions=True, **kw):
    devices = {}

    async def open_store(rt):
        return await TickStore.open(os.path.join(rt.config.site.state_dir, "evsite.db"), events)

    async def open_devices(rt, stack):
        slots = []
        for d in rt.config.devices:
            fake = (FakeCharger if d.role == "charger" else FakeMeter)(d.id, clock)
            devices[d.id] = fake
            stack.callback(events.append, f"device {d.id} closed")
            slots.append(DeviceSlot(device_info(d), fake))
        events.append("devices opened")
        return slots

    async def open_sessions(rt, stack):
        s = Sessions(rt.store, events)
        stack.push_async_callback(s.close)
        events.append("sessions opened")
        devices["sessions"] = s
        return s

    parts = Parts(open_store=open_store, open_devices=open_devices,
                  open_sessions=open_sessions if sessions else None, **kw)
    return parts, devices


async def start(config, clock, parts, notifier, **kw):
    """run_agent as a task; returns (task, runtime) once READY was sent."""
    ready = asyncio.Event()
    box = {}

    def on_ready(rt):
        box["rt"] = rt
        ready.set()

    task = asyncio.create_task(run_agent(config, clock, parts=parts, notifier=notifier, ready=on_ready, **kw))
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        raise AssertionError(f"agent exited before READY: {task.result()}")
    return task, box["rt"]


async def next_tick(rt, clock, n):
    """Wait (on events, not time) until tick ``n`` completed and the loop sleeps again."""
    await rt.poller.wait_for_tick(n)
    await clock.advance(0)


async def test_ready_after_everything_is_up_then_clean_stop_in_reverse_order(workdir, notify, caplog):
    caplog.set_level(logging.INFO)
    clock = SimClock()
    events: list[str] = []
    config = make_config(workdir)
    parts, devices = make_parts(workdir, clock, events)
    stop = asyncio.Event()
    task, rt = await start(config, clock, parts, notify.notifier(), stop=stop, handle_signals=False)
    # READY went out after the store, devices, sessions and the control socket were up
    assert events == ["store opened", "devices opened", "sessions opened"]
    assert notify.drain()[0].startswith("READY=1\nSTATUS=2 devices")
    status = await ControlClient(config.control_socket).status()
    assert status["site"]["name"] == "test site" and status["agent"]["version"]
    await next_tick(rt, clock, 1)
    await clock.advance(1.0)
    await rt.poller.wait_for_tick(2)
    assert devices["cp1"].applied == [Setpoint(10.0, 3, True)]  # fixed current from the config
    status = await ControlClient(config.control_socket).status()
    assert status["tick"] == 2 and status["connectors"][0]["setpoint"]["amps"] == 10.0
    stop.set()
    assert await task == 0
    assert events[3:] == ["sessions closed", "device cp1 closed", "device grid closed", "store closed"]
    assert not os.path.exists(config.control_socket)
    assert "STOPPING=1" in "".join(notify.drain())
    assert any(r.getMessage().startswith("stopped cleanly in") for r in caplog.records)


async def test_watchdog_is_petted_only_while_the_poll_loop_ticks(workdir, notify, caplog):
    clock = SimClock()
    events: list[str] = []
    gate = asyncio.Event()
    # no sessions: their SQLite writes finish on a thread, outside simulated time
    parts, devices = make_parts(workdir, clock, events, sessions=False, stuck_after=5.0)
    stop = asyncio.Event()
    task, rt = await start(make_config(workdir), clock, parts, notify.notifier(watchdog_usec=2_000_000),
                           stop=stop, handle_signals=False)

    async def stuck():
        await gate.wait()

    def pets_now():
        return [clock.monotonic() - 1000.0 for m in notify.drain() if m == "WATCHDOG=1"]

    try:
        devices["grid"].script.extend([OK, OK, stuck])  # a few ticks complete, then one hangs
        await clock.advance(0)
        pets = pets_now()
        for _ in range(30):
            await clock.advance(0.5)
            pets += pets_now()
        assert clock.monotonic() - 1000.0 == 15.0
        last_progress = rt.poller.last_progress - 1000.0
        assert 1.0 <= last_progress <= 3.0
        # one pet per second (half of WatchdogSec=2) while the last completed tick is at
        # most 5 s old; none after that
        assert pets[0] == 0.0 and all(b - a == pytest.approx(1.0) for a, b in zip(pets, pets[1:]))
        assert last_progress + 4.0 <= pets[-1] <= last_progress + 5.0
        stuck_logs = [r for r in caplog.records if "no longer petting the watchdog" in r.getMessage()]
        assert len(stuck_logs) == 1 and stuck_logs[0].levelno == logging.ERROR
        gate.set()  # the hung tick completes: pets resume
        for _ in range(4):
            await clock.advance(0.5)
            pets += pets_now()
        assert pets[-1] > 15.0
        assert any("poll loop moving again" in r.getMessage() for r in caplog.records)
    finally:
        gate.set()
        stop.set()
        code = await task
    assert code == 0


async def test_sigterm_during_a_poll_stops_cleanly_with_the_store_intact(workdir, notify, caplog):
    caplog.set_level(logging.INFO)
    clock = SystemClock()
    events: list[str] = []
    config = make_config(workdir, poll_interval=0.1)
    parts, devices = make_parts(workdir, clock, events)
    task, rt = await start(config, clock, parts, notify.notifier())
    in_read = asyncio.Event()

    async def slow():
        in_read.set()
        await asyncio.sleep(0.3)

    devices["grid"].script.extend([OK, OK, slow])
    await in_read.wait()
    t0 = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    code = await task
    took = time.monotonic() - t0
    assert code == 0 and took < 5.0
    completed = rt.poller.tick_count
    assert completed >= 3  # the tick that was reading when SIGTERM came finished
    assert events[-1] == "store closed"
    db = sqlite3.connect(os.path.join(config.site.state_dir, "evsite.db"))
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = [n for (n,) in db.execute("SELECT n FROM ticks ORDER BY n")]
    finally:
        db.close()
    assert rows == list(range(1, completed + 1))  # every published tick stored, none half-written
    assert any("stopping: SIGTERM" in r.getMessage() for r in caplog.records)


async def test_a_crashing_loop_exits_nonzero_with_its_error_logged(workdir, notify, caplog):
    clock = SimClock()
    events: list[str] = []
    parts, devices = make_parts(workdir, clock, events)
    task, rt = await start(make_config(workdir), clock, parts, notify.notifier(), handle_signals=False)
    devices["sessions"].crash_at = 2
    await next_tick(rt, clock, 1)
    await clock.advance(1.0)
    assert await task == 1
    crash = [r for r in caplog.records if "poll loop crashed: RuntimeError: session table corrupt" in r.getMessage()]
    assert len(crash) == 1 and crash[0].levelno == logging.ERROR
    assert crash[0].exc_info and "session table corrupt" in str(crash[0].exc_info[1])
    assert events[-1] == "store closed"  # resources still closed in order
    assert any(m.startswith("STOPPING=1\nSTATUS=crashed") for m in notify.drain())


async def test_start_up_failure_exits_nonzero_without_ready(workdir, notify, caplog):
    clock = SimClock()
    events: list[str] = []
    config = make_config(workdir)
    open(config.control_socket, "w").close()  # something that is not our socket
    parts, _ = make_parts(workdir, clock, events)
    code = await run_agent(config, clock, parts=parts, notifier=notify.notifier(), handle_signals=False)
    assert code == 1
    assert not any(m.startswith("READY=1") for m in notify.drain())
    assert events[-1] == "store closed"
    assert any("start-up failed" in r.getMessage() and "is not a socket" in r.getMessage() for r in caplog.records)


async def test_uplink_hook_runs_its_loop_and_adds_a_control_route(workdir, notify):
    clock = SimClock()
    events: list[str] = []
    running = asyncio.Event()

    class Uplink:
        async def run(self):
            running.set()
            await asyncio.Event().wait()  # forever, until cancelled

    @contextlib.asynccontextmanager
    async def open_uplink(rt):
        async def authorize(request):
            return {"accepted": True}

        rt.control.add_route("POST", "/authorize", authorize)
        rt.control.add_status_section("uplink", lambda: {"connected": False})
        events.append("uplink opened")
        yield Uplink()
        events.append("uplink closed")

    parts, _ = make_parts(workdir, clock, events, open_uplink=open_uplink)
    stop = asyncio.Event()
    config = make_config(workdir)
    task, rt = await start(config, clock, parts, notify.notifier(), stop=stop, handle_signals=False)
    await running.wait()
    client = ControlClient(config.control_socket)
    assert await client.post("/authorize", {"id_tag": "X"}) == {"accepted": True}
    assert (await client.status())["uplink"] == {"connected": False}
    stop.set()
    assert await task == 0
    assert events.index("uplink closed") < events.index("sessions closed") < events.index("store closed")


async def test_a_loop_that_returns_on_its_own_is_a_crash(workdir, notify, caplog):
    class Uplink:
        async def run(self):
            return None

    @contextlib.asynccontextmanager
    async def open_uplink(rt):
        yield Uplink()

    clock = SimClock()
    parts, _ = make_parts(workdir, clock, [], open_uplink=open_uplink)
    code = await run_agent(make_config(workdir), clock, parts=parts, notifier=notify.notifier(), handle_signals=False)
    assert code == 1
    assert any("uplink ended unexpectedly" in r.getMessage() for r in caplog.records)


def test_stuck_limit_leaves_room_for_slow_ticks():
    assert supervisor.stuck_limit(1.0) == 21.0
    assert supervisor.stuck_limit(60.0) == 180.0


# ---------------------------------------------------------------- a real `evsite run` process

SITE_TOML = """
[site]
name = "e2e site"
poll_interval = 0.2
state_dir = "{dir}/state"

[uplink]
enabled = false

[limits]
fuse_amps = 32

[control]
socket = "{dir}/control.sock"

[[buses]]
id = "lan"
type = "tcp"
host = "127.0.0.1"
port = {port}

[[buses]]
id = "rs485"
type = "rtu"
port = "{dir}/ttyEVSE"
baudrate = 19200
parity = "E"

[[devices]]
id = "grid"
role = "grid_meter"
profile = "sunspec-203"
bus = "lan"
unit_id = 1

[[devices]]
id = "cp1"
role = "charger"
profile = "heidelberg-ec"
bus = "rs485"
unit_id = 1
connector_id = 1
fixed_current = 10
max_current = 16
free_charging_tag = "FREE"        # the session starts at plug-in: energy may flow
"""


@pytest.mark.e2e
async def test_evsite_run_against_emulated_devices_then_sigterm(workdir):
    """The production entry point as a process: real Modbus servers (TCP loopback and an
    RTU pty), READY over a real notify socket, status over the control socket, SIGTERM
    mid-run, exit 0 within 5 s with the shutdown logged."""
    from pathlib import Path

    from hil.emulator import RegisterImage, serve_rtu_pty, serve_tcp

    meter, charger = RegisterImage("sunspec-203", unit_id=1), RegisterImage("heidelberg-ec", unit_id=1)
    for q, v in (("current_l1", 12.0), ("current_l2", 11.0), ("current_l3", 10.0), ("voltage_l1", 230.0)):
        meter.set(q, v)
    charger.set("state", "C")
    written = asyncio.Event()
    charger.on_write(lambda q, v: written.set() if q == "current" and v == 10.0 else None)
    notify_path = os.path.join(workdir, "notify")
    nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    nsock.bind(notify_path)
    nsock.setblocking(False)
    loop = asyncio.get_running_loop()
    async with await serve_tcp("127.0.0.1", 0, [meter]) as tcp, \
            await serve_rtu_pty([charger], os.path.join(workdir, "ttyEVSE"), baudrate=19200, parity="E"):
        cfg = Path(workdir) / "site.toml"
        cfg.write_text(SITE_TOML.format(dir=workdir, port=tcp.port))
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID")}
        env.update(NOTIFY_SOCKET=notify_path, PYTHONUNBUFFERED="1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.cli", "run", "--config", str(cfg),
            cwd=str(Path(__file__).resolve().parents[2]), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output = asyncio.create_task(proc.stdout.read())
        try:
            async with asyncio.timeout(20):
                msg = ""
                while not msg.startswith("READY=1"):
                    msg = (await loop.sock_recv(nsock, 4096)).decode()
                await written.wait()  # the fixed current reached the charger over RTU
                client = ControlClient(os.path.join(workdir, "control.sock"))
                status = await client.status()
                # READY and the write came after a tick in which the charger answered;
                # the grid meter may need one more tick (SunSpec discovery), and the agent
                # records the setpoint only once the charger's write response is back
                while any(d["stale"] for d in status["devices"]) or status["connectors"][0]["setpoint"] is None:
                    assert proc.returncode is None, "agent exited"
                    status = await client.status()
            devs = {d["id"]: d for d in status["devices"]}
            assert devs["grid"]["error"] is None and devs["cp1"]["error"] is None
            assert status["site"]["grid"]["current"] == [12.0, 11.0, 10.0]
            [con] = status["connectors"]
            assert con["state"] == "C" and con["setpoint"]["amps"] == 10.0
            [session] = status["sessions"]["connectors"]
            assert session["tx_id"] is not None and session["status"] == "Charging"
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                code = await proc.wait()
            took = time.monotonic() - t0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            text = (await output).decode()
            nsock.close()
    assert code == 0, text
    assert took < 5.0
    assert "stopping: SIGTERM" in text and "stopped cleanly in" in text
    assert "Traceback" not in text and "ERROR" not in text
    assert not os.path.exists(os.path.join(workdir, "control.sock"))


# ---------------------------------------------------------------- evsite run: config errors

def test_run_with_an_invalid_config_prints_every_error_and_exits_2(workdir, capsys):
    import argparse
    from pathlib import Path

    from agent import cli_run

    cfg = Path(workdir) / "site.toml"
    cfg.write_text('[site]\npoll_interval = 0\n\n[limits]\nfuse_amps = 32\n\n[bogus]\nx = 1\n')
    assert cli_run.run(argparse.Namespace(config=str(cfg), log_level=None)) == 2
    err = capsys.readouterr().err
    assert f"{cfg}:2: site.poll_interval" in err
    assert "bogus" in err
    assert err.strip().endswith("not starting")
    assert cli_run.run(argparse.Namespace(config=str(cfg) + ".missing", log_level=None)) == 2
    assert "cannot read" in capsys.readouterr().err


def test_cli_lists_the_runtime_commands():
    from agent.cli import build_parser

    text = build_parser().format_help()
    assert all(cmd in text for cmd in ("run", "status", "profiles"))
