"""Polling N emulated Modbus TCP meters at 1 Hz: evsite's poller against a bare loop.

For N = 10, 50, 200 (10, 50 with BENCH_QUICK=1): one process serves N Eastron SDM630
emulators, each on its own loopback port (as N TCP devices on a LAN would be). Then,
each in a fresh process so CPU and peak RSS are its own:

- evsite: the real drivers and poller (profile decode, staleness, SiteState snapshot)
  for a site config with the N meters, one tick per second;
- floor: a bare pymodbus loop, one client per device, reading the same register blocks
  concurrently once per second and decoding nothing.

Printed per N: poll cycle p50 and p99 (ms), CPU % of one core, peak RSS (MiB).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack

QUICK = os.environ.get("BENCH_QUICK") == "1"
SIZES = (10, 50) if QUICK else (10, 50, 200)
SECONDS = 6 if QUICK else 20
PROFILE = "eastron-sdm630"


def site_text(ports: list[int], state_dir: str) -> str:
    parts = [f'[site]\nstate_dir = "{state_dir}"\npoll_interval = 1.0\n[uplink]\nenabled = false\n[limits]\nfuse_amps = 63\n']
    for i, port in enumerate(ports):
        parts.append(f'[[buses]]\nid = "b{i}"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n')
        parts.append(f'[[devices]]\nid = "m{i}"\nrole = "sub_meter"\nprofile = "{PROFILE}"\nbus = "b{i}"\nunit_id = 1\n')
    return "\n".join(parts)


# ---- child: the emulators ------------------------------------------------------------------
async def emulate(n: int) -> None:
    from hil.emulator import RegisterImage, serve_tcp

    handles = []
    for _ in range(n):
        img = RegisterImage(PROFILE, unit_id=1)
        for q, v in (("voltage_l1", 230.0), ("current_l1", 10.0), ("energy_import", 1234.5)):
            if img.has(q):
                img.set(q, v)
        handles.append(await serve_tcp("127.0.0.1", 0, [img]))
    print(json.dumps([h.port for h in handles]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)   # until the parent closes stdin


# ---- child: one measurement ----------------------------------------------------------------
def usage() -> tuple[float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss


async def measure_evsite(ports: list[int]) -> list[float]:
    from agent.clock import SystemClock
    from agent.config.load import load_config_text
    from agent.site import devices as site_devices
    from agent.site.poller import Poller

    clock = SystemClock()
    with tempfile.TemporaryDirectory() as d:
        config = load_config_text(site_text(ports, d), "bench.toml", base_dir=d)
        async with AsyncExitStack() as stack:
            slots = await site_devices.open_devices(config, clock, stack)
            poller = Poller(slots, clock=clock, interval=1.0)
            await poller.tick()            # connect and plan once, not measured
            return await at_1hz(poller.tick)


async def measure_bare(ports: list[int]) -> list[float]:
    from pymodbus.client import AsyncModbusTcpClient

    from drivers.modbus.blocks import Item, plan
    from drivers.profile import load_profile

    profile = load_profile(PROFILE)
    blocks = plan([Item(q, s.register, s.address, s.words) for q, s in profile.reads.items()],
                  profile.max_read, profile.read_gap)
    clients = [AsyncModbusTcpClient("127.0.0.1", port=p, timeout=1) for p in ports]
    await asyncio.gather(*(c.connect() for c in clients))

    async def one(c: AsyncModbusTcpClient) -> None:
        for b in blocks:
            fn = c.read_input_registers if b.table == "input" else c.read_holding_registers
            await fn(b.start, count=b.count, device_id=1)

    async def cycle() -> None:
        await asyncio.gather(*(one(c) for c in clients))

    try:
        await cycle()
        return await at_1hz(cycle)
    finally:
        for c in clients:
            c.close()


async def at_1hz(cycle) -> list[float]:
    times = []
    end = time.monotonic() + SECONDS
    while time.monotonic() < end:
        t0 = time.monotonic()
        await cycle()
        dt = time.monotonic() - t0
        times.append(dt)
        await asyncio.sleep(max(0.0, 1.0 - dt))
    return times


def child_measure(kind: str, ports: list[int]) -> None:
    cpu0, _ = usage()
    wall0 = time.monotonic()
    times = asyncio.run(measure_evsite(ports) if kind == "evsite" else measure_bare(ports))
    cpu1, rss = usage()
    wall = time.monotonic() - wall0
    q = statistics.quantiles(times, n=100) if len(times) > 1 else [times[0]] * 99
    print(json.dumps({"p50_ms": statistics.median(times) * 1000, "p99_ms": q[98] * 1000,
                      "cpu_pct": (cpu1 - cpu0) / wall * 100, "rss_mib": rss / 1024}), flush=True)


# ---- parent ----------------------------------------------------------------------------------
def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.bench_poll", *args], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"bench_poll child {args[:2]} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    for n in SIZES:
        emu = subprocess.Popen([sys.executable, "-m", "bench.bench_poll", "emulate", str(n)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            ports = json.loads(emu.stdout.readline())
            ours = run_child("measure", "evsite", json.dumps(ports))
            bare = run_child("measure", "bare", json.dumps(ports))
        finally:
            emu.stdin.close()
            emu.wait(timeout=10)
        for key, label, unit in (("p50_ms", "poll cycle p50", "ms"), ("p99_ms", "poll cycle p99", "ms"),
                                 ("cpu_pct", "CPU of one core", "%"), ("rss_mib", "peak RSS", "MiB")):
            print(json.dumps({"figure": f"{label}, {n} TCP meters at 1 Hz", "value": round(ours[key], 2),
                              "floor": round(bare[key], 2), "unit": unit, "higher_is_better": False}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "emulate":
        asyncio.run(emulate(int(sys.argv[2])))
    elif len(sys.argv) > 1 and sys.argv[1] == "measure":
        child_measure(sys.argv[2], json.loads(sys.argv[3]))
    else:
        main()
