"""The control API shows a transaction started or ended only once the store has it.

Why: tests, the soak driver and operators act on what ``status`` shows (the outage
e2e test kills the agent with -9 as soon as a session shows ended). The sessions change
a connector's transaction in memory first and write the event after; when the API
showed the memory, a kill in between lost the end: after the restart the store still
had the transaction open, and it ended with PowerLoss instead of EVDisconnected
(seen now and then in tests/e2e/test_outage.py on a loaded machine).

A real agent on a real SQLite store; the store's ``record`` is held at the door for
transaction events, so the window the kill fell into is held open on purpose.
"""

from __future__ import annotations

import asyncio

from agent.sessions.events import TransactionEnded, TransactionStarted
from hil.model import Ev
from tests.integration.test_uplink_v16 import site, wait_until


class HeldDoor:
    """Wraps ``store.record``: events of ``kinds`` wait until ``open()``."""

    def __init__(self, store, kinds) -> None:
        self.kinds = kinds
        self.waiting = asyncio.Event()
        self._open = asyncio.Event()
        self._record = store.record

        async def record(event, outbox=True):
            if isinstance(event, self.kinds):
                self.waiting.set()
                await self._open.wait()
            return await self._record(event, outbox=outbox)
        store.record = record

    def open(self) -> None:
        self._open.set()


async def test_a_session_shows_ended_only_once_its_end_is_stored(tmp_path):
    async with site(tmp_path) as (rt, rig, _csms):
        view = lambda: rt.sessions.status_view()["connectors"][0]   # noqa: E731
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "CARD")).accepted
        await wait_until(lambda: view()["tx_id"] is not None, what="session shown")
        tx_id = view()["tx_id"]
        [open_tx] = await rt.store.open_transactions()
        assert open_tx.tx_id == tx_id                       # shown started: stored started

        door = HeldDoor(rt.store, TransactionEnded)
        rig.charger("terra").unplug(rig.site.model.now)
        try:
            await asyncio.wait_for(door.waiting.wait(), 10)     # ended in memory, not stored yet
            assert rt.sessions.connectors[1].tx is None
            assert view()["tx_id"] == tx_id, "shown ended before the store has the end"
            assert [t.tx_id for t in await rt.store.open_transactions()] == [tx_id]
        finally:
            door.open()
        await wait_until(lambda: view()["tx_id"] is None, what="session shown ended")
        assert await rt.store.open_transactions() == []
        assert (await rt.store.transaction(tx_id)).reason == "EVDisconnected"


async def test_a_session_shows_started_only_once_its_start_is_stored(tmp_path):
    async with site(tmp_path) as (rt, rig, _csms):
        view = lambda: rt.sessions.status_view()["connectors"][0]   # noqa: E731
        door = HeldDoor(rt.store, TransactionStarted)
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        tag = asyncio.create_task(rt.sessions.present_tag(1, "CARD"))
        try:
            await asyncio.wait_for(door.waiting.wait(), 10)     # started in memory, not stored yet
            assert rt.sessions.connectors[1].tx is not None
            assert view()["tx_id"] is None, "shown started before the store has the start"
            assert await rt.store.open_transactions() == []
        finally:
            door.open()
            accepted = (await tag).accepted
        assert accepted
        await wait_until(lambda: view()["tx_id"] is not None, what="session shown")
        assert [t.tx_id for t in await rt.store.open_transactions()] == [view()["tx_id"]]
