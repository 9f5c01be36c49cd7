"""record(): every event type round-trips, the transactions table follows the events,
tx_seq numbers a transaction's outbox rows, refused events write nothing, and meter
samples kept only as history are pruned by age."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from agent.clock import SimClock
from agent.sessions.events import (
    ChargingState, ConnectorStatus, MeterSampled, SampledValue, SecurityEvent, StatusChanged, StopReason,
    TransactionEnded, TransactionStarted, TransactionUpdated, Trigger,
)
from agent.store import Store, StoreError

T0 = datetime(2026, 3, 1, 8, 0, 0, 123000, tzinfo=timezone.utc)


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "evsite.db", SimClock(start=T0))
    yield s
    await s.close()


def energy(wh: float, unit: str = "Wh", phase: str | None = None) -> SampledValue:
    return SampledValue("Energy.Active.Import.Register", wh, unit, phase=phase)


def started(tx="tx-1", connector=1, at=T0, meter=1000, **kw) -> TransactionStarted:
    return TransactionStarted(connector, at, tx, "TAG-1", meter, **kw)


def sample(tx="tx-1", at=T0, wh=1500.0, connector=1) -> MeterSampled:
    return MeterSampled(connector, at, (energy(wh), SampledValue("Power.Active.Import", 7200, "W")), tx_id=tx)


def ended(tx="tx-1", at=T0, meter=2500) -> TransactionEnded:
    return TransactionEnded(1, at, tx, meter, StopReason.EV_DISCONNECTED, id_tag="TAG-1")


def row_counts(path) -> tuple[int, int, int]:
    with sqlite3.connect(path) as conn:
        return tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in ("events", "transactions", "outbox"))  # type: ignore[return-value]


EVERY_EVENT = [
    StatusChanged(2, T0, ConnectorStatus.FAULTED, error_code="GroundFailure", info="RCD", vendor_error_code="E12"),
    TransactionStarted(1, T0, "tx-a", "Tag-A", 12, trigger=Trigger.REMOTE_START, id_token_type="Central",
                       reservation_id=4, remote_start_id=77, offline=True),
    TransactionUpdated(1, T0, "tx-a", Trigger.CHARGING_STATE_CHANGED, charging_state=ChargingState.SUSPENDED_EV),
    MeterSampled(1, T0, (energy(13.5, phase="L1"), SampledValue("Voltage", 231.2, "V", phase="L1-N"),
                         SampledValue("Current.Import", 15.9, "A", phase="L2", location="Inlet")),
                 context="Sample.Clock", tx_id="tx-a", offline=True),
    MeterSampled(0, T0, (SampledValue("Power.Active.Import", -300.0, "W", location="Inlet"),)),
    TransactionEnded(1, T0, "tx-a", 99, StopReason.REMOTE, id_tag=None, trigger=Trigger.REMOTE_STOP, offline=True),
    SecurityEvent(0, T0, "SettingSystemTime", tech_info="NTP step +3 s"),
]


async def test_every_event_type_round_trips_through_the_outbox_and_a_restart(tmp_path):
    path = tmp_path / "evsite.db"
    store = await Store.open(path, SimClock(start=T0))
    seqs = [await store.record(e) for e in EVERY_EVENT]
    await store.close()
    store = await Store.open(path, SimClock(start=T0))
    try:
        rows = await store.outbox_head(limit=100)
        assert [r.seq for r in rows] == seqs == sorted(seqs)
        assert [r.event for r in rows] == EVERY_EVENT
        assert [type(r.event) for r in rows] == [type(e) for e in EVERY_EVENT]
        assert await store.tx_events("tx-a") == [e for e in EVERY_EVENT if getattr(e, "tx_id", None) == "tx-a"]
    finally:
        await store.close()


async def test_a_transaction_is_tracked_from_start_to_end(store):
    await store.record(started(meter=1000, remote_start_id=5))
    tx = await store.transaction("tx-1")
    assert (tx.state, tx.connector_id, tx.id_tag, tx.meter_start_wh, tx.started_at) == ("open", 1, "TAG-1", 1000, T0)
    assert tx.is_open and tx.last_meter_wh is None and tx.meter_stop_wh is None
    assert [t.tx_id for t in await store.open_transactions()] == ["tx-1"]
    await store.record(sample(wh=1200))
    await store.record(MeterSampled(1, T0, (energy(1.75, unit="kWh"),), tx_id="tx-1"))
    assert (await store.transaction("tx-1")).last_meter_wh == 1750.0
    await store.record(MeterSampled(1, T0, (energy(9999, phase="L1"),), tx_id="tx-1"))   # per-phase: not the register
    assert (await store.transaction("tx-1")).last_meter_wh == 1750.0
    end_at = T0 + timedelta(hours=1)
    await store.record(ended(at=end_at, meter=2500))
    tx = await store.transaction("tx-1")
    assert (tx.state, tx.meter_stop_wh, tx.ended_at, tx.reason) == ("ended", 2500, end_at, StopReason.EV_DISCONNECTED)
    assert await store.open_transactions() == []
    assert await store.transaction("nope") is None


async def test_tx_seq_numbers_each_transactions_outbox_rows(store):
    await store.record(started("tx-1"))
    await store.record(StatusChanged(1, T0, ConnectorStatus.CHARGING))
    await store.record(started("tx-2", connector=2))
    await store.record(sample("tx-1"))
    await store.record(sample("tx-1"), outbox=False)                 # history only: no number taken
    await store.record(TransactionUpdated(2, T0, "tx-2", Trigger.CHARGING_STATE_CHANGED))
    await store.record(sample("tx-2"))
    await store.record(ended("tx-1"))
    rows = await store.outbox_head(limit=100)
    assert [(r.event.kind, r.tx_id, r.tx_seq) for r in rows] == [
        ("tx_started", "tx-1", 0), ("status", None, None), ("tx_started", "tx-2", 0), ("meter", "tx-1", 1),
        ("tx_updated", "tx-2", 1), ("meter", "tx-2", 2), ("tx_ended", "tx-1", 2),
    ]
    assert (await store.transaction("tx-1")).next_tx_seq == 3


@pytest.mark.parametrize("bad, words", [
    (started("tx-1"), "transaction tx-1 was already started"),
    (sample("tx-9"), "transaction tx-9 was never started"),
    (TransactionUpdated(1, T0, "tx-9", Trigger.AUTHORIZED), "transaction tx-9 was never started"),
    (ended("tx-9"), "transaction tx-9 was never started"),
    (ended("tx-old"), "transaction tx-old has already ended"),
    (sample("tx-old"), "transaction tx-old has already ended"),
    (StatusChanged(1, datetime(2026, 1, 1), ConnectorStatus.AVAILABLE), "naive datetime"),
    ("not an event", "expected an event"),
])
async def test_refused_events_write_nothing(store, bad, words):
    await store.record(started("tx-old"))
    await store.record(ended("tx-old"))
    await store.record(started("tx-1", meter=7))
    before = row_counts(store.path), await store.outbox_len(), await store.transaction("tx-1")
    store.outbox_changed.clear()
    with pytest.raises(StoreError, match=words):
        await store.record(bad)
    assert (row_counts(store.path), await store.outbox_len(), await store.transaction("tx-1")) == before
    assert not store.outbox_changed.is_set()


async def test_record_wakes_the_delivery_loop_only_with_an_outbox_row(store):
    waiter = asyncio.create_task(store.outbox_changed.wait())
    assert await store.record(StatusChanged(1, T0, ConnectorStatus.AVAILABLE), outbox=False) is None
    await asyncio.sleep(0)
    assert not waiter.done()
    seq = await store.record(StatusChanged(1, T0, ConnectorStatus.PREPARING))
    await asyncio.wait_for(waiter, 1)
    assert seq == 1 and await store.outbox_len() == 1


async def test_last_status_is_the_latest_per_connector(store):
    await store.record(StatusChanged(1, T0, ConnectorStatus.AVAILABLE))
    await store.record(StatusChanged(2, T0, ConnectorStatus.UNAVAILABLE))
    await store.record(StatusChanged(1, T0, ConnectorStatus.CHARGING), outbox=False)
    await store.record(StatusChanged(0, T0, ConnectorStatus.AVAILABLE))
    last = await store.last_status()
    assert {k: v.status for k, v in last.items()} == {
        0: ConnectorStatus.AVAILABLE, 1: ConnectorStatus.CHARGING, 2: ConnectorStatus.UNAVAILABLE}


async def test_samples_are_kept_as_history_and_pruned_by_age_unless_still_queued(tmp_path):
    clock = SimClock(start=T0 + timedelta(days=40))
    store = await Store.open(tmp_path / "s.db", clock)
    try:
        await store.record(started("tx-1", at=T0))
        old_history = MeterSampled(1, T0, (energy(1),), tx_id="tx-1")
        old_queued = MeterSampled(1, T0 + timedelta(minutes=1), (energy(2),), tx_id="tx-1")
        recent = MeterSampled(1, T0 + timedelta(days=39), (energy(3),), tx_id="tx-1")
        grid = MeterSampled(0, T0 + timedelta(days=39, hours=1), (SampledValue("Power.Active.Import", 5, "W"),))
        await store.record(old_history, outbox=False)
        await store.record(old_queued)
        await store.record(recent, outbox=False)
        await store.record(grid, outbox=False)
        assert await store.samples() == [old_history, old_queued, recent, grid]
        assert await store.samples(connector_id=0) == [grid]
        assert await store.samples(since=T0 + timedelta(days=1)) == [recent, grid]
        assert await store.prune(35) == 1                       # only the old one nobody still needs
        assert await store.samples() == [old_queued, recent, grid]
        assert (await store.transaction("tx-1")).state == "open"     # other events are never pruned
        assert [type(e) for e in await store.tx_events("tx-1")] == [TransactionStarted, MeterSampled, MeterSampled]
        assert await store.prune(0) == 2
        assert await store.samples() == [old_queued]
        with pytest.raises(StoreError, match="older_than_days must be >= 0"):
            await store.prune(-1)
    finally:
        await store.close()


async def test_created_at_comes_from_the_injected_clock(tmp_path):
    clock = SimClock(start=T0)
    store = await Store.open(tmp_path / "s.db", clock)
    try:
        clock.jump_wall(timedelta(hours=3))
        await store.record(StatusChanged(1, T0, ConnectorStatus.AVAILABLE))
        (row,) = await store.outbox_head()
        assert row.created_at == T0 + timedelta(hours=3) and row.event.at == T0
    finally:
        await store.close()


async def test_concurrent_records_from_many_tasks_are_all_kept_in_order_per_task(store):
    async def connector(cid: int) -> list[int]:
        tx = f"tx-{cid}"
        seqs = [await store.record(started(tx, connector=cid))]
        for i in range(5):
            seqs.append(await store.record(MeterSampled(cid, T0, (energy(i),), tx_id=tx)))
        seqs.append(await store.record(TransactionEnded(cid, T0, tx, 5, StopReason.LOCAL)))
        return seqs

    results = await asyncio.gather(*(connector(c) for c in range(1, 6)))
    rows = {r.seq: r for r in await store.outbox_head(limit=1000)}
    assert len(rows) == 35
    for cid, seqs in enumerate(results, start=1):
        assert seqs == sorted(seqs)
        assert [rows[s].tx_seq for s in seqs] == list(range(7))
        assert {rows[s].tx_id for s in seqs} == {f"tx-{cid}"}
