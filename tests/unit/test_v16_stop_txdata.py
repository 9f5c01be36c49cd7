"""A 1.6 StopTransaction's transactionData for long transactions: bounded (MAX_STOP_SAMPLES
meterValues, MAX_STOP_VALUES sampledValues), thinned evenly with begin, end and the
first and last sample kept, schema-valid. Built from a real SQLite store in tmp_path."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case

from agent.clock import SimClock
from agent.sessions.events import MeterSampled, SampledValue, StopReason, TransactionEnded, TransactionStarted
from agent.store import Store, StoreError
from agent.store.events_log import spread
from agent.timefmt import utc_text
from agent.uplink.v16 import messages
from tests.ocpp_schemas import validate

T = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
ENERGY = "Energy.Active.Import.Register"
TX = "3f1c2a9e-0000-4000-8000-000000000002"


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "s.db", SimClock(T), synchronous="NORMAL")
    yield s
    await s.close()


def sample(i: int, context: str = "Sample.Periodic", voltages: bool = False) -> MeterSampled:
    values = [SampledValue(ENERGY, 1000.0 + i, "Wh"), SampledValue("Power.Active.Import", 11040.0, "W")]
    values += [SampledValue("Current.Import", 16.0, "A", phase=f"L{p}") for p in (1, 2, 3)]
    if voltages:
        values += [SampledValue("Voltage", 230.0, "V", phase=f"L{p}-N") for p in (1, 2, 3)]
    return MeterSampled(1, T + timedelta(seconds=10 * (i + 1)), tuple(values), context, TX)


async def transaction(store: Store, samples: list[MeterSampled]) -> TransactionEnded:
    await store.record(TransactionStarted(1, T, tx_id=TX, id_tag="CARD", meter_start_wh=1000))
    [row] = await store.outbox_head()
    await store.outbox_done(row.seq, csms_tx_id=42)
    for s in samples:
        await store.record(s, outbox=False)
    end = TransactionEnded(1, T + timedelta(seconds=10 * (len(samples) + 1)), tx_id=TX, meter_stop_wh=9000,
                           reason=StopReason.LOCAL)
    await store.record(end, outbox=False)
    return end


async def stop_payload(store: Store, end: TransactionEnded, sampled: tuple[str, ...], aligned=()) -> dict:
    built = await messages.build(end, store, {"StopTxnSampledData": sampled, "StopTxnAlignedData": aligned})
    p = remove_nones(snake_to_camel_case(serialize_as_dict(built)))
    validate("1.6", "StopTransaction", "call", p)
    return p


async def test_a_long_transaction_is_thinned_evenly_keeping_both_ends(store):
    samples = [sample(i) for i in range(1000)]
    end = await transaction(store, samples)
    p = await stop_payload(store, end, (ENERGY,))
    data = p["transactionData"]
    assert len(data) == messages.MAX_STOP_SAMPLES + 2
    assert data[0]["sampledValue"][0]["context"] == "Transaction.Begin"
    assert data[-1]["sampledValue"][0] == {"value": "9000", "context": "Transaction.End", "measurand": ENERGY,
                                           "location": "Outlet", "unit": "Wh"}
    middle = data[1:-1]
    assert middle[0]["timestamp"] == utc_text(samples[0].at) and middle[-1]["timestamp"] == utc_text(samples[-1].at)
    registers = [int(mv["sampledValue"][0]["value"]) - 1000 for mv in middle]
    gaps = {b - a for a, b in zip(registers, registers[1:])}
    assert gaps <= {10, 11}                          # even: 999 / 95 steps, never a hole
    assert len(json.dumps(p, separators=(",", ":"))) < 60_000


async def test_wide_samples_are_cut_to_the_value_budget(store):
    end = await transaction(store, [sample(i, voltages=True) for i in range(200)])
    p = await stop_payload(store, end, (ENERGY, "Current.Import", "Voltage"))
    middle = p["transactionData"][1:-1]
    assert sum(len(mv["sampledValue"]) for mv in middle) <= messages.MAX_STOP_VALUES
    assert len(middle) == messages.MAX_STOP_VALUES // 7
    assert len(json.dumps(p, separators=(",", ":"))) < 60_000


async def test_periodic_and_aligned_interleave_by_time_each_cut_to_its_key(store):
    samples = [sample(i, "Sample.Clock" if i % 3 == 0 else "Sample.Periodic") for i in range(9)]
    end = await transaction(store, samples)
    p = await stop_payload(store, end, ("Current.Import",), (ENERGY,))
    middle = p["transactionData"][1:-1]
    assert [mv["timestamp"] for mv in middle] == [utc_text(s.at) for s in samples]
    for mv, s in zip(middle, samples):
        want = ["Current.Import"] * 3 if s.context == "Sample.Periodic" else [ENERGY]
        assert [v["measurand"] for v in mv["sampledValue"]] == want
        assert {v["context"] for v in mv["sampledValue"]} == {s.context}
    # without the aligned key the clock samples go
    p = await stop_payload(store, end, ("Current.Import",))
    assert len(p["transactionData"]) == 2 + 6


async def test_tx_samples_query(store):
    samples = [sample(i, "Sample.Clock" if i % 2 else "Sample.Periodic") for i in range(10)]
    await transaction(store, samples)
    assert [s.at for s in await store.tx_samples(TX)] == [s.at for s in samples]
    assert [s.at for s in await store.tx_samples(TX, contexts=("Sample.Clock",))] == [s.at for s in samples[1::2]]
    assert [s.at for s in await store.tx_samples(TX, limit=3)] == [samples[i].at for i in (0, 4, 9)]
    assert await store.tx_samples("no-such-transaction") == []
    with pytest.raises(StoreError, match="tx_samples: limit must be an integer >= 1 or None, got 0"):
        await store.tx_samples(TX, limit=0)


def test_spread():
    assert spread(list(range(5)), None) == [0, 1, 2, 3, 4]
    assert spread(list(range(5)), 9) == [0, 1, 2, 3, 4]
    assert spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert spread(list(range(10)), 1) == [9]
    assert spread(list(range(1000)), 96) == sorted(set(spread(list(range(1000)), 96)))
