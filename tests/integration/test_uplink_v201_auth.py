"""OCPP 2.0.1 authorization and transaction delivery against the test CSMS, in process:
Authorize, the cache and the Local Authorization List with group ids (C, D); a lost
answer and refused TransactionEvents (E13: MessageAttempts/MessageAttemptInterval)."""

from __future__ import annotations

import asyncio

from hil.csms.rules import TagRule
from hil.model import Ev
from tests.integration.test_uplink_v201 import STATION, connector_status, csms_201, cv, site, wait_until


async def test_authorize_refused_tag_starts_nothing(tmp_path):
    async with csms_201(tags=TagRule.reject_prefix("BAD")) as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        rig.charger("terra").plug(Ev(), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        result = await rt.sessions.present_tag(1, "BAD-1")
        assert not result.accepted and result.status.value == "Invalid"
        auth = await csms.wait_for("Authorize", station=STATION)
        assert auth.payload["idToken"] == {"idToken": "BAD-1", "type": "ISO14443"}
        assert rt.sessions.connectors[1].tx is None
        assert not csms.messages(STATION, "TransactionEvent")
        # the CSMS's verdict is cached (AuthCacheCtrlr.Enabled): ClearCache empties it
        assert await rt.store.cache_count() == 1
        assert (await csms.call(STATION, "ClearCache", {})) == {"status": "Accepted"}
        assert await rt.store.cache_count() == 0


async def test_local_list_versions_and_a_group_member_stops_the_session(tmp_path):
    tags = TagRule(parents={"CARD-A": "FLEET", "CARD-B": "FLEET"})
    async with csms_201(tags=tags) as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        assert (await csms.call(STATION, "GetLocalListVersion", {})) == {"versionNumber": 0}
        full = await csms.call(STATION, "SendLocalList", {"versionNumber": 3, "updateType": "Full", "localAuthorizationList": [
            {"idToken": {"idToken": "CARD-A", "type": "ISO14443"},
             "idTokenInfo": {"status": "Accepted", "groupIdToken": {"idToken": "FLEET", "type": "Central"}}},
            {"idToken": {"idToken": "CARD-X", "type": "ISO14443"}, "idTokenInfo": {"status": "Blocked"}},
        ]})
        assert full == {"status": "Accepted"}
        assert (await csms.call(STATION, "GetLocalListVersion", {})) == {"versionNumber": 3}
        stale = await csms.call(STATION, "SendLocalList", {"versionNumber": 2, "updateType": "Differential"})
        assert stale["status"] == "VersionMismatch" and "not above" in stale["statusInfo"]["additionalInfo"]
        entry = await rt.store.list_get("card-a")
        assert entry.parent == "FLEET" and entry.status.value == "Accepted"

        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "CARD-A")).accepted
        await wait_until(lambda: rt.sessions.connectors[1].tx is not None)
        assert not (await rt.sessions.present_tag(1, "STRANGER")).accepted      # valid, but not of the group
        assert (await rt.sessions.present_tag(1, "CARD-B")).accepted            # same groupIdToken
        ended = await csms.wait_for("TransactionEvent", station=STATION,
                                    predicate=lambda m: m.payload["eventType"] == "Ended")
        assert ended.payload["transactionInfo"]["stoppedReason"] == "Local"
        assert ended.payload["triggerReason"] == "StopAuthorized"
        assert ended.payload["idToken"]["idToken"] == "CARD-B"


async def test_answer_lost_mid_call_is_resent_with_the_same_id_and_processed_once(tmp_path):
    async with csms_201() as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        csms.drop_on("TransactionEvent", after=True)     # processed, then the socket dies before the answer
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "CARD-1")).accepted
        await csms.wait_connected(STATION, number=2, timeout=10)
        await csms.wait_for("TransactionEvent", station=STATION, timeout=10, predicate=lambda m: m.retransmission)
        rig.charger("terra").unplug(rig.site.model.now)
        await wait_until(lambda: any(t.stop for t in csms.transactions.values()))
        [tx] = csms.transactions.values()
        assert tx.seq_nos == list(range(len(tx.events)))      # the retransmission was not processed again
        assert csms.retransmissions(STATION, "TransactionEvent") == 1


async def test_refused_transaction_events_are_retried_then_dropped_per_message_attempts(tmp_path):
    async with csms_201() as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        answer = await csms.call(STATION, "SetVariables", {"setVariableData": [
            {**cv("OCPPCommCtrlr", "MessageAttempts", instance="TransactionEvent"), "attributeValue": "2"},
            {**cv("OCPPCommCtrlr", "MessageAttemptInterval", instance="TransactionEvent"), "attributeValue": "1"},
        ]})
        assert [r["attributeStatus"] for r in answer["setVariableResult"]] == ["Accepted", "Accepted"]
        csms.fail_with("TransactionEvent", "InternalError", times=1)
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "CARD-1")).accepted
        await wait_until(lambda: csms.transactions)             # accepted at the 2nd attempt
        tries = csms.messages(STATION, "TransactionEvent", "in", "call", predicate=lambda m: m.payload["seqNo"] == 0)
        assert len(tries) == 2 and tries[0].unique_id == tries[1].unique_id   # the same message, the same id
        assert csms.messages(STATION, "TransactionEvent", "out", "error")
        [tx] = csms.transactions.values()
        assert tx.seq_nos[0] == 0 and tx.events[0]["eventType"] == "Started"
        csms.fail_with("TransactionEvent", "InternalError")   # refuse everything from now on
        rig.charger("terra").unplug(rig.site.model.now)
        async with asyncio.timeout(10):
            while not await rt.store.outbox_dropped():
                await asyncio.sleep(0.1)
        dropped = (await rt.store.outbox_dropped())[0]
        assert dropped.attempts == 2 and "CALLERROR after 2 attempt(s)" in dropped.reason
        csms.clear_faults()


async def test_offline_start_of_an_unknown_tag_is_deauthorized_when_the_csms_refuses_it(tmp_path):
    from tests.integration.test_uplink_v201 import free_port
    port = free_port()
    async with csms_201(port=port) as first, site(tmp_path, csms=first) as (rt, rig):
        await connector_status(first, "Available")
        answer = await first.call(STATION, "SetVariables", {"setVariableData": [
            {**cv("AuthCtrlr", "OfflineTxForUnknownIdEnabled"), "attributeValue": "true"}]})
        assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
        await first.stop()
        await wait_until(lambda: not rt.sessions.link_online)
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        result = await rt.sessions.present_tag(1, "BAD-9")
        assert result.accepted and result.source.value == "offline_unknown"
        await wait_until(lambda: rt.sessions.connectors[1].tx is not None)
        tx_id = rt.sessions.connectors[1].tx.tx_id
        async with csms_201(port=port, tags=TagRule.reject_prefix("BAD")) as second:
            await wait_until(lambda: tx_id in second.transactions and second.transactions[tx_id].stop, timeout=15)
            ended = second.transactions[tx_id].stop
            assert ended["transactionInfo"]["stoppedReason"] == "DeAuthorized"
            assert ended["triggerReason"] == "Deauthorized"
            assert second.transactions[tx_id].start["offline"] is True and "offline" not in ended
            assert (await rt.store.cache_get("bad-9")).status.value == "Invalid"   # the CSMS's verdict is cached
