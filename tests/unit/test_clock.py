import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from agent.clock import SimClock
from agent.timefmt import parse_utc, utc_text


async def test_simclock_wakes_sleepers_in_order():
    clock = SimClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, dt: float) -> None:
        await clock.sleep(dt)
        woke.append((name, clock.monotonic()))

    t1 = asyncio.create_task(sleeper("late", 5))
    t2 = asyncio.create_task(sleeper("early", 2))
    await asyncio.sleep(0)
    await clock.advance(1)
    assert woke == []
    await clock.advance(10)
    assert [n for n, _ in woke] == ["early", "late"]
    assert woke[0][1] == pytest.approx(1002.0)
    assert woke[1][1] == pytest.approx(1005.0)
    await asyncio.gather(t1, t2)


async def test_wall_jump_does_not_move_monotonic():
    clock = SimClock()
    m0 = clock.monotonic()
    clock.jump_wall(timedelta(hours=-3))
    assert clock.monotonic() == m0
    assert clock.now() == datetime(2025, 12, 31, 21, tzinfo=timezone.utc)


def test_utc_text_millis_and_z():
    dt = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert utc_text(dt) == "2026-03-01T10:00:00.123Z"
    assert parse_utc("2026-03-01T10:00:00.123Z") == dt.replace(microsecond=123000)


def test_naive_times_are_refused():
    with pytest.raises(ValueError):
        utc_text(datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        parse_utc("2026-01-01T00:00:00")
