"""StopTransaction.req's transactionData (OCPP 1.6 section 4.10; StopTxnSampledData and
StopTxnAlignedData, 9.1): Transaction.Begin, the transaction's sampled (Sample.Periodic)
and clock-aligned (Sample.Clock) values cut to those keys' measurands, Transaction.End.

Against the in-process site of test_uplink_v16 (rig on loopback Modbus, real store file,
test CSMS that checks every frame against the 1.6 schemas). The samples a stop must
carry are the ones the CSMS got as MeterValues for the same transaction: the stop is
compared with them, value for value.
"""

from __future__ import annotations

from typing import Any

from agent.timefmt import utc_text
from hil.csms.rules import TagRule
from hil.csms.server import TestCsms
from hil.model import Ev
from tests.integration.test_uplink_v16 import STATION, site, wait_until

ENERGY = "Energy.Active.Import.Register"
CURRENT = "Current.Import"


def tx_meter_values(csms: TestCsms, tx_key: Any, context: str) -> list[dict[str, Any]]:
    """The meterValue entries of ``context`` the CSMS got in MeterValues of transaction
    ``tx_key`` (retransmissions counted once), in the order received."""
    out = []
    for m in csms.messages(STATION, "MeterValues", "in", "call"):
        if m.retransmission or m.payload.get("transactionId") != tx_key:
            continue
        for mv in m.payload["meterValue"]:
            if mv["sampledValue"] and mv["sampledValue"][0].get("context") == context:
                out.append(mv)
    return out


def cut(mv: dict[str, Any], measurands: set[str]) -> dict[str, Any]:
    return {"timestamp": mv["timestamp"], "sampledValue": [v for v in mv["sampledValue"] if v["measurand"] in measurands]}


def check_frame(stop: Any, start: Any) -> list[dict[str, Any]]:
    """Begin and end around the data, timestamps never going back; the middle part."""
    data = stop.payload["transactionData"]
    assert data[0]["sampledValue"] == [{"value": str(start.payload["meterStart"]), "context": "Transaction.Begin",
                                        "measurand": ENERGY, "location": "Outlet", "unit": "Wh"}]
    assert data[0]["timestamp"] == start.payload["timestamp"]
    assert data[-1]["sampledValue"][0]["context"] == "Transaction.End"
    assert data[-1]["sampledValue"][0]["value"] == str(stop.payload["meterStop"])
    assert data[-1]["timestamp"] == stop.payload["timestamp"]
    stamps = [mv["timestamp"] for mv in data]        # fixed-width UTC text: sorts as time
    assert stamps == sorted(stamps), stamps
    return data[1:-1]


async def charge(rt: Any, rig: Any, csms: TestCsms, tag: str) -> Any:
    rig.charger("terra").plug(Ev(capacity_kwh=40, soc=0.5, ramp_delay=0.1), rig.site.model.now)
    await wait_until(lambda: rt.sessions.connectors[1].plugged)
    assert (await rt.sessions.present_tag(1, tag)).accepted
    return await csms.wait_for("StartTransaction", station=STATION, timeout=10,
                               predicate=lambda m: m.payload["idTag"] == tag)


