"""A SimClock that tells a test which tasks are sleeping on it.

Why: a test that moves simulated time while a driver's task is still in the middle of
real IO (a Modbus exchange over a pty takes a few wall milliseconds, more on a loaded
machine) races that task: its next ``sleep`` starts after the jump, so the wake-up the
test expects never comes within the step. Waiting until the task is asleep again before
each ``advance`` makes time move only between exchanges, whatever the machine's load.
"""

from __future__ import annotations

import asyncio

from agent.clock import SimClock


class SleepWatch(SimClock):
    def __init__(self) -> None:
        super().__init__()
        #: names of the tasks awaiting ``sleep`` on this clock right now
        self.asleep: set[str] = set()
        self._fell_asleep = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        task = asyncio.current_task()
        name = task.get_name() if task is not None else "?"
        self.asleep.add(name)
        self._fell_asleep.set()
        try:
            await super().sleep(seconds)
        finally:
            self.asleep.discard(name)

    async def until_asleep(self, name: str) -> None:
        """Return once the task called ``name`` sleeps on this clock (bound it with wait_for)."""
        while name not in self.asleep:
            self._fell_asleep.clear()
            await self._fell_asleep.wait()
