"""OCPP 2.0.1 provisioning and availability against the test CSMS, in process: Pending
and Rejected boots, heartbeats, ChangeAvailability, TriggerMessage, Reset (B, F06, G)."""

from __future__ import annotations

import asyncio

import pytest

from hil.csms.server import CallErrorReply
from hil.model import Ev
from tests.integration.test_uplink_v201 import STATION, adapter, connector_status, csms_201, cv, site, wait_until


async def test_pending_boot_sends_nothing_else_until_accepted(tmp_path):
    async with csms_201(boot_status="Pending") as csms, site(tmp_path, csms=csms) as (rt, rig):
        await csms.wait_for("BootNotification", station=STATION)
        # the CSMS may configure a Pending station; the station answers
        got = await csms.call(STATION, "GetVariables", {"getVariableData": [cv("SecurityCtrlr", "Identity")]})
        assert got["getVariableResult"][0]["attributeValue"] == STATION
        refused = await csms.call(STATION, "RequestStartTransaction", {"idToken": {"idToken": "X", "type": "Central"},
                                                                       "remoteStartId": 1, "evseId": 1})
        assert refused["status"] == "Rejected"
        assert {m.action for m in csms.messages(STATION, direction="in", kind="call")} == {"BootNotification"}
        csms.behaviour.boot_status = "Accepted"
        assert (await csms.call(STATION, "TriggerMessage", {"requestedMessage": "BootNotification"}))["status"] == "Accepted"
        boot = await csms.wait_for("BootNotification", station=STATION, count=2)
        assert boot.payload["reason"] == "Triggered"
        await connector_status(csms, "Available")
        assert (await csms.call(STATION, "TriggerMessage", {"requestedMessage": "BootNotification"}))["status"] == "Rejected"


async def test_rejected_boot_answers_every_call_with_security_error(tmp_path):
    async with csms_201(boot_status="Rejected") as csms, site(tmp_path, csms=csms) as (rt, rig):
        await csms.wait_for("BootNotification", station=STATION)
        await wait_until(lambda: adapter(rt).boot_status == "Rejected")
        with pytest.raises(CallErrorReply) as err:
            await csms.call(STATION, "GetVariables", {"getVariableData": [cv("SecurityCtrlr", "Identity")]})
        assert err.value.code == "SecurityError"
        assert {m.action for m in csms.messages(STATION, direction="in", kind="call")} == {"BootNotification"}
        assert rt.sessions.link_online is False


async def test_heartbeats_on_the_boot_interval(tmp_path):
    async with csms_201(heartbeat_interval=1) as csms, site(tmp_path, csms=csms) as (rt, rig):
        await csms.wait_for("Heartbeat", station=STATION, timeout=5, count=2)
        assert rt.settings["HeartbeatInterval"] == 1


async def test_change_availability_of_an_evse_and_the_station(tmp_path):
    async with csms_201() as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        off = await csms.call(STATION, "ChangeAvailability", {"operationalStatus": "Inoperative", "evse": {"id": 1}})
        assert off == {"status": "Accepted"}
        await connector_status(csms, "Unavailable")
        unknown = await csms.call(STATION, "ChangeAvailability", {"operationalStatus": "Inoperative", "evse": {"id": 4}})
        assert unknown["status"] == "Rejected"
        bad_connector = await csms.call(STATION, "ChangeAvailability",
                                        {"operationalStatus": "Inoperative", "evse": {"id": 1, "connectorId": 2}})
        assert bad_connector["status"] == "Rejected"
        since = len(csms.log)
        on = await csms.call(STATION, "ChangeAvailability", {"operationalStatus": "Operative"})
        assert on == {"status": "Accepted"}
        await connector_status(csms, "Available", since=since)
        assert (await rt.store.kv_get("availability")) == {"1": True}
        # during a transaction an EVSE goes Inoperative when it ends
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "CARD-9")).accepted
        await wait_until(lambda: rt.sessions.connectors[1].tx is not None)
        later = await csms.call(STATION, "ChangeAvailability", {"operationalStatus": "Inoperative", "evse": {"id": 1}})
        assert later == {"status": "Scheduled"}


