"""Injected time, so the rig and the tests can run simulated time.

Invariant 6 of the design: intervals and timeouts use the monotonic clock; stored and sent
times are UTC with a timezone. Every component that needs time takes a ``Clock`` instead
of calling ``time``/``datetime``/``asyncio.sleep`` directly. ``SystemClock`` is production;
``SimClock`` is advanced by hand (unit tests, the simulated-day rig); ``ScaledClock`` runs
real time faster (``evsite hil --speed``, and ``evsite run`` under the test-only
``EVSITE_CLOCK_SPEED``: see ``clock_from_env``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import os
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; only differences mean anything."""

    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Real time sped up by ``speed``: the emulated site's physics at 10x, say.

    Wall time starts at the real wall time and then advances ``speed`` times as fast.
    """

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._mono0 = time.monotonic()
        self._wall0 = datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return self._mono0 + (time.monotonic() - self._mono0) * self.speed

    def now(self) -> datetime:
        return self._wall0 + timedelta(seconds=self.monotonic() - self._mono0)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


#: test only: ``evsite run`` runs its whole runtime on ``ScaledClock(float(value))``
SPEED_ENV = "EVSITE_CLOCK_SPEED"


class ClockSpeedError(ValueError):
    """``EVSITE_CLOCK_SPEED`` is set to something that is not a positive number."""


def clock_from_env(environ: Mapping[str, str] | None = None) -> tuple[Clock, float | None]:
    """The agent's clock: ``SystemClock`` unless ``EVSITE_CLOCK_SPEED`` is set (tests only).

    Why it exists: an end-to-end test runs a simulated day through real processes (the
    rig at ``--speed``, the agent here) in minutes. The agent's poll interval, staleness,
    settle times, sessions' sample intervals and keep-alives then all run in the rig's
    site time, so a 30 s poll of site time is a poll, not 50 minutes of physics. Never set
    on a gateway; the caller logs a warning when it is. Returns the clock and the speed
    (None: real time); an empty value counts as unset, anything else must parse as a
    finite number > 0 or ``ClockSpeedError`` names it.
    """
    raw = (os.environ if environ is None else environ).get(SPEED_ENV, "").strip()
    if not raw:
        return SystemClock(), None
    try:
        speed = float(raw)
    except ValueError:
        speed = math.nan
    if not (math.isfinite(speed) and speed > 0):
        raise ClockSpeedError(f"{SPEED_ENV} must be a positive number (site seconds per real second), got {raw!r}")
    return ScaledClock(speed), speed


class SimClock:
    """Time that moves only when the test says so.

    ``await clock.advance(dt)`` wakes every sleeper whose deadline falls within ``dt``,
    in deadline order, letting each woken task run before time moves on. The wall clock
    can be stepped independently (``jump_wall``) to test clock changes: monotonic
    intervals must not notice.
    """

    def __init__(self, start: datetime | None = None, monotonic: float = 1000.0) -> None:
        self._mono = monotonic
        self._wall = start or datetime(2026, 1, 1, tzinfo=timezone.utc)
        if self._wall.tzinfo is None:
            raise ValueError("SimClock start must be timezone-aware")
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._mono

    def now(self) -> datetime:
        return self._wall

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + max(0.0, seconds), next(self._seq), fut))
        await fut

    def jump_wall(self, delta: timedelta) -> None:
        self._wall += delta

    async def advance(self, seconds: float) -> None:
        target = self._mono + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            step = deadline - self._mono
            if step > 0:
                self._mono = deadline
                self._wall += timedelta(seconds=step)
            if not fut.done():
                fut.set_result(None)
            await _settle()
        step = target - self._mono
        self._mono = target
        self._wall += timedelta(seconds=step)
        await _settle()

    @property
    def pending_sleepers(self) -> int:
        return sum(1 for *_, f in self._sleepers if not f.done())


async def _settle(rounds: int = 20) -> None:
    """Let woken tasks run until they block again (bounded, no wall-time waiting)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
