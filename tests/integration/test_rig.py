"""The rig end to end, in process: a site with a TCP bus and an RS-485 bus on a pty,
read and driven through the real drivers while a scenario plays on a simulated clock.

The rig's physics runs on a SimClock (exact and instant); the Modbus traffic is real
(sockets, a pty, pymodbus on both sides), with the drivers on the system clock.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from agent.clock import ScaledClock, SimClock, SystemClock
from agent.config.load import load_config_text
from drivers.contract import CpState, DeviceTimeout, Setpoint
from drivers.registry import build_bus, build_device
from hil.rig import Rig, RigError
from hil.scenario import parse_scenario

ROOT = Path(__file__).resolve().parents[2]

SITE = """
[site]
name = "rig test"
state_dir = "state"

[uplink]
enabled = false

[limits]
fuse_amps = 63

[[buses]]
id = "lan"
type = "tcp"
host = "127.0.0.1"
port = 1502                  # replaced by a free port once the rig listens

[[buses]]
id = "rs485"
type = "rtu"
port = "dev/ttyRS485"
baudrate = 19200
parity = "E"

[[devices]]
id = "grid"
role = "grid_meter"
profile = "eastron-sdm630"
bus = "lan"
unit_id = 2

[[devices]]
id = "terra"
role = "charger"
profile = "abb-terra-ac"
bus = "lan"
unit_id = 1
connector_id = 1
max_current = 16

[[devices]]
id = "heidelberg"
role = "charger"
profile = "heidelberg-ec"
bus = "rs485"
unit_id = 1
connector_id = 2
phases = 1
wiring = ["L2"]
max_current = 16
failsafe_current = 6
failsafe_timeout = 60
"""

SCENARIO = """
[scenario]
name = "rig-test"
base_load = [4, 3, 2]

[[events]]
at = 1
action = "plug"
device = "terra"
ev = { capacity_kwh = 60, soc = 0.3, max_current = 16, phases = 3, ramp_delay = 2, rfid = "CAFE01" }

[[events]]
at = 1
action = "plug"
device = "heidelberg"
ev = { capacity_kwh = 30, soc = 0.5, max_current = 16, phases = 1, ramp_delay = 2 }

[[events]]
at = 2000
action = "silent"
device = "grid"

