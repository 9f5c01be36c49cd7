"""Suite-wide fixtures.

``no_leaked_tasks``: every async test must leave no task running behind it (a leaked
poll loop or connection task is a bug that shows up later as a flaky test).
"""

from __future__ import annotations

import asyncio

import pytest

#: every message a test CSMS receives is checked against the OCPP JSON schemas
pytest_plugins = ["tests.ocpp_schemas"]


@pytest.fixture(autouse=True)
async def no_leaked_tasks():
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    # give cancelled tasks a moment (a few loop turns, not wall time) to finish
    for _ in range(50):
        leftover = [t for t in asyncio.all_tasks() if t not in before and t is not current and not t.done()]
        if not leftover:
            return
        await asyncio.sleep(0)
    names = ", ".join(sorted(t.get_name() + ":" + repr(t.get_coro())[:80] for t in leftover))
    for t in leftover:
        t.cancel()
    pytest.fail(f"test left {len(leftover)} task(s) running: {names}")
