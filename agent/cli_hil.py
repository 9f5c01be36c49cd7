"""``evsite hil SCENARIO --config SITE.toml``: run a whole emulated site from a scenario.

Every bus of the site config is served as the agent expects it (TCP on loopback, RS-485
on a pseudo-terminal linked at the bus's port path), so ``evsite run`` with the same
config talks to it as to hardware. A line is printed per scenario event and a one-line
summary every ``--summary`` seconds of site time; Ctrl-C or SIGTERM stops it cleanly.
With ``--control SOCKET`` another process can plug EVs, inject faults and read the
ground truth through the JSON-lines channel of hil/control.py (end-to-end tests, the
demo); the start line is printed once that socket is up.

Exit codes: 0 after a clean stop, 1 when the rig itself failed, 2 for input that cannot
work (a scenario or config with errors, a bus the rig cannot serve): those are printed
as messages naming the file and the key, never as a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

EXIT_INPUT = 2


def register(sub: Any) -> None:
    p = sub.add_parser(
        "hil", help="run an emulated site from a scenario",
        description="Emulate every charger and meter of a site config (Modbus TCP on loopback, RS-485 on "
                    "pseudo-terminals) with a physical model, and play a scenario of timed events on it.")
    p.add_argument("scenario", metavar="SCENARIO",
                   help="scenario file, or the name of a shipped one (hil/scenarios: demo, short, rig)")
    p.add_argument("--config", metavar="SITE.toml", required=True, help="site config to emulate")
    p.add_argument("--speed", type=float, default=1.0, help="site seconds per real second (default 1)")
    p.add_argument("--summary", type=float, default=10.0, metavar="SECONDS",
                   help="site seconds between summary lines (default 10; 0: none)")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop after this many site seconds (default: run until Ctrl-C or SIGTERM)")
    p.add_argument("--control", metavar="SOCKET",
                   help="serve the hil/control.py command channel (plug, unplug, truth...) on this Unix socket")
    p.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"evsite hil: {message}", file=sys.stderr)
    return EXIT_INPUT


def run(args: argparse.Namespace) -> int:
    from agent.config.issues import ConfigErrors, ConfigUnreadable
    from agent.config.load import load_config
    from hil.scenario import ScenarioError, check_against, load_scenario

    if not args.speed > 0:
        return _fail(f"--speed must be > 0, got {args.speed:g}")
    if not args.summary >= 0:
        return _fail(f"--summary must be >= 0 s, got {args.summary:g}")
    if args.duration is not None and not args.duration > 0:
        return _fail(f"--duration must be > 0 s, got {args.duration:g}")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return _fail(f"scenario {args.scenario}: {len(exc.problems)} error(s); not starting")
    try:
        config = load_config(args.config)
    except ConfigUnreadable as exc:
        return _fail(str(exc))
    except ConfigErrors as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return _fail(f"{args.config}: {len(exc.issues)} error(s); not starting")
    problems = check_against(scenario, config)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return _fail(f"scenario {scenario.source} does not fit the site {args.config}")
    return asyncio.run(_run(config, scenario, args))


async def _run(config: Any, scenario: Any, args: argparse.Namespace) -> int:
    from hil.rig import Rig, RigError

    def show(at: float, event: Any) -> None:
        print(f"[{at:8.1f}s] {event.describe()}", flush=True)

    rig = Rig(config, scenario, speed=args.speed, on_event=show)
    control = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await rig.start()
        except RigError as exc:
            return _fail(str(exc))
        if args.control:
            from hil.control import ControlChannel, rig_commands

            try:
                control = await ControlChannel(args.control, rig_commands(rig)).start()
            except (OSError, ValueError) as exc:
                return _fail(f"--control {args.control}: {exc}")
        print(f"evsite hil: scenario {scenario.name} on {config.site.name} at speed x{args.speed:g}; "
              f"Ctrl-C to stop", flush=True)
        for bus_id, server in rig.servers.items():
            where = f"tcp {server.host}:{server.port}" if hasattr(server, "host") else f"rtu {server.link_path}"
            ids = ", ".join(d.id for d in config.devices if d.bus == bus_id)
            print(f"  bus {bus_id}: {where} ({ids})", flush=True)
        for bus_id, where in rig.real_buses.items():
            ids = ", ".join(d.id for d in config.devices if d.bus == bus_id)
            print(f"  bus {bus_id}: real hardware at {where}, not emulated ({ids})", flush=True)
        waits = [asyncio.create_task(stop.wait(), name="hil:stop"),
                 asyncio.create_task(rig.crashed.wait(), name="hil:crashed")]
        if args.duration is not None:
            waits.append(asyncio.create_task(rig.clock.sleep(args.duration), name="hil:duration"))
        if args.summary > 0:
            waits.append(asyncio.create_task(_summaries(rig, args.summary), name="hil:summary"))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in waits:
                t.cancel()
            for t in waits:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
    finally:
        if control is not None:
            await control.close()
        await rig.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if rig.error is not None:
        print(f"evsite hil: the rig failed: {rig.error!r}", file=sys.stderr)
        return 1
    print(f"evsite hil: stopped after {rig.elapsed():.1f} s of site time; "
          f"{len(rig.applied)} of {len(scenario.events)} events played", flush=True)
    return 0


async def _summaries(rig: Any, every: float) -> None:
    while True:
        await rig.clock.sleep(every)
        print(rig.summary(), flush=True)
