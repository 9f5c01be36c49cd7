"""Ground truth over time: what the emulated site's physics did, sample by sample.

An end-to-end test of load management asks questions about the *site*, not about what
the agent believes: "was any phase of the grid connection over its fuse after the base
load stepped, and for how long?", "did the EVs draw more than the dim limit once the
contact closed?". The agent's status cannot answer them (it only knows what it read at
its last poll), so the rig records them where they happen.

``Trace(rig)`` takes a sample

- after every write a client makes to an emulated charger (setpoint, enable, phases, a
  keep-alive): the instant the agent's decision reaches the physics, so the time between
  a cause and the agent's effect is measured exactly, to the write;
- every ``period`` seconds of site time (the rig's model step by default), so what the
  EVs do on their own (a ramp ending, a battery tapering) is seen too;
- whenever a test asks for one (``sample("base load")`` after a scenario action).

A sample holds the rig's elapsed site seconds, the wall clock (``time.time()``, so a test
in another process can compare it with when it made the agent do something), each
meter's current per phase, and per charger its setpoint, enable and current on each site
phase. Samples are numbered; the last ``limit`` are kept.

The rig's control channel serves it (hil/control.py: ``trace_start``, ``trace``,
``trace_sample``); in-process tests use the object directly.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Any

from hil.model import PHASES


class Trace:
    def __init__(self, rig: Any, *, limit: int = 200_000) -> None:
        self.rig = rig
        self.samples: deque[dict[str, Any]] = deque(maxlen=limit)
        self.seq = 0
        self.running = False
        self._attached = False

    def start(self, period: float | None = None) -> int:
        """Record from now on (idempotent); returns the number the next sample gets.
        ``period``: seconds of site time between physics samples (default: the rig's tick)."""
        if not self._attached:
            for charger in self.rig.site.chargers.values():
                charger.image.on_write(lambda quantity, value, cid=charger.id: self._written(cid, quantity))
            self._attached = True
        if not self.running:
            self.running = True
            self.rig._spawn(self._physics(period or self.rig.tick), "rig:trace")
            self.sample("trace started")
        return self.seq

    def _written(self, charger_id: str, quantity: str) -> None:
        if self.running:        # the charger's own callback ran first: the model already follows
            self.sample(f"write {charger_id} {quantity}")

    async def _physics(self, period: float) -> None:
        while True:
            await self.rig.clock.sleep(period)
            self.rig.site.advance()
            self.sample("physics")

    def sample(self, why: str) -> dict[str, Any]:
        """Record the site as it is now (without stepping the model)."""
        site = self.rig.site
        chargers = {}
        for cid, c in site.chargers.items():
            m = c.model
            amps = m.site_currents()
            chargers[cid] = {"setpoint": m.setpoint, "enabled": m.enabled, "offered": m.offered(),
                             "current": [round(amps[p], 4) for p in PHASES], "state": m.state}
        meters = {mid: [round(a, 4) for a in self.rig.meter(mid).current] for mid in site.meters}
        s = {"seq": self.seq, "t": round(self.rig.elapsed(), 4), "wall": time.time(), "why": why,
             "meters": meters, "chargers": chargers}
        self.seq += 1
        self.samples.append(s)
        return s

    def since(self, seq: int = 0) -> list[dict[str, Any]]:
        """Samples numbered ``seq`` and later that are still kept, in order."""
        if not self.samples:
            return []
        skip = max(0, seq - self.samples[0]["seq"])   # numbers are consecutive
        return list(itertools.islice(self.samples, skip, None))


def ev_current(sample: dict[str, Any]) -> list[float]:
    """Total EV current per site phase in a sample (all chargers together)."""
    return [sum(c["current"][p] for c in sample["chargers"].values()) for p in range(3)]
