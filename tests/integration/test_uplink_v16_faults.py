"""The 1.6 uplink when the CSMS misbehaves: gone, refusing, silent, dropping mid-call.

Same in-process site as test_uplink_v16.py. What must hold in every case: charging
goes on (sessions start and stop offline), and once the CSMS answers again it gets every
transaction message exactly once, in order, with the transactionIds it assigned.
"""

from __future__ import annotations

import asyncio

from hil.csms.rules import TagRule
from hil.csms.server import TestCsms
from hil.model import Ev
from tests.integration.test_uplink_v16 import STATION, site, wait_until


def tx_calls(csms: TestCsms) -> list[tuple[str, dict]]:
    return [(m.action, m.payload) for m in csms.messages(STATION, direction="in", kind="call", retransmissions=False)
            if m.action in ("StartTransaction", "StopTransaction")]


async def session_offline(rt, rig, tag: str) -> None:
    """Plug, authorize, charge a little, unplug: while the CSMS is away."""
    rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
    await wait_until(lambda: rt.sessions.connectors[1].plugged)
    result = await rt.sessions.present_tag(1, tag)
    assert result.accepted, result
    await wait_until(lambda: rt.sessions.connectors[1].tx is not None)
    e0 = rig.energy_register("terra")
    await wait_until(lambda: rig.energy_register("terra") > e0 + 1)
    rig.charger("terra").unplug(rig.site.model.now)
    await wait_until(lambda: rt.sessions.connectors[1].tx is None and not rt.sessions.connectors[1].plugged)


async def test_outage_three_sessions_delivered_once_in_order(tmp_path):
    port = _free_port()
    csms = TestCsms(ocpp="1.6", port=port, tags=TagRule.accept_all())
    await csms.start()
    async with site(tmp_path, csms=csms, extra="") as (rt, rig, _):
        # offline, unknown tags may charge: the outage must not stop the site
        await rt.settings.change("AllowOfflineTxForUnknownId", "true")
        await csms.wait_for("StatusNotification", station=STATION, predicate=lambda m: m.payload["connectorId"] == 1)
        await csms.stop()
        await wait_until(lambda: not rt.sessions.link_online)
        for tag in ("A1", "B2", "C3"):
            await session_offline(rt, rig, tag)
        assert await rt.store.outbox_len() >= 6
        back = TestCsms(ocpp="1.6", port=port, tags=TagRule.accept_all())
        await back.start()
        try:
            await wait_until(lambda: len([m for m in back.transactions.values() if m.stop]) == 3, timeout=20)
            calls = tx_calls(back)
            assert [a for a, _ in calls] == ["StartTransaction", "StopTransaction"] * 3
            assert [p["idTag"] for a, p in calls if a == "StartTransaction"] == ["A1", "B2", "C3"]
            for rec in back.transactions.values():
                assert rec.stop["transactionId"] == rec.key
                assert rec.stop["meterStop"] > rec.start["meterStart"]
            assert back.retransmissions(STATION) == 0
            # a status from the outage is history: the CSMS got the current one at boot
            first_status = back.messages(STATION, "StatusNotification", "in", "call")[0]
            boot = back.messages(STATION, "BootNotification", "in", "call")[0]
            assert first_status.seq > boot.seq
            async with asyncio.timeout(10):  # and the rest of the outbox drains
                while await rt.store.outbox_len():
                    await asyncio.sleep(0.05)
        finally:
            await back.stop()


async def test_callerror_retried_then_delivered(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        await rt.settings.change("TransactionMessageRetryInterval", "1")
        csms.fail_with("StartTransaction", "InternalError", times=2)
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "RETRY")).accepted
        await wait_until(lambda: csms.transactions, timeout=15)
        starts = csms.messages(STATION, "StartTransaction", "in", "call")
        assert len(starts) == 3                      # two refused, the third answered
        assert len({m.unique_id for m in starts}) == 1   # the same message each time
        # charging went on meanwhile
        assert rt.sessions.connectors[1].tx is not None


