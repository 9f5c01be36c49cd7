"""Allocator speed: full allocations (limits stack + allocate + safe step) per second.

For 50 and 500 connectors on a site with a fuse tree, a grid meter and mixed priorities,
1- and 3-phase chargers. The floor, measured in the same run, is a trivial policy of the
same size (one fixed Setpoint per connector, as before load management): the ratio says
what load management costs per poll over doing nothing clever.

Prints one JSON line per figure: {"figure", "value", "floor", "unit"}.
Run: ``.venv/bin/python bench/bench_allocator.py``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.energy.allocator import allocate  # noqa: E402
from agent.energy.limits import FuseTree, GridReading, stack_limits  # noqa: E402
from agent.energy.model import SITE, ConnectorInput  # noqa: E402
from agent.energy.transitions import plan_transition  # noqa: E402
from drivers.contract import Setpoint  # noqa: E402


def make_site(n: int, seed: int = 1) -> tuple[FuseTree, list[ConnectorInput]]:
    rnd = random.Random(seed)
    rows = max(1, n // 10)
    circuits = {f"row{i}": ((32.0 * 10 / 4,) * 3, SITE) for i in range(rows)}
    tree = FuseTree((16.0 * n / 3,) * 3, circuits)
    inputs = []
    for cid in range(1, n + 1):
        one = rnd.random() < 0.3
        a = rnd.choice([0.0, 6.0, 10.0, 16.0])
        inputs.append(ConnectorInput(
            cid, state=rnd.choice("ABCCC"), wiring=(rnd.randrange(3),) if one else (0, 1, 2), phases=1 if one else 3,
            measured=(a, a, a), max_current=rnd.choice([16.0, 32.0]), priority=rnd.choice([1, 1, 1, 2]),
            setpoint=Setpoint(a, 1 if one else 3, a > 0), circuit=f"row{(cid - 1) % rows}",
        ))
    return tree, inputs


def rate(fn, min_time: float = 0.5) -> float:
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return n / elapsed


def main() -> None:
    for n in (50, 500):
        tree, inputs = make_site(n)
        grid = GridReading((16.0 * n / 4,) * 3, age=0.5)

        def full() -> None:
            limits = stack_limits(fuses=tree, connectors=inputs, grid=grid)
            result = allocate(inputs, limits, now=0.0)
            plan_transition(result.allocations, inputs, result.network, now=0.0)

        def trivial() -> None:
            {c.connector_id: Setpoint(c.max_current, c.phases, True) for c in inputs}

        print(json.dumps({"figure": f"allocations/s, {n} connectors", "value": round(rate(full), 1),
                          "floor": round(rate(trivial), 1), "unit": "allocations/s"}))


if __name__ == "__main__":
    main()
