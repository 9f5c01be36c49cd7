"""The disk fills up during a session (SQLite's own SQLITE_FULL via max_page_count):
charging control goes on, the problem is reported, nothing stored is lost, and once
there is room again every event is written and reaches the CSMS in order."""

from __future__ import annotations

import asyncio

from hil.model import Ev
from tests.integration.test_uplink_v16 import STATION, site, wait_until


async def set_max_pages(store, pages: int) -> None:
    async with store._db.read("test: disk size") as conn:
        await conn.execute(f"PRAGMA max_page_count = {pages}")


async def page_count(store) -> int:
    async with store._db.read("test: pages") as conn:
        cur = await conn.execute("PRAGMA page_count")
        (n,) = await cur.fetchone()
        return n


async def test_disk_full_mid_session_then_space_returns(tmp_path, caplog):
    async with site(tmp_path) as (rt, rig, csms):
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "FULL")).accepted
        await csms.wait_for("StartTransaction", station=STATION)
        before = await rt.store.open_transactions()
        await set_max_pages(rt.store, await page_count(rt.store))        # no room for one more page
        # the session goes on: the EV keeps its current, the stop is decided and kept in memory
        e0 = rig.energy_register("terra")
        await wait_until(lambda: rig.energy_register("terra") > e0 + 1)
        rig.charger("terra").unplug(rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].tx is None)
        await wait_until(lambda: rt.sessions.status_view()["unwritten_events"] > 0)
        assert any("store write failed" in r.message for r in caplog.records)
        assert [t.tx_id for t in await rt.store.open_transactions()] == [t.tx_id for t in before]   # nothing lost
        assert not csms.messages(STATION, "StopTransaction")
        # room again: the kept events are written in order and delivered
        await set_max_pages(rt.store, 1_000_000)
        stop = await csms.wait_for("StopTransaction", station=STATION, timeout=15)
        assert stop.payload["reason"] == "EVDisconnected"
        await wait_until(lambda: rt.sessions.status_view()["unwritten_events"] == 0)
        assert await rt.store.open_transactions() == []
        assert sum("store write failed" in r.message for r in caplog.records) == 1   # logged once, not per poll
        assert any("store writes work again" in r.message for r in caplog.records)
        async with asyncio.timeout(10):
            while await rt.store.outbox_len():
                await asyncio.sleep(0.05)
