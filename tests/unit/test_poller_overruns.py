"""Slow ticks are one episode in the log: a device that keeps timing out makes every
tick overrun, and that is one warning when it starts and one line when ticks are on time
again, not a warning per tick (found by tests/integration/test_device_faults.py)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

from agent.clock import SimClock
from agent.site.poller import Poller
from tests.unit.test_poller import FakeMeter, meter_slot


async def test_a_run_of_slow_ticks_is_logged_once_and_its_end_once(caplog):
    caplog.set_level(logging.INFO, "evsite.poller")
    clock = SimClock(start=datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc))
    grid = FakeMeter("grid", clock)

    async def slow():
        await clock.sleep(1.5)

    grid.script.extend([slow] * 6)           # six slow ticks, then on time again
    poller = Poller([meter_slot(grid)], clock=clock, interval=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    await clock.advance(0)
    for _ in range(40):
        await clock.advance(0.5)
    stop.set()
    await task
    assert poller.ticks_skipped == 6
    msgs = [r.getMessage() for r in caplog.records if r.name == "evsite.poller"]
    assert msgs == ["poll tick 1 took 1.50 s (interval 1.00 s): skipped 1 tick(s)",
                    "poll ticks on time again after 6 slow ticks (6 ticks skipped)"]