[[events]]
at = 2010
action = "back"
device = "grid"
"""


def site_config(tmp_path: Path):
    cfg = load_config_text(SITE, "site.toml", base_dir=tmp_path)
    cfg.bus("lan").port = 0           # any free port; the tests read back the real one
    return cfg


class Drivers:
    """The real drivers of the site, built by the registry as the agent builds them."""

    def __init__(self, cfg, stack: AsyncExitStack) -> None:
        self.clock = SystemClock()
        self.buses = {b.id: build_bus(b, self.clock) for b in cfg.buses}
        for b in self.buses.values():
            stack.push_async_callback(b.close)
        self.devices = {}
        for d in cfg.devices:
            dev = self.devices[d.id] = build_device(d, self.buses[d.bus], self.clock)
            stack.push_async_callback(dev.close)

    def __getitem__(self, device_id: str):
        return self.devices[device_id]

    async def start(self) -> None:
        for d in self.devices.values():
            await d.start()


async def started_rig(tmp_path: Path, stack: AsyncExitStack, scenario: str = SCENARIO, **kw):
    cfg = site_config(tmp_path)
    clock = SimClock()
    rig = Rig(cfg, parse_scenario(scenario, "rig-test.toml"), clock, tick=1.0, **kw)
    await rig.start()
    stack.push_async_callback(rig.stop)
    cfg.bus("lan").port = rig.servers["lan"].port
    drivers = Drivers(cfg, stack)
    await drivers.start()
    return rig, clock, drivers


async def test_plug_setpoint_current_and_energy_seen_on_chargers_and_grid(tmp_path):
    async with AsyncExitStack() as stack:
        rig, clock, dev = await started_rig(tmp_path, stack)
        assert os.path.islink(tmp_path / "dev" / "ttyRS485")
        # the driver's start wrote the Heidelberg's watchdog and failsafe current into the model
        hb = rig.charger("heidelberg")
        assert hb.failsafe_timeout == 60 and hb.failsafe_current == 6.0

        assert (await dev["terra"].read()).state is CpState.A
        await clock.advance(1.0)                       # both EVs plug in
        assert [e.action for _, e in rig.applied] == ["plug", "plug"]
        terra = await dev["terra"].read()
        assert terra.state is CpState.B and terra.current == (0.0, 0.0, 0.0)   # no setpoint yet

        await dev["terra"].apply(Setpoint(16))
        await dev["heidelberg"].apply(Setpoint(10, phases=1))
        assert rig.charger("terra").setpoint == 16 and rig.charger("heidelberg").setpoint == 10
        assert (await dev["terra"].read()).state is CpState.C   # EV asks, not drawing yet
        await clock.advance(2.0)                       # ramp delay over
        terra = await dev["terra"].read()
        heidel = await dev["heidelberg"].read()
        grid = await dev["grid"].read()
        assert terra.current == pytest.approx((16, 16, 16), abs=0.01)
        assert heidel.state is CpState.C and heidel.current[0] == pytest.approx(10, abs=0.1)
        # grid = base + terra on every phase + the 1-phase Heidelberg on L2 only
        assert grid.current == pytest.approx((4 + 16, 3 + 16 + 10, 2 + 16), abs=0.01)
        assert grid.power_total == pytest.approx(rig.meter("grid").power_total, rel=1e-4)

        e0_terra = terra.energy_wh
        e0_heidel = heidel.energy_wh
        e0_grid = grid.energy_import_wh
        await clock.advance(600.0)
        terra = await dev["terra"].read()
        heidel = await dev["heidelberg"].read()
        grid = await dev["grid"].read()
        v = rig.charger("terra").voltages[0]
        # session energy on the Terra (Wh register): 10 minutes of 3 x 16 A
        assert terra.energy_wh - e0_terra == pytest.approx(3 * 16 * v * 600 / 3600, abs=2)
        assert terra.energy_wh == pytest.approx(rig.energy_register("terra"), abs=1)
        # nobody rewrote the Heidelberg's setpoint: after its 60 s watchdog it ran at 6 A
        vh = rig.charger("heidelberg").voltages[0]
        assert heidel.energy_wh - e0_heidel == pytest.approx(vh * (10 * 60 + 6 * 540) / 3600, abs=2)
        grid_delta = grid.energy_import_wh - e0_grid
        chargers_delta = (terra.energy_wh - e0_terra) + (heidel.energy_wh - e0_heidel)
        assert grid_delta > chargers_delta + 9 * 220 * 600 / 3600 * 0.9   # plus the base load
        assert rig.ev("terra").soc > 0.3


async def test_silent_controller_drops_heidelberg_to_failsafe_and_a_write_restores_it(tmp_path):
    async with AsyncExitStack() as stack:
        rig, clock, dev = await started_rig(tmp_path, stack)
        await clock.advance(1.0)
        await dev["heidelberg"].apply(Setpoint(12, phases=1))
        await clock.advance(30.0)
        assert (await dev["heidelberg"].read()).current[0] == pytest.approx(12, abs=0.1)
        await clock.advance(30.0)                      # 60 s without a write: watchdog fires
        reading = await dev["heidelberg"].read()
        assert reading.current[0] == pytest.approx(6, abs=0.1)
        assert rig.charger("heidelberg").silent()
        await dev["heidelberg"].apply(Setpoint(12, phases=1))
        await clock.advance(1.0)
        assert (await dev["heidelberg"].read()).current[0] == pytest.approx(12, abs=0.1)


async def test_scenario_faults_reach_the_driver_and_clear(tmp_path):
    async with AsyncExitStack() as stack:
        rig, clock, dev = await started_rig(tmp_path, stack)
        rig.config.bus("lan").timeout = 0.2
        dev.buses["lan"].timeout = 0.2
        dev.buses["lan"].retries = 0
        await clock.advance(2000.0)
        assert rig.applied[-1][1].action == "silent"
        with pytest.raises(DeviceTimeout):
            await dev["grid"].read()
        assert (await dev["terra"].read()).state is CpState.B      # same server, other unit: fine
        await clock.advance(10.0)
        assert rig.finished.is_set()
        assert (await dev["grid"].read()).voltage[0] > 200


async def test_rig_stops_cleanly_and_removes_its_pty_link(tmp_path):
    cfg = site_config(tmp_path)
    rig = Rig(cfg, None, SimClock())
    await rig.start()
    port = rig.servers["lan"].port
    assert rig.finished.is_set()                       # no scenario: nothing to wait for
    await rig.stop()
    await rig.stop()                                   # idempotent
    assert not os.path.lexists(tmp_path / "dev" / "ttyRS485")
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_rig_leaves_real_hardware_alone_and_refuses_to_replace_files(tmp_path):
    cfg = site_config(tmp_path)
    cfg.bus("lan").host, cfg.bus("lan").port = "192.0.2.10", 502     # a real device on the bench
    async with Rig(cfg, None, SimClock()) as rig:
        assert rig.real_buses == {"lan": "192.0.2.10:502"}
        assert set(rig.servers) == {"rs485"}
        assert set(rig.site.devices) == {"heidelberg"}
    event = '[[events]]\nat = 1\naction = "silent"\ndevice = "grid"\n'
    with pytest.raises(RigError, match="event 1: device: grid is real hardware .*only silent an emulated"):
        Rig(cfg, parse_scenario(event, "s.toml"), SimClock())

    cfg = site_config(tmp_path)
    link = tmp_path / "dev" / "ttyRS485"
    link.parent.mkdir(exist_ok=True)
    link.symlink_to("/dev/null")                       # a character device that is not a pty
    async with Rig(cfg, None, SimClock()) as rig:
        assert "rs485" in rig.real_buses and "rs485" not in rig.servers
    assert os.readlink(link) == "/dev/null"            # untouched

    link.unlink()
    link.write_text("a file")
    with pytest.raises(RigError, match="exists and is neither a serial device nor a link the rig made"):
        await Rig(site_config(tmp_path), None, SimClock()).start()
    assert link.read_text() == "a file"


async def test_rig_refuses_scenarios_and_arguments_that_do_not_fit(tmp_path):
    bad = parse_scenario('[[events]]\nat = 1\naction = "unplug"\ndevice = "grid"\n'
                         '[[events]]\nat = 0\naction = "plug"\ndevice = "grid"\n', "bad.toml")
    with pytest.raises(RigError, match="grid is a grid_meter; only a charger takes an EV"):
        Rig(site_config(tmp_path), bad, SimClock())
    with pytest.raises(RigError, match="a clock or a speed"):
        Rig(site_config(tmp_path), None, SimClock(), 10)
    with pytest.raises(RigError, match="speed must be > 0"):
        Rig(site_config(tmp_path), None, None, 0)


async def test_port_in_use_is_a_clear_error(tmp_path):
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    try:
        cfg = site_config(tmp_path)
        cfg.bus("lan").port = blocker.sockets[0].getsockname()[1]
        with pytest.raises(RigError, match="bus lan: cannot listen on 127.0.0.1:"):
            await Rig(cfg, None, SimClock()).start()
    finally:
        blocker.close()
        await blocker.wait_closed()


async def test_scaled_clock_runs_the_site_faster_than_real_time(tmp_path):
    scenario = parse_scenario(textwrap.dedent("""
        [[events]]
        at = 2
        action = "plug"
        device = "terra"
        ev = { ramp_delay = 0 }
        """), "fast.toml")
    seen: list[float] = []
    rig = Rig(site_config(tmp_path), scenario, speed=50, tick=0.5, on_event=lambda at, e: seen.append(at))
    assert isinstance(rig.clock, ScaledClock)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with rig:
        await asyncio.wait_for(rig.finished.wait(), 5)
    assert loop.time() - t0 < 1.0                      # 2 s of site time in ~40 ms
    assert seen and seen[0] >= 2.0
    assert rig.charger("terra").state == "B"


# -- evsite hil -------------------------------------------------------------------------------

def write_site(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(SITE.replace("port = 1502", f"port = {port}"))
    return path


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def evsite(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agent.cli", "hil", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_evsite_hil_runs_a_scenario_until_sigterm(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO)
    proc = evsite(str(scenario), "--config", str(write_site(tmp_path, free_port())),
                  "--speed", "20", "--summary", "1")
    try:
        lines = []
        for line in proc.stdout:                       # type: ignore[union-attr]
            lines.append(line)
            if "plug" in line and "heidelberg" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(lines) + out
    assert proc.returncode == 0, err
    assert "plug ev into terra" in text and "plug ev into heidelberg" in text
    assert "stopped" in text
    assert not os.path.lexists(tmp_path / "dev" / "ttyRS485")


def demo_site(tmp_path: Path) -> Path:
    """config/demo.toml on a free port, with its pty and state under tmp_path."""
    text = (ROOT / "config" / "demo.toml").read_text()
    text = text.replace("port = 15020", f"port = {free_port()}").replace("../run/demo", str(tmp_path))
    path = tmp_path / "demo.toml"
    path.write_text(text)
    return path


def test_evsite_hil_duration_prints_summaries(tmp_path):
    proc = evsite("short", "--config", str(demo_site(tmp_path)), "--speed", "20",
                  "--duration", "10", "--summary", "2")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "unplug terra" in out and "fault grid: nan on power" in out
    summaries = [line for line in out.splitlines() if line.startswith("t=")]
    assert len(summaries) >= 3 and "terra" in summaries[-1] and "grid" in summaries[-1]


@pytest.mark.parametrize("args, message", [
    (["nope", "--config", "config/demo.toml"], "no such scenario file"),
    (["demo", "--config", "missing.toml"], "cannot read missing.toml"),
    (["rig", "--config", "config/demo.toml"], "no device 'evcc' in the site config"),
    (["demo", "--config", "config/demo.toml", "--speed", "0"], "--speed must be > 0"),
])
def test_evsite_hil_bad_input_is_a_clear_error_not_a_traceback(args, message):
    proc = evsite(*args)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert message in err and "Traceback" not in err


def test_evsite_hil_bad_scenario_names_file_event_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[events]]\nat = 1\naction = "plug"\ndevice = "terra"\nev = { soc = 2 }\n')
    proc = evsite(str(bad), "--config", str(ROOT / "config" / "demo.toml"))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert f"{bad}:1: event 1: ev.soc: must be between 0 and 1" in err and "Traceback" not in err


async def test_a_crashing_event_is_reported_and_stop_still_closes_everything(tmp_path):
    rig = Rig(site_config(tmp_path), parse_scenario('[[events]]\nat = 1\naction = "silent"\ndevice = "grid"\n'),
              SimClock())

    def boom(at, event):
        raise RuntimeError("observer failed")

    rig.on_event = boom
    await rig.start()
    await rig.clock.advance(1.0)                      # type: ignore[attr-defined]
    assert rig.crashed.is_set() and "observer failed" in repr(rig.error)
    await rig.stop()
    assert not rig.servers and not os.path.lexists(tmp_path / "dev" / "ttyRS485")
