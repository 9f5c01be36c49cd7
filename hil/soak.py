"""Kill soak: random charging sessions while the agent is killed with -9 and the uplink cut,
then every transaction checked at the CSMS against the emulators' ground truth.

    python -m hil.soak --kills 20 --seed 7 --out run/soak/seed-7      # quick (what ./dev test runs)
    python -m hil.soak --kills 1000 --steady 600                       # long, with the memory check

The rig, the test CSMS and the agent run as real processes (hil/harness.py), a site of
two Phoenix EV-CC chargers (lifetime Wh registers) behind a grid meter, the rig's
physics at ``--speed`` times real time. A driver seeded with ``--seed`` plugs and unplugs
EVs, presents tags, has the CSMS send RemoteStart/RemoteStopTransaction, presents the
tag again to stop, cuts the uplink at the proxy for a few seconds now and then, and
kills the agent with -9 at random moments: a timer fires while whatever is under way
runs (a start, a stop, a store write, the restart recovery itself), then the agent is
restarted after a random pause in which EVs may still come and go. What the driver knows
of each start attempt, and the registers at the moments that bound its meter values,
is a ``SessionTruth``; hil/soak_check.py states the rules it is checked by (exactly
once, in order, meterStart/meterStop within the register at those moments, the
PowerLoss rule, nothing left open).

At the end the link is restored, every EV unplugged, the agent stopped cleanly and its
store read (hil/storeview.py): a transaction message still queued or dropped is lost.

Memory (hil/rss.py): the agent's VmRSS is sampled every ``--rss-period`` seconds. With
``--steady S`` the soak then runs the same workload for S more seconds without kills, and
RSS growth in that one process beyond the rule in hil/rss.py fails the run.

Everything stays in ``--out``: the process logs (logs/), the CSMS's message log
(csms.jsonl), the driver's actions (actions.log), the sessions (sessions.json) and the
verdict (result.json). The seed is printed first; the same seed gives the same random
decisions (replay: the command printed at the end, into run/soak/seed-SEED, an earlier
soak's directory there being replaced); timing between processes is not replayed, so a
race may need a few runs of the same seed to show again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.harness import Harness
from hil.soak_driver import CONNECTORS, STATION, SoakDriver


def write_site(path: Path, station: str = STATION) -> Path:
    """Two Phoenix EV-CC chargers (lifetime Wh registers, no watchdog) behind a grid meter."""
    chargers = "".join(f"""
        [[devices]]
        id = "c{n}"
        role = "charger"
        profile = "phoenix-evcc-eth"
        bus = "lan"
        unit_id = {n}
        connector_id = {n}
        max_current = 16
        """ for n in CONNECTORS)
    path.write_text(textwrap.dedent(f"""
        [site]
        name = "kill soak"
        poll_interval = 0.5
        state_dir = "state"

        [uplink]
        url = "ws://127.0.0.1:9/ocpp"
        station_id = "{station}"
        call_timeout = 3
        backoff_initial = 0.2
        backoff_max = 1
        ping_interval = 5

        [limits]
        fuse_amps = 63

        [[buses]]
        id = "lan"
        type = "tcp"
        host = "127.0.0.1"
        port = 1502
        timeout = 0.5

        [[devices]]
        id = "grid"
        role = "grid_meter"
        profile = "eastron-sdm630"
        bus = "lan"
        unit_id = 100
        """) + textwrap.dedent(chargers))
    return path


@dataclass
class SoakOptions:
    kills: int = 20
    seed: int = 0
    out: Path = Path("run/soak")
    speed: float = 10.0
    steady: float = 0.0            # seconds without kills at the end (memory verdict)
    uptime: float = 2.5            # mean seconds the agent runs between kills
    rss_period: float = 1.0
    warmup: float = 60.0           # seconds of the steady process left out of the RSS verdict

    def replay(self) -> str:
        """The command that runs this soak again (into run/soak/seed-SEED, not over these logs)."""
        return (f"python -m hil.soak --kills {self.kills} --seed {self.seed} --speed {self.speed:g} "
                f"--steady {self.steady:g} --uptime {self.uptime:g}")


class OutDirError(ValueError):
    """--out names a directory a soak must not write into."""


def fresh_dir(out: Path) -> None:
    """A run needs an empty directory (the CSMS log and the actions are appended to):
    an earlier soak's directory is replaced, anything else is refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / "site-source.toml").exists():
            raise OutDirError(f"{out} is not empty and holds no earlier soak: choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


async def run_soak(opts: SoakOptions) -> dict[str, Any]:
    fresh_dir(opts.out)
    source = write_site(opts.out / "site-source.toml")
    started = time.monotonic()
    async with Harness(source, opts.out, speed=opts.speed) as h:
        driver = SoakDriver(h, opts)
        try:
            result = await driver.run()
        finally:
            (opts.out / "sessions.json").write_text(json.dumps([s.to_json() for s in driver.sessions], indent=1))
    result["seconds"] = round(time.monotonic() - started, 1)
    (opts.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def summary(result: dict[str, Any]) -> str:
    s, rss = result["stats"], result["rss"]
    lines = [f"soak {'PASSED' if result['ok'] else 'FAILED'}: seed {result['seed']}, {result['kills']} kills, "
             f"{result['link_cuts']} link cuts, {result.get('seconds', '?')} s",
             f"  sessions {s['sessions']} (started {s['started']}, uncertain {s['uncertain']}, refused {s['refused']}); "
             f"at the CSMS: {s['start_transactions']} starts, {s['stop_transactions']} stops {s['stop_reasons']}, "
             f"{s['meter_values']} MeterValues, {s['retransmissions']} retransmissions (same id)",
             f"  meterStop exact {s['stops_exact']}, within a bracket {s['stops_bracketed']} "
             f"(widest {s['widest_stop_bracket_wh']} Wh)",
             f"  agent RSS: {rss.get('first_mib')} MiB first, {rss.get('last_mib')} MiB last, peak "
             f"{rss.get('peak_mib')} MiB over {rss.get('processes')} processes; {rss['verdict']}"]
    lines += [f"  PROBLEM {p}" for p in result["problems"][:50]]
    lines.append(f"  logs: {result['out']}  replay: {result['replay']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hil.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="kill -9s before the end (default 20)")
    p.add_argument("--seed", type=int, help="random seed (default: a new one, printed)")
    p.add_argument("--out", type=Path, help="directory for logs and results (default run/soak/seed-SEED)")
    p.add_argument("--speed", type=float, default=10.0, help="site physics speed (default 10)")
    p.add_argument("--steady", type=float, default=0.0, help="seconds without kills at the end, RSS judged (default 0)")
    p.add_argument("--uptime", type=float, default=2.5, help="mean seconds between kills (default 2.5)")
    args = p.parse_args(argv)
    if args.kills < 0 or args.steady < 0 or args.speed <= 0 or args.uptime <= 0:
        p.error("--kills and --steady must be >= 0, --speed and --uptime > 0")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    out = args.out or Path("run/soak") / f"seed-{seed}"
    print(f"soak: seed {seed}, {args.kills} kills, logs in {out}", flush=True)
    opts = SoakOptions(kills=args.kills, seed=seed, out=out, speed=args.speed, steady=args.steady,
                       uptime=args.uptime, warmup=min(60.0, args.steady / 4))
    try:
        result = asyncio.run(run_soak(opts))
    except OutDirError as exc:
        print(f"hil.soak: {exc}", file=sys.stderr)
        return 2
    print(summary(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