async def test_callerror_beyond_attempts_is_dropped_and_kept_for_diagnostics(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        await rt.settings.change("TransactionMessageAttempts", "2")
        await rt.settings.change("TransactionMessageRetryInterval", "1")
        csms.fail_with("StartTransaction", "InternalError")
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "DOOMED")).accepted
        # both attempts refused: wait for the CSMS's second CALLERROR, not the second call
        # (cleared between the two, the second Start would be accepted and its Stop sent)
        await wait_until(lambda: len(csms.messages(STATION, "StartTransaction", "out", "error")) == 2, timeout=15)
        csms.clear_faults()
        rig.charger("terra").unplug(rig.site.model.now)
        # the stop cannot name a transaction the CSMS never accepted: dropped too, and
        # the outbox moves on to what follows
        # the connector's end is in memory before its row is in the outbox: an empty outbox
        # alone can be the moment between the two, so wait for both drops and an empty outbox
        await wait_until(lambda: rt.sessions.connectors[1].tx is None)
        async with asyncio.timeout(15):
            while await rt.store.outbox_len() or (await rt.store.stats())["rows"]["outbox_dropped"] < 2:
                await asyncio.sleep(0.05)
        assert not csms.messages(STATION, "StopTransaction")


async def test_no_answer_then_same_message_again(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        csms.never_answer("StartTransaction", times=1)
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "SLOW")).accepted
        # call_timeout is 3 s in the test config; the retry reuses the message id
        await wait_until(lambda: csms.transactions, timeout=20)
        starts = csms.messages(STATION, "StartTransaction", "in", "call")
        assert len(starts) == 2 and starts[0].unique_id == starts[1].unique_id
        assert len(csms.transactions) == 1


async def test_socket_dropped_mid_call_loses_nothing(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        csms.drop_on("StartTransaction", times=1, after=True)   # processed, answer lost with the socket
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "DROP")).accepted
        await csms.wait_connected(STATION, timeout=15, number=2)
        async with asyncio.timeout(15):
            while await rt.store.outbox_len():
                await asyncio.sleep(0.05)
        starts = csms.messages(STATION, "StartTransaction", "in", "call")
        # the CSMS processed the first one; the second carries the same id and is
        # recognised as a retransmission (answered, not processed twice)
        assert len(starts) == 2 and starts[1].retransmission
        assert len(csms.transactions) == 1


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_offline_start_refused_later_stops_with_deauthorized(tmp_path):
    port = _free_port()
    csms = TestCsms(ocpp="1.6", port=port, tags=TagRule.accept_all())
    await csms.start()
    async with site(tmp_path, csms=csms) as (rt, rig, _):
        await rt.settings.change("AllowOfflineTxForUnknownId", "true")
        await csms.stop()
        await wait_until(lambda: not rt.sessions.link_online)
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "STOLEN")).accepted      # unknown, offline: allowed
        await wait_until(lambda: rt.sessions.connectors[1].tx is not None)
        back = TestCsms(ocpp="1.6", port=port, tags=TagRule.reject_prefix("STOLEN"))
        await back.start()
        try:
            stop = await back.wait_for("StopTransaction", station=STATION, timeout=20)
            assert stop.payload["reason"] == "DeAuthorized"
            assert rt.sessions.connectors[1].tx is None
            await wait_until(lambda: 1 in rt.poller.setpoints and not rt.poller.setpoints[1].enabled)
            # the refusal is remembered: the tag is not accepted offline again
            assert (await rt.store.cache_get("stolen")).status.value == "Invalid"
        finally:
            await back.stop()


async def test_clock_aligned_values_include_the_grid_on_connector_0(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        await rt.settings.change("ClockAlignedDataInterval", "1")
        mv = await csms.wait_for("MeterValues", station=STATION, timeout=10, predicate=lambda m: m.payload["connectorId"] == 0)
        [value] = mv.payload["meterValue"]
        assert {s["context"] for s in value["sampledValue"]} == {"Sample.Clock"}
        assert {s["location"] for s in value["sampledValue"]} == {"Inlet"}
        assert value["timestamp"].endswith(("Z", "+00:00"))


async def test_a_csms_answering_nothing_three_times_gets_a_fresh_connection(tmp_path, caplog):
    async with site(tmp_path) as (rt, rig, csms):
        csms.never_answer("StartTransaction", times=3)
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "MUTE")).accepted
        # call_timeout 3 s and a 5 s pause between tries: the third silence ends the connection
        await csms.wait_connected(STATION, timeout=40, number=2)
        await wait_until(lambda: csms.transactions, timeout=20)
        starts = csms.messages(STATION, "StartTransaction", "in", "call")
        assert len({m.unique_id for m in starts}) == 1 and len(starts) == 4     # the same message each time
        assert len(csms.transactions) == 1
        assert any("answered none of the last 3 CALLs" in r.message for r in caplog.records)
        assert rt.sessions.connectors[1].tx is not None                          # charging went on