async def test_stop_carries_the_periodic_samples_of_the_stop_measurands(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        # MeterValuesSampledData keeps its default (energy, power, current): power must be left out
        await rt.settings.change("StopTxnSampledData", f"{ENERGY},{CURRENT}")
        await rt.settings.change("MeterValueSampleInterval", "1")
        start = await charge(rt, rig, csms, "CARD-1")
        await wait_until(lambda: csms.transactions)
        [tx] = csms.transactions.values()
        await wait_until(lambda: len(tx_meter_values(csms, tx.key, "Sample.Periodic")) >= 3, timeout=15)
        rig.charger("terra").unplug(rig.site.model.now)
        stop = await csms.wait_for("StopTransaction", station=STATION, timeout=10)
        sent = tx_meter_values(csms, tx.key, "Sample.Periodic")   # all of them came before the stop (in order)
    middle = check_frame(stop, start)
    assert len(middle) >= 3
    assert {v["measurand"] for mv in middle for v in mv["sampledValue"]} == {ENERGY, CURRENT}
    assert all(v["context"] == "Sample.Periodic" for mv in middle for v in mv["sampledValue"])
    assert middle == [cut(mv, {ENERGY, CURRENT}) for mv in sent]
    stamps = [mv["timestamp"] for mv in middle]
    assert stamps == sorted(set(stamps))                                  # strictly increasing
    assert any(v["measurand"] == "Power.Active.Import" for mv in sent for v in mv["sampledValue"])


async def test_empty_stop_measurands_send_begin_and_end_only(tmp_path):
    """The key is read when the stop is built: empty gives today's begin/end pair, and
    set again, the next stop of the same agent carries its samples."""
    async with site(tmp_path) as (rt, rig, csms):
        await rt.settings.change("StopTxnSampledData", "")
        await rt.settings.change("MeterValueSampleInterval", "1")
        stops = []
        for tag in ("CARD-2", "CARD-3"):
            start = await charge(rt, rig, csms, tag)
            await wait_until(lambda: len(csms.transactions) == len(stops) + 1)
            tx = csms.transactions[start_key(csms, tag)]
            await wait_until(lambda: len(tx_meter_values(csms, tx.key, "Sample.Periodic")) >= 2, timeout=15)
            rig.charger("terra").unplug(rig.site.model.now)
            stop = await csms.wait_for("StopTransaction", station=STATION, timeout=10,
                                       predicate=lambda m: m.payload["transactionId"] == tx.key)
            stops.append((start, stop))
            await wait_until(lambda: rt.sessions.connectors[1].tx is None and not rt.sessions.connectors[1].plugged)
            await rt.settings.change("StopTxnSampledData", ENERGY)
    (start, stop), (start2, stop2) = stops
    assert check_frame(stop, start) == []
    assert len(stop.payload["transactionData"]) == 2
    middle = check_frame(stop2, start2)
    assert len(middle) >= 2
    assert all([v["measurand"] for v in mv["sampledValue"]] == [ENERGY] for mv in middle)


def start_key(csms: TestCsms, tag: str) -> Any:
    [key] = [k for k, tx in csms.transactions.items() if tx.start["idTag"] == tag]
    return key


async def test_stop_carries_the_clock_aligned_samples_of_the_aligned_measurands(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        # MeterValuesAlignedData keeps its default (energy, power); periodic samples stay off
        await rt.settings.change("StopTxnAlignedData", ENERGY)
        await rt.settings.change("ClockAlignedDataInterval", "1")
        start = await charge(rt, rig, csms, "CARD-5")
        await wait_until(lambda: csms.transactions)
        [tx] = csms.transactions.values()
        await wait_until(lambda: len(tx_meter_values(csms, tx.key, "Sample.Clock")) >= 2, timeout=15)
        rig.charger("terra").unplug(rig.site.model.now)
        stop = await csms.wait_for("StopTransaction", station=STATION, timeout=10)
        sent = tx_meter_values(csms, tx.key, "Sample.Clock")
    middle = check_frame(stop, start)
    assert len(middle) >= 2
    assert middle == [cut(mv, {ENERGY}) for mv in sent]
    assert all(v["context"] == "Sample.Clock" and v["measurand"] == ENERGY for mv in middle for v in mv["sampledValue"])


async def test_samples_taken_before_a_restart_reach_the_stop(tmp_path):
    """The agent stops with the transaction running; the new agent (same store file)
    ends it with PowerLoss, and that stop carries the samples the first one took."""
    async with TestCsms(ocpp="1.6", tags=TagRule.accept_all()) as csms:
        async with site(tmp_path, csms=csms) as (rt, rig, _):
            await rt.settings.change("StopTxnSampledData", f"{ENERGY},{CURRENT}")   # stored: the next agent reads it
            await rt.settings.change("MeterValueSampleInterval", "1")
            start = await charge(rt, rig, csms, "CARD-4")
            await wait_until(lambda: csms.transactions)
            [tx] = csms.transactions.values()
            await wait_until(lambda: len(tx_meter_values(csms, tx.key, "Sample.Periodic")) >= 3, timeout=15)
            before = await rt.store.tx_samples(rt.sessions.connectors[1].tx.tx_id)
        assert not csms.messages(STATION, "StopTransaction")
        async with site(tmp_path, csms=csms) as (rt, rig, _):
            stop = await csms.wait_for("StopTransaction", station=STATION, timeout=15)
            sent = tx_meter_values(csms, tx.key, "Sample.Periodic")
    assert stop.payload["reason"] == "PowerLoss"
    middle = check_frame(stop, start)
    assert middle == [cut(mv, {ENERGY, CURRENT}) for mv in sent]
    # every sample the first agent stored is in the stop the second one sent
    assert len(before) >= 3
    assert {utc_text(s.at) for s in before} <= {mv["timestamp"] for mv in middle}
