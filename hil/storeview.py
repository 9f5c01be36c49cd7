"""What an agent left in its store, read after it stopped (the soak and the network-fault
tests count lost messages with it).

Only through the store's own API (agent/store), opened without its integrity check and
closed again, while no agent runs on the file: a transaction message still queued, one
the uplink gave up on (the dropped table), or a transaction never ended is where a
message could be lost without the CSMS's log showing it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from agent.clock import SystemClock
from agent.sessions.events import MeterSampled, TransactionEnded, TransactionStarted
from agent.store import Store
from agent.uplink.outbox import message_id_prefix


@dataclass
class StoreView:
    queued_tx: list[str] = field(default_factory=list)       # transaction messages still in the outbox
    queued_ids: list[str] = field(default_factory=list)      # the message ids they are (or will be) sent with
    dropped_tx: list[str] = field(default_factory=list)      # transaction messages given up, with why
    open_tx: list[str] = field(default_factory=list)         # transactions never ended
    tx_messages: dict[str, dict[str, int]] = field(default_factory=dict)   # tx_id -> 1.6 messages it makes

    def problems(self) -> list[str]:
        return ([f"still queued: {q}" for q in self.queued_tx] + [f"dropped: {d}" for d in self.dropped_tx]
                + [f"never ended: {o}" for o in self.open_tx])


async def read_store(path: str | os.PathLike[str], tx_ids: list[str] | None = None) -> StoreView:
    """The store at ``path``; with ``tx_ids``, also how many Start/MeterValues/Stop
    messages each of those transactions makes in OCPP 1.6 (the expected deliveries)."""
    store = await Store.open(path, SystemClock(), check=False)
    view = StoreView()
    try:
        prefix = await message_id_prefix(store)
        for row in await store.outbox_head(limit=1_000_000):
            if row.tx_id:
                view.queued_tx.append(f"outbox {row.seq} {row.event.kind} of {row.tx_id}")
                view.queued_ids.append(row.message_id or f"{prefix}-{row.seq}")
        for d in await store.outbox_dropped(limit=1_000_000):
            if d.tx_id:
                view.dropped_tx.append(f"outbox {d.seq} {d.event.kind} of {d.tx_id}: {d.reason}")
        view.open_tx = [f"{t.tx_id} on connector {t.connector_id}" for t in await store.open_transactions()]
        for tx in tx_ids or []:
            view.tx_messages[tx] = _messages(await store.tx_events(tx))
    finally:
        await store.close()
    return view


def _messages(events: list[Any]) -> dict[str, int]:
    out = {"StartTransaction": 0, "MeterValues": 0, "StopTransaction": 0}
    for e in events:
        if isinstance(e, TransactionStarted):
            out["StartTransaction"] += 1
        elif isinstance(e, MeterSampled):
            out["MeterValues"] += 1
        elif isinstance(e, TransactionEnded):
            out["StopTransaction"] += 1
    return out
