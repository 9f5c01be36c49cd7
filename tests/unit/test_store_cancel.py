"""A write cancelled at any await (the uplink's tasks are cancelled whenever the link
drops) leaves the store usable and all-or-nothing: agent/store/db.py ``write()``."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from agent.clock import SimClock
from agent.sessions.events import TransactionStarted
from agent.store import Store

T = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("yields", range(0, 12))
async def test_a_cancelled_write_leaves_nothing_half_done(tmp_path, yields):
    store = await Store.open(tmp_path / "s.db", SimClock())
    try:
        task = asyncio.create_task(store.record(TransactionStarted(1, T, tx_id="tx-1", id_tag="A", meter_start_wh=5)))
        for _ in range(yields):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # the next writes work (no transaction left open on the connection) ...
        await store.kv_set("after", yields)
        assert await store.kv_get("after") == yields
        # ... and the cancelled one happened completely or not at all
        tx = await store.transaction("tx-1")
        rows = await store.outbox_head(limit=10)
        assert (tx is None and rows == []) or (tx is not None and [r.tx_id for r in rows] == ["tx-1"])
    finally:
        await store.close()
