"""The outbox as the delivery loop uses it: order, message ids, done/failed/drop, the
CSMS's transaction id stored atomically with done, and the overflow policy that drops
meter samples but never a transaction's start or end."""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timezone

import pytest

from agent.clock import SimClock
from agent.sessions.events import (
    ConnectorStatus, MeterSampled, SampledValue, StatusChanged, StopReason, TransactionEnded, TransactionStarted,
)
from agent.store import Store, StoreError

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "evsite.db", SimClock(start=T0))
    yield s
    await s.close()


def sample(tx: str | None = "tx-1", wh: float = 1.0) -> MeterSampled:
    return MeterSampled(1, T0, (SampledValue("Energy.Active.Import.Register", wh, "Wh"),), tx_id=tx)


def start(tx: str = "tx-1") -> TransactionStarted:
    return TransactionStarted(1, T0, tx, "TAG", 0)


def end(tx: str = "tx-1") -> TransactionEnded:
    return TransactionEnded(1, T0, tx, 10, StopReason.LOCAL)


async def test_head_is_oldest_first_and_rows_leave_only_when_done(store):
    seqs = [await store.record(StatusChanged(c, T0, ConnectorStatus.AVAILABLE)) for c in (1, 2, 3)]
    assert [r.seq for r in await store.outbox_head()] == seqs[:1]
    assert [r.seq for r in await store.outbox_head(limit=10)] == seqs
    await store.outbox_done(seqs[0])
    assert [r.event.connector_id for r in await store.outbox_head(limit=10)] == [2, 3]
    assert await store.outbox_len() == 2
    later = await store.record(StatusChanged(4, T0, ConnectorStatus.AVAILABLE))
    assert later > seqs[-1]                                       # never reused, even after deletes
    await store.outbox_done(seqs[2])
    await store.outbox_done(later)
    fresh = await store.record(StatusChanged(5, T0, ConnectorStatus.AVAILABLE))
    assert fresh > later


async def test_message_id_is_kept_for_retries_and_not_replaced(store, tmp_path):
    seq = await store.record(start())
    await store.outbox_assign_message_id(seq, "m-1")
    await store.outbox_assign_message_id(seq, "m-1")              # same id again: fine
    with pytest.raises(StoreError, match="already has message id 'm-1'"):
        await store.outbox_assign_message_id(seq, "m-2")
    with pytest.raises(StoreError, match="non-empty string"):
        await store.outbox_assign_message_id(seq, "")
    assert await store.outbox_failed_attempt(seq, "CALLERROR InternalError") == 1
    assert await store.outbox_failed_attempt(seq, "timeout") == 2
    await store.close()
    reopened = await Store.open(tmp_path / "evsite.db", SimClock(start=T0))
    try:
        (row,) = await reopened.outbox_head()
        assert (row.message_id, row.attempts, row.last_error, row.tx_seq) == ("m-1", 2, "timeout", 0)
        assert reopened.outbox_changed.is_set()                   # queued rows: the loop should look
        assert await reopened.outbox_len() == 1
    finally:
        await reopened.close()


async def test_done_stores_the_csms_transaction_id_with_the_delete(store):
    seq = await store.record(start())
    await store.outbox_done(seq, csms_tx_id=4711)
    assert (await store.transaction("tx-1")).csms_tx_id == 4711
    assert await store.outbox_head() == []


async def test_done_with_an_id_for_a_row_outside_a_transaction_changes_nothing(store):
    seq = await store.record(StatusChanged(1, T0, ConnectorStatus.AVAILABLE))
    with pytest.raises(StoreError, match="outside any transaction"):
        await store.outbox_done(seq, csms_tx_id=1)
    assert [r.seq for r in await store.outbox_head()] == [seq]


@pytest.mark.parametrize("call", [
    lambda s: s.outbox_done(99), lambda s: s.outbox_drop(99, "x"), lambda s: s.outbox_failed_attempt(99, "x"),
    lambda s: s.outbox_assign_message_id(99, "m"),
])
async def test_unknown_rows_are_named(store, call):
    with pytest.raises(StoreError, match="99: no such outbox row"):
        await call(store)


async def test_drop_keeps_the_row_for_diagnostics(store, caplog):
    seq = await store.record(start())
    await store.outbox_assign_message_id(seq, "m-7")
    await store.outbox_failed_attempt(seq, "rejected")
    with caplog.at_level(logging.WARNING, logger="evsite.store"):
        await store.outbox_drop(seq, "attempts exhausted")
    assert "dropped: attempts exhausted" in caplog.text
    assert await store.outbox_len() == 0 and await store.outbox_head() == []
    (gone,) = await store.outbox_dropped()
    assert (gone.seq, gone.event, gone.message_id, gone.attempts, gone.last_error, gone.reason, gone.tx_seq) == (
        seq, start(), "m-7", 1, "rejected", "attempts exhausted", 0)
    assert gone.dropped_at == T0


async def test_overflow_drops_oldest_meter_samples_never_transaction_messages(tmp_path, caplog):
    store = await Store.open(tmp_path / "s.db", SimClock(start=T0), outbox_max=4)
    try:
        await store.record(start())
        s1 = await store.record(sample(wh=1))
        s2 = await store.record(sample(wh=2))
        await store.record(StatusChanged(1, T0, ConnectorStatus.CHARGING))
        with caplog.at_level(logging.WARNING, logger="evsite.store"):
            await store.record(sample(wh=3))                     # full: the oldest sample goes
            await store.record(end())                            # full: the next oldest sample goes
        assert caplog.text.count("outbox full") == 1             # one overflow episode, one line
        kinds = [(r.event.kind, getattr(r.event, "values", [None])[0]) for r in await store.outbox_head(limit=9)]
        assert [k for k, _ in kinds] == ["tx_started", "status", "meter", "tx_ended"]
        assert await store.outbox_len() == 4
        dropped = await store.outbox_dropped()
        assert sorted(d.seq for d in dropped) == [s1, s2] and {d.reason for d in dropped} == {"overflow"}
        assert len(await store.samples()) == 3                   # the samples stay in the history
        # nothing left to drop but a sample: a transaction message is refused, nothing written
        head = await store.outbox_head(limit=9)
        await store.outbox_done(head[2].seq)                     # deliver the sample ...
        await store.record(start("tx-2"))                        # ... now full of transaction messages
        with pytest.raises(StoreError, match="outbox full .*no meter samples left to drop: tx_ended event not recorded"):
            await store.record(end("tx-2"))
        assert (await store.transaction("tx-2")).state == "open"
        # room again: the episode ends (logged once), and a new one logs again
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="evsite.store"):
            for r in (await store.outbox_head(limit=2)):
                await store.outbox_done(r.seq)
            await store.record(sample(tx=None))
            await store.record(sample(tx=None))
            await store.record(sample(tx=None))
        assert "room again; 2 meter samples were dropped" in caplog.text
        assert caplog.text.count("outbox full") == 1
    finally:
        await store.close()


async def test_a_lower_limit_after_restart_trims_to_fit(tmp_path):
    path = tmp_path / "s.db"
    store = await Store.open(path, SimClock(start=T0))
    for i in range(6):
        await store.record(sample(tx=None, wh=i))
    await store.close()
    store = await Store.open(path, SimClock(start=T0), outbox_max=3)
    try:
        await store.record(StatusChanged(1, T0, ConnectorStatus.AVAILABLE))
        assert await store.outbox_len() == 3
        assert [r.event.kind for r in await store.outbox_head(limit=9)] == ["meter", "meter", "status"]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM outbox_dropped").fetchone()[0] == 4
