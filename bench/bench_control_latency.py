"""Control latency: a grid-meter step in the emulator -> every charger's new setpoint
written (acknowledged by the emulated charger), for 1, 10 and 50 chargers on Modbus TCP.

The parent process runs the emulated site (hil.rig.Rig in real time): a grid meter and
N ABB Terra AC wallboxes, each device on its own loopback port as N TCP devices on a
LAN would be, an EV charging at every charger. The fuse is set so the chargers share
the headroom: with the low base load each gets 12 A, with the high one 10 A. The
controller runs in a child process, polling every ``POLL`` s, and the parent steps the
base load between the two levels, at a random moment of the poll cycle, ``STEPS`` times:

- evsite: the agent's real drivers, Poller and EnergyController (as ``evsite run`` wires
  them, without sessions), tuned with no minimum interval between two changes of a
  charger (the default 10 s spaces out *raises* on purpose; here every step would wait
  for it, and that is policy, not latency);
- floor: a bare pymodbus loop, one client per device, polling the grid meter's and the
  chargers' current registers at the same interval and writing the same setpoint
  registers when the share moved by 1 A or more (the same hysteresis), decoding with
  pymodbus's own converters.

A step's latency runs from the moment the parent changed the base load in the emulator to
the last setpoint write it caused (every charger written once, then a quiet 2 cycles),
timed by the emulator's own write callbacks. It includes waiting for the next poll
(0..POLL s); the "reaction" figures start instead at the controller's first read of the
grid meter after the step (the server's request log), which leaves the controller's
own work: reads, allocation, writes.

Prints one JSON line per figure (bench/report.py), lower is better.
Run: ``.venv/bin/python -m bench.bench_control_latency`` (BENCH_QUICK=1: 1 and 10
chargers, fewer steps).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUICK = os.environ.get("BENCH_QUICK") == "1"
SIZES = (1, 10) if QUICK else (1, 10, 50)
STEPS = 15 if QUICK else 60
#: the controllers' poll interval (s)
POLL = 0.2
#: no setpoint write for this long after every charger was written: the step is done
QUIET = 2 * POLL
BASE_LO = 4.0
GRID_UNIT = 100
CHARGER = "abb-terra-ac"
METER = "eastron-sdm630"
EV_MAX = 16.0


def levels(n: int) -> tuple[float, float, float]:
    """(fuse, low base load, high base load): 12 A each at the low, 10 A at the high."""
    return BASE_LO + 12.0 * n, BASE_LO, BASE_LO + 2.0 * n


def site_text(n: int, ports: list[int], state_dir: str) -> str:
    """N chargers and the grid meter, each on its own TCP bus (``ports``: meter first)."""
    fuse, _, _ = levels(n)
    parts = [f'[site]\nstate_dir = "{state_dir}"\npoll_interval = {POLL}\n[uplink]\nenabled = false\n'
             f'[limits]\nfuse_amps = {fuse}\n',
             f'[[buses]]\nid = "meter"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {ports[0]}\ntimeout = 1\n',
             f'[[devices]]\nid = "grid"\nrole = "grid_meter"\nprofile = "{METER}"\nbus = "meter"\nunit_id = {GRID_UNIT}\n']
    for i in range(1, n + 1):
        parts.append(f'[[buses]]\nid = "b{i}"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {ports[i]}\ntimeout = 1\n')
        parts.append(f'[[devices]]\nid = "c{i}"\nrole = "charger"\nprofile = "{CHARGER}"\nbus = "b{i}"\nunit_id = 1\n'
                     f'connector_id = {i}\nmax_current = {EV_MAX}\n')
    return "\n".join(parts)


# ---- child: one controller ------------------------------------------------------------------
async def until_stdin_closes() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def control_evsite(config_path: str) -> None:
    from agent.clock import SystemClock
    from agent.config.load import load_config
    from agent.energy.controller import EnergyController
    from agent.energy.model import Policy
    from agent.site import devices as site_devices
    from agent.site.poller import Poller

    clock = SystemClock()
    config = load_config(config_path)
    async with AsyncExitStack() as stack:
        slots = await site_devices.open_devices(config, clock, stack)
        energy = EnergyController(config, clock, tuning=Policy(min_interval=0.0))
        poller = Poller(slots, clock=clock, interval=config.site.poll_interval, setpoints=energy.policy)
        stop = asyncio.Event()
        loop = asyncio.create_task(poller.run(stop))
        await until_stdin_closes()
        stop.set()
        await loop


async def control_bare(config_path: str) -> None:
    from pymodbus.client import AsyncModbusTcpClient

    from agent.config.load import load_config
    from drivers.profile import load_profile

    config = load_config(config_path)
    meter, charger = load_profile(METER), load_profile(CHARGER)
    m_cur, c_cur, c_set = meter.reads["current_l1"], charger.reads["current_l1"], charger.writes["current"]
    ports = {b.id: int(b.port) for b in config.buses}
    grid = AsyncModbusTcpClient("127.0.0.1", port=ports["meter"], timeout=1)
    chargers = [AsyncModbusTcpClient("127.0.0.1", port=ports[f"b{i}"], timeout=1) for i in range(1, len(ports))]
    clients = [grid, *chargers]
    await asyncio.gather(*(c.connect() for c in clients))
    fuse = float(config.limits.fuse_amps)  # type: ignore[arg-type]
    f32, u32 = grid.DATATYPE.FLOAT32, grid.DATATYPE.UINT32

    async def grid_amps() -> list[float]:
        rr = await grid.read_input_registers(m_cur.address, count=6, device_id=GRID_UNIT)
        return [float(grid.convert_from_registers(rr.registers[i:i + 2], f32)) for i in (0, 2, 4)]

    async def ev_amps(c: AsyncModbusTcpClient) -> list[float]:
        rr = await c.read_holding_registers(c_cur.address, count=6, device_id=1)
        return [c.convert_from_registers(rr.registers[i:i + 2], u32) * c_cur.scale for i in (0, 2, 4)]  # type: ignore[operator]

    async def write(c: AsyncModbusTcpClient, amps: float) -> None:
        regs = c.convert_to_registers(int(round(amps / c_set.scale)), u32)
        await c.write_registers(c_set.address, regs, device_id=1)

    last: float | None = None
    done = asyncio.create_task(until_stdin_closes())
    next_at = time.monotonic()
    try:
        while not done.done():
            g, evs = await asyncio.gather(grid_amps(), asyncio.gather(*(ev_amps(c) for c in chargers)))
            other = max(g[p] - sum(e[p] for e in evs) for p in range(3))
            share = min(EV_MAX, int((fuse - other) / len(chargers) * 10 + 1e-6) / 10)
            if last is None or abs(share - last) >= 1.0:
                await asyncio.gather(*(write(c, share) for c in chargers))
                last = share
            next_at += POLL
            await asyncio.wait({done}, timeout=max(0.0, next_at - time.monotonic()))
    finally:
        for c in clients:
            c.close()


# ---- parent: the emulated site and the steps --------------------------------------------------
class Site:
    """The emulated site and what its chargers were written, as the emulator saw it."""

    def __init__(self, n: int, workdir: str) -> None:
        from agent.config.load import load_config_text
        from hil.rig import Rig

        self.n = n
        placeholder = [1502 + i for i in range(n + 1)]
        self.config = load_config_text(site_text(n, placeholder, workdir), "bench.toml", base_dir=workdir)
        for bus in self.config.buses:
            bus.port = 0                      # any free port; read back after start
        self.rig = Rig(self.config)
        self.workdir = workdir
        self.writes: list[tuple[float, str]] = []
        self.base = 0.0
        self.written = asyncio.Event()

    async def start(self) -> str:
        from hil.model import Ev

        await self.rig.start()
        for cid, c in self.rig.site.chargers.items():
            c.image.on_write(lambda quantity, value, cid=cid: self._on_write(cid, quantity))
            ev = Ev(capacity_kwh=1000, soc=0.1, max_current=EV_MAX, ramp_delay=0.0)   # never full here
            self.rig.charger(cid).plug(ev, self.rig.site.model.now)
        self.set_base(levels(self.n)[1])
        ports = [self.rig.servers["meter"].port] + [self.rig.servers[f"b{i}"].port for i in range(1, self.n + 1)]
        path = Path(self.workdir) / "site.toml"
        path.write_text(site_text(self.n, ports, self.workdir))
        return str(path)

    def _on_write(self, cid: str, quantity: str) -> None:
        if quantity == "current":
            self.writes.append((time.monotonic(), cid))
            self.written.set()
            self.written = asyncio.Event()

    def set_base(self, amps: float) -> float:
        """Step the base load (every phase); returns when, on the monotonic clock."""
        self.base = amps
        self.rig.site.advance()
        self.rig.site.model.grid.set_base(amps)
        self.rig.site.publish()
        return time.monotonic()

    async def settled(self, since: float, timeout: float = 30.0) -> float:
        """Time of the last setpoint write after ``since``, once every charger was written
        after it and then nothing for ``QUIET`` s."""
        async with asyncio.timeout(timeout):
            while True:
                after = [(t, c) for t, c in self.writes if t >= since]
                if len({c for _, c in after}) == self.n and time.monotonic() - after[-1][0] >= QUIET:
                    return after[-1][0]
                event = self.written
                wait = QUIET - (time.monotonic() - after[-1][0]) if after else timeout
                try:
                    await asyncio.wait_for(event.wait(), max(0.01, wait))
                except TimeoutError:
                    pass

    async def stop(self) -> None:
        await self.rig.stop()


def first_grid_read(site: Site, t: float) -> float | None:
    return next((r.at for r in site.rig.servers["meter"].requests if r.at >= t and r.unit_id == GRID_UNIT), None)


async def measure(site: Site, config_path: str, kind: str, rnd: random.Random) -> dict[str, list[float]]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.bench_control_latency", "control", kind,
                                                config_path, stdin=asyncio.subprocess.PIPE)
    latency, reaction = [], []
    try:
        _, lo, hi = levels(site.n)
        await site.settled(time.monotonic(), timeout=60)          # first setpoints: not measured
        for _ in range(STEPS):
            await asyncio.sleep(rnd.uniform(0, POLL))             # a random moment of the poll cycle
            stepped = site.set_base(lo if site.base == hi else hi)
            done = await site.settled(stepped)
            latency.append(done - stepped)
            read = first_grid_read(site, stepped)
            if read is not None and read <= done:
                reaction.append(done - read)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        await proc.wait()
    return {"latency": latency, "reaction": reaction}


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


async def run_size(n: int, rnd: random.Random) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as workdir:
        site = Site(n, workdir)
        path = await site.start()
        try:
            ours = await measure(site, path, "evsite", rnd)
            bare = await measure(site, path, "bare", rnd)
        finally:
            await site.stop()
    out = []
    note = (f"poll {POLL:g} s, {STEPS} base-load steps; floor: bare pymodbus loop polling and writing the same "
            f"registers at the same interval")
    for key, label in (("latency", "control latency"), ("reaction", "reaction from the grid read")):
        for name, fn in (("p50", statistics.median), ("p99", p99)):
            out.append({"figure": f"{label} {name}, {n} charger{'s' if n > 1 else ''} (Modbus TCP)",
                        "value": round(fn(ours[key]) * 1000, 2), "floor": round(fn(bare[key]) * 1000, 2),
                        "unit": "ms", "higher_is_better": False, "note": note})
    return out


async def main() -> None:
    rnd = random.Random(4)
    for n in SIZES:
        for figure in await run_size(n, rnd):
            print(json.dumps(figure), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "control":
        asyncio.run(control_evsite(sys.argv[3]) if sys.argv[2] == "evsite" else control_bare(sys.argv[3]))
    else:
        asyncio.run(main())