async def test_trigger_message(tmp_path):
    async with csms_201() as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        since = len(csms.log)
        assert (await csms.call(STATION, "TriggerMessage", {"requestedMessage": "Heartbeat"}))["status"] == "Accepted"
        await csms.wait_for("Heartbeat", station=STATION, since=since)
        assert (await csms.call(STATION, "TriggerMessage", {"requestedMessage": "StatusNotification",
                                                            "evse": {"id": 1, "connectorId": 1}}))["status"] == "Accepted"
        await connector_status(csms, "Available", since=since)
        assert (await csms.call(STATION, "TriggerMessage", {"requestedMessage": "MeterValues",
                                                            "evse": {"id": 1}}))["status"] == "Accepted"
        mv = await csms.wait_for("MeterValues", station=STATION, since=since)
        assert mv.payload["evseId"] == 1 and mv.payload["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"
        assert (await csms.call(STATION, "TriggerMessage", {"requestedMessage": "LogStatusNotification"}))["status"] == "Accepted"
        assert (await csms.wait_for("LogStatusNotification", station=STATION)).payload["status"] == "Idle"
        no_tx = await csms.call(STATION, "TriggerMessage", {"requestedMessage": "TransactionEvent", "evse": {"id": 1}})
        assert no_tx["status"] == "Rejected"
        unknown = await csms.call(STATION, "TriggerMessage", {"requestedMessage": "Heartbeat", "evse": {"id": 3}})
        assert unknown["status"] == "Rejected"
        certificate = await csms.call(STATION, "TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"})
        assert certificate["status"] == "Accepted"
        assert (await csms.wait_for("SignCertificate", station=STATION)).payload["certificateType"] == "ChargingStationCertificate"
        v2g = await csms.call(STATION, "TriggerMessage", {"requestedMessage": "SignV2GCertificate"})
        assert v2g["status"] == "NotImplemented"


async def test_immediate_reset_stops_the_transaction_and_the_next_boot_says_remote_reset(tmp_path):
    async with csms_201() as csms:
        async with site(tmp_path, csms=csms, expect_code=75) as (rt, rig):
            await connector_status(csms, "Available")
            rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
            await wait_until(lambda: rt.sessions.connectors[1].plugged)
            assert (await rt.sessions.present_tag(1, "CARD-R")).accepted
            await csms.wait_for("TransactionEvent", station=STATION,
                                predicate=lambda m: m.payload["eventType"] == "Started")
            per_evse = await csms.call(STATION, "Reset", {"type": "Immediate", "evseId": 1})
            assert per_evse["status"] == "Rejected"
            assert (await csms.call(STATION, "Reset", {"type": "Immediate"})) == {"status": "Accepted"}
            ended = await csms.wait_for("TransactionEvent", station=STATION, timeout=10,
                                        predicate=lambda m: m.payload["eventType"] == "Ended")
            await asyncio.wait_for(rt.stop.wait(), 10)
        assert ended.payload["transactionInfo"]["stoppedReason"] == "ImmediateReset"
        assert ended.payload["triggerReason"] == "ResetCommand"
        async with site(tmp_path, csms=csms) as (rt, rig):
            boot = await csms.wait_for("BootNotification", station=STATION, count=2)
            assert boot.payload["reason"] == "RemoteReset"
            await wait_until(lambda: rt.sessions.link_online)
            assert await rt.store.kv_get("v201.boot_reason") is None   # said once, then PowerUp again


async def test_on_idle_reset_waits_for_the_running_transaction(tmp_path):
    async with csms_201() as csms, site(tmp_path, csms=csms, expect_code=75) as (rt, rig):
        await connector_status(csms, "Available")
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "CARD-I")).accepted
        await wait_until(lambda: rt.sessions.connectors[1].tx is not None)
        tx_id = rt.sessions.connectors[1].tx.tx_id
        assert (await csms.call(STATION, "Reset", {"type": "OnIdle"})) == {"status": "Scheduled"}
        await asyncio.sleep(0)   # let the scheduled reset start waiting
        assert not rt.stop.is_set() and rt.sessions.connectors[1].tx is not None   # nothing stopped for it
        assert (await csms.call(STATION, "RequestStopTransaction", {"transactionId": tx_id}))["status"] == "Accepted"
        await asyncio.wait_for(rt.stop.wait(), 10)
        assert rt.restart
