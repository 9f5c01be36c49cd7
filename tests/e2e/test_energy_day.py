"""A simulated day on a busy site (issue 4, "Done when" 2): 20 EVs with random arrival,
stay, battery and on-board charger; no ground-truth sample over any limit, and the
fairness bound at every control cycle. The site, the visits and the checks are
tests/e2e/day_kit.py's, shared with the same day through real processes
(tests/e2e/test_energy_day_processes.py).

Why this one is in-process: it checks the bound at *every* control cycle of a whole day,
on the allocator's own result, in seconds. The rig (hil.rig.Rig: physics, scenario,
real Modbus TCP servers on loopback), the agent's real drivers, its Poller and its
EnergyController all run on one SimClock that the test advances a cycle at a time, so
nothing is missed and nothing depends on how loaded the machine is, while every reading
and setpoint still crosses a real Modbus stack. The process variant runs the whole agent
(sessions, uplink, store) on a sped-up clock instead and samples its decisions through
``evsite status``; it takes minutes where this takes seconds. The poll runs every
``POLL`` s of site time (a day at the production 1 s would be 86,400 ticks of real
Modbus, minutes of test): coarse for a control loop, but every invariant checked here
must hold at each step whatever the interval. There is no session layer: every plugged
EV may draw (``may_draw`` unset), as with free charging.

Checked:
- limits: every ground-truth sample (after each setpoint write, each model step and
  each control cycle) has the grid meter at or under the fuse on every phase and the
  row's chargers at or under its breaker. A base-load step is the building changing
  under the controller: from the step to the end of the next control cycle the site may
  be over (the reaction time is test_energy_base_load's), the cycle's result may not.
- fairness, at every cycle, on the allocator's decision (day_kit.fairness_problems).
- the day did what it should: every EV charged, limits bound, EVs were paused and
  resumed.
"""

from __future__ import annotations

import random
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from agent.clock import SimClock
from agent.config.load import load_config_text
from agent.energy.controller import EnergyController
from agent.site.devices import open_devices
from agent.site.poller import Poller
from hil.rig import Rig
from hil.trace import Trace
from tests.e2e.day_kit import CHARGERS, DAY, POLL, SEED, binding, charged, fairness_problems, limit_problems, \
    TurnWatch, make_visits, paused, plugs, site_text

pytestmark = pytest.mark.e2e


async def test_a_day_of_twenty_evs_keeps_every_limit_and_shares_fairly(tmp_path: Path):
    rnd = random.Random(SEED)
    scenario, names = make_visits(rnd)
    config = load_config_text(site_text(), "site.toml", base_dir=tmp_path)
    config.bus("lan").port = 0                      # any free port; read back below
    clock = SimClock()
    rig = Rig(config, scenario, clock, tick=POLL)
    over: list[str] = []
    unfair: list[str] = []
    stats = {"bound": 0, "row_bound": 0, "paused": 0, "cycles": 0, "max_plugged": 0}
    last_soc: dict[str, float] = {}
    turns = TurnWatch()
    async with AsyncExitStack() as stack:
        await rig.start()
        stack.push_async_callback(rig.stop)
        config.bus("lan").port = rig.servers["lan"].port
        slots = await open_devices(config, clock, stack)
        energy = EnergyController(config, clock)
        poller = Poller(slots, clock=clock, interval=POLL, setpoints=energy.policy)
        trace = Trace(rig, limit=1000)
        trace.start(DAY)   # no extra model-step samples: the rig steps at every cycle, sampled below
        seen = 0
        while rig.elapsed() < DAY:
            await poller.tick()
            tick_at = rig.elapsed()
            trace.sample("cycle")
            stats["cycles"] += 1
            # a base-load step since the last cycle: until this cycle's result, the site may be over
            stepped = [at for at, e in rig.applied if e.action == "base_load" and tick_at - POLL < at <= tick_at]
            for s in trace.since(seen):
                if s["why"] == "cycle" or not stepped or s["t"] < min(stepped):
                    over += limit_problems(s)
            seen = trace.seq
            result = energy.last_result
            assert result is not None
            decision = result.explanation.as_dict()
            unfair += fairness_problems(decision)
            turns.update(decision, tick_at)
            stats["bound"] += binding(decision)
            stats["row_bound"] += binding(decision, "circuit row")
            stats["paused"] += paused(decision) > 0
            evs = [ev for c in CHARGERS if (ev := rig.ev(c)) is not None]
            stats["max_plugged"] = max(stats["max_plugged"], len(evs))
            last_soc.update((ev.name, ev.soc) for ev in evs)
            await clock.advance(POLL)
        assert rig.error is None and rig.finished.is_set()

    assert over == [], f"{len(over)} sample(s) over a limit, first: " + "\n".join(over[:10])
    assert unfair == [], f"{len(unfair)} unfair allocation(s), first: " + "\n".join(unfair[:10])
    start_soc = plugs(e for _, e in rig.applied)
    assert sorted(start_soc) == names
    gained = charged(start_soc, last_soc)
    assert sorted(gained) == names
    # every EV charged: on a squeezed site paused EVs take turns (the default 15 min of
    # limits.policy.rotation_interval; a base-load step may add a few minutes), so one arriving into a squeeze does not wait out its whole stay
    assert all(v > 0.02 for v in gained.values()), gained
    wait, cid, at = turns.longest
    assert wait <= 15 * 60 + 300, f"CP{cid} waited {wait / 60:.0f} min for a turn (until t={at:.0f} s)"
    assert stats["cycles"] >= DAY / POLL
    assert stats["max_plugged"] >= 6, stats        # busy: most chargers in use at once
    assert stats["bound"] >= stats["cycles"] // 10, stats   # a limit decided shares for hours
    assert stats["row_bound"] >= stats["cycles"] // 20, stats   # and the row's breaker for more than an hour
    assert stats["paused"] > 0, stats              # some EV paused rather than run below 6 A
