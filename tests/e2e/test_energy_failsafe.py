"""The grid meter goes silent under a real agent process (issue 4, "Done when" 2): the
EVs are at the failsafe current within ``limits.grid_stale_after`` plus one poll cycle
(rig ground truth, to the write), and not before the agent had reason to doubt.

Site: 32 A fuse, base load 4 A, two EVs at 14 A; grid_stale_after 2 s, failsafe 6 A
for all EVs together per phase (one EV at its 6 A minimum, the other paused). The meter
answers nothing (Modbus timeout 0.3 s, no retry, on its own bus). The last good
reading is at most one cycle older than the silence, and the tick that finds it older
than 2 s spends the meter's timeout before it writes; so the bound is the stale time
plus one cycle, with ``TICK_WORK`` for the allocation and writes of that tick.
"""

from __future__ import annotations

import pytest

from hil.harness import Harness
from hil.trace import ev_current
from tests.e2e.energy_kit import POLL, TOL, describe, drawing, ev, evs_within, first, samples, wait_truth, \
    write_energy_site

pytestmark = pytest.mark.e2e

STALE_AFTER = 2.0
FAILSAFE = 6.0
TICK_WORK = 0.25


async def test_silent_grid_meter_brings_the_failsafe_within_the_configured_time(tmp_path):
    site = write_energy_site(tmp_path, fuse=32, grid_stale_after=STALE_AFTER, failsafe_amps=FAILSAFE)
    async with Harness(site, tmp_path / "w", base_load=4.0) as h:
        await h.plug("c1", **ev())
        await h.plug("c2", **ev())
        await wait_truth(h, lambda t: drawing(t, 14, "c1", "c2"), what="both EVs at 14 A")
        mark = await h.rig("trace_start")

        silenced_at = (await h.rig("silent", device="grid"))["elapsed"]
        await wait_truth(h, lambda t: all(sum(c["currents"][p] for c in t["chargers"].values()) <= FAILSAFE + TOL
                                          for p in range(3)), what="EVs at the failsafe")
        trace = [s for s in await samples(h, mark) if s["t"] >= silenced_at]
        failsafe = first(trace, evs_within(FAILSAFE))
        assert failsafe is not None and failsafe["why"].startswith("write c")
        took = failsafe["t"] - silenced_at
        assert took <= STALE_AFTER + POLL + TICK_WORK, f"failsafe {took:.2f} s after the meter went silent: " \
                                                       f"{describe(failsafe)}"
        doubt = [s for s in trace if s["t"] < silenced_at + STALE_AFTER - POLL - 0.1]
        early = [describe(s) for s in doubt if max(ev_current(s)) != pytest.approx(28, abs=TOL)]
        assert doubt and early == [], "the EVs were cut before the meter was stale for the configured time:\n" + \
            "\n".join(early[:5])

        status = await h.agent_status()
        notes = status["energy"]["notes"]
        assert any(n.startswith("failsafe: grid meter stale") for n in notes), notes
        on = [c for c in status["energy"]["connectors"] if c["enabled"]]
        assert [c["amps"] for c in on] == [6] and len(status["energy"]["connectors"]) == 2

        await h.rig("wait_until", elapsed=failsafe["t"] + 4 * POLL)     # it holds while the meter is silent
        back_at = (await h.rig("back", device="grid"))["elapsed"]
        await h.wait_agent(lambda s: not any(n.startswith("failsafe") for n in s["energy"]["notes"]),
                           what="failsafe lifted once the meter answers")
        silent = [s for s in await samples(h, failsafe["seq"]) if s["t"] < back_at]
        assert back_at - failsafe["t"] >= 4 * POLL and len(silent) >= 4
        over = [describe(s) for s in silent if not evs_within(FAILSAFE)(s)]
        assert over == [], "above the failsafe while the meter was silent:\n" + "\n".join(over)
