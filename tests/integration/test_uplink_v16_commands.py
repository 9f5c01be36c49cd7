"""CSMS-initiated 1.6 calls, each with its promised effect (same in-process site)."""

from __future__ import annotations

import asyncio

import pytest
from datetime import datetime, timedelta, timezone

from agent.timefmt import utc_text
from hil.csms.rules import TagRule
from hil.model import Ev
from tests.integration.test_uplink_v16 import STATION, site, wait_until


async def test_local_list_full_and_differential_then_offline_start(tmp_path):
    async with site(tmp_path, tags=TagRule.reject_prefix("")) as (rt, rig, csms):
        full = {"listVersion": 3, "updateType": "Full", "localAuthorizationList": [
            {"idTag": "LIST-1", "idTagInfo": {"status": "Accepted"}},
            {"idTag": "LIST-2", "idTagInfo": {"status": "Blocked"}}]}
        assert (await csms.call(STATION, "SendLocalList", full)) == {"status": "Accepted"}
        assert (await csms.call(STATION, "GetLocalListVersion", {})) == {"listVersion": 3}
        stale = {"listVersion": 2, "updateType": "Differential", "localAuthorizationList": []}
        assert (await csms.call(STATION, "SendLocalList", stale)) == {"status": "VersionMismatch"}
        diff = {"listVersion": 4, "updateType": "Differential", "localAuthorizationList": [{"idTag": "LIST-2"}]}
        assert (await csms.call(STATION, "SendLocalList", diff)) == {"status": "Accepted"}
        assert await rt.store.list_get("list-2") is None
        # the CSMS is gone; LocalAuthorizeOffline (default true) lets the listed tag charge
        await csms.stop()
        await wait_until(lambda: not rt.sessions.link_online)
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        result = await rt.sessions.present_tag(1, "list-1")        # idTags compare case-insensitively
        assert result.accepted and result.source.value == "local_list"
        await wait_until(lambda: rt.sessions.connectors[1].tx is not None)
        refused = await rt.sessions.present_tag(1, "STRANGER")    # stop attempt by an unknown tag
        assert not refused.accepted and rt.sessions.connectors[1].tx is not None


async def test_clear_cache(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        await rt.sessions.present_tag(1, "CACHED")
        assert await rt.store.cache_count() == 1
        assert (await csms.call(STATION, "ClearCache", {})) == {"status": "Accepted"}
        assert await rt.store.cache_count() == 0


async def test_reservation_holds_the_connector_for_its_tag(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        expiry = utc_text(datetime.now(timezone.utc) + timedelta(minutes=5))
        answer = await csms.call(STATION, "ReserveNow", {"connectorId": 1, "expiryDate": expiry, "idTag": "MINE", "reservationId": 7})
        assert answer == {"status": "Accepted"}
        await csms.wait_for("StatusNotification", station=STATION, predicate=lambda m: m.payload["status"] == "Reserved")
        assert (await csms.call(STATION, "ReserveNow", {"connectorId": 0, "expiryDate": expiry, "idTag": "X", "reservationId": 8})) == {"status": "Rejected"}
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        other = await rt.sessions.present_tag(1, "OTHER")
        assert not other.accepted and rt.sessions.connectors[1].tx is None
        assert (await rt.sessions.present_tag(1, "MINE")).accepted
        start = await csms.wait_for("StartTransaction", station=STATION)
        assert start.payload["reservationId"] == 7
        assert await rt.store.reservations_all() == []


async def test_reservation_cancel_and_expiry(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        soon = utc_text(datetime.now(timezone.utc) + timedelta(seconds=2))
        n = len(csms.log)
        assert (await csms.call(STATION, "ReserveNow", {"connectorId": 1, "expiryDate": soon, "idTag": "T", "reservationId": 1})) == {"status": "Accepted"}
        reserved = await csms.wait_for("StatusNotification", station=STATION, since=n, timeout=10,
                                       predicate=lambda m: m.payload["status"] == "Reserved")
        await csms.wait_for("StatusNotification", station=STATION, since=reserved.seq + 1, timeout=10,
                            predicate=lambda m: m.payload["status"] == "Available")
        assert await rt.store.reservations_all() == []
        later = utc_text(datetime.now(timezone.utc) + timedelta(hours=1))
        assert (await csms.call(STATION, "ReserveNow", {"connectorId": 1, "expiryDate": later, "idTag": "T", "reservationId": 2})) == {"status": "Accepted"}
        assert (await csms.call(STATION, "CancelReservation", {"reservationId": 2})) == {"status": "Accepted"}
        assert (await csms.call(STATION, "CancelReservation", {"reservationId": 2})) == {"status": "Rejected"}


async def test_trigger_message_sends_what_was_asked(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        await csms.wait_for("StatusNotification", station=STATION, predicate=lambda m: m.payload["connectorId"] == 1)
        for what in ("Heartbeat", "StatusNotification", "MeterValues", "BootNotification"):
            n = len(csms.log)
            answer = await csms.call(STATION, "TriggerMessage", {"requestedMessage": what, "connectorId": 1}
                                     if what in ("StatusNotification", "MeterValues") else {"requestedMessage": what})
            assert answer == {"status": "Accepted"}
            await csms.wait_for(what, station=STATION, since=n)
        assert (await csms.call(STATION, "TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 9})) == {"status": "Rejected"}


async def test_change_availability_scheduled_during_a_transaction(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "CARD")).accepted
        await csms.wait_for("StartTransaction", station=STATION)
        answer = await csms.call(STATION, "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})
        assert answer == {"status": "Scheduled"}
        assert rt.sessions.connectors[1].tx is not None
        rig.charger("terra").unplug(rig.site.model.now)
        await csms.wait_for("StopTransaction", station=STATION)
        await csms.wait_for("StatusNotification", station=STATION, predicate=lambda m: m.payload["status"] == "Unavailable")
        assert await rt.store.kv_get("availability") == {"1": False}


async def test_charging_profiles_validated_stored_and_tx_profile_needs_a_transaction(tmp_path):
    profile = {"chargingProfileId": 10, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
               "chargingProfileKind": "Absolute",
               "chargingSchedule": {"chargingRateUnit": "A", "startSchedule": "2026-01-01T00:00:00Z",
                                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0}]}}
    async with site(tmp_path) as (rt, rig, csms):
        ok = await csms.call(STATION, "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": profile})
        assert ok == {"status": "Accepted"}
        tx_profile = dict(profile, chargingProfileId=11, chargingProfilePurpose="TxProfile")
        no = await csms.call(STATION, "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": tx_profile})
        assert no == {"status": "Rejected"}
        max_on_1 = dict(profile, chargingProfileId=12, chargingProfilePurpose="ChargePointMaxProfile")
        assert (await csms.call(STATION, "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": max_on_1})) == {"status": "Rejected"}
        deep = dict(profile, chargingProfileId=13, stackLevel=99)
        assert (await csms.call(STATION, "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": deep})) == {"status": "Rejected"}
        stored = await rt.store.profiles_all()
        assert [p["chargingProfileId"] for p in stored] == [10]
        assert (await csms.call(STATION, "ClearChargingProfile", {"id": 10})) == {"status": "Accepted"}
        assert (await csms.call(STATION, "ClearChargingProfile", {"id": 10})) == {"status": "Unknown"}
        assert await rt.store.profiles_all() == []


async def test_soft_reset_stops_transactions_then_exits_for_a_restart(tmp_path):
    from agent.supervisor import EXIT_RESTART
    from tests.integration import test_uplink_v16 as base

    codes = []
    original = base.run_agent

    async def capture(*a, **kw):
        code = await original(*a, **kw)
        codes.append(code)
        return 0   # the fixture asserts a clean stop; the code is checked below

    base.run_agent = capture
    try:
        async with site(tmp_path) as (rt, rig, csms):
            rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
            await wait_until(lambda: rt.sessions.connectors[1].plugged)
            assert (await rt.sessions.present_tag(1, "CARD")).accepted
            await csms.wait_for("StartTransaction", station=STATION)
            assert (await csms.call(STATION, "Reset", {"type": "Soft"})) == {"status": "Accepted"}
            stop = await csms.wait_for("StopTransaction", station=STATION, timeout=10)
            assert stop.payload["reason"] == "SoftReset"
            async with asyncio.timeout(10):
                await rt.stop.wait()
    finally:
        base.run_agent = original
    assert codes == [EXIT_RESTART]


async def test_a_card_of_the_same_parent_stops_the_session_another_does_not(tmp_path):
    tags = TagRule(parents={"DAD": "FAMILY", "KID": "FAMILY", "NEIGHBOUR": "OTHERS"})
    async with site(tmp_path, tags=tags) as (rt, rig, csms):
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "DAD")).accepted
        await csms.wait_for("StartTransaction", station=STATION)
        assert not (await rt.sessions.present_tag(1, "NEIGHBOUR")).accepted
        assert rt.sessions.connectors[1].tx is not None
        assert (await rt.sessions.present_tag(1, "KID")).accepted
        stop = await csms.wait_for("StopTransaction", station=STATION)
        assert stop.payload["reason"] == "Local" and stop.payload["idTag"] == "KID"


async def test_a_date_that_is_not_a_date_gets_a_callerror_naming_the_field(tmp_path):
    from hil.csms.server import CallErrorReply
    async with site(tmp_path) as (rt, rig, csms):
        with pytest.raises(CallErrorReply) as err:
            await csms.call(STATION, "ReserveNow", {"connectorId": 1, "expiryDate": "next tuesday", "idTag": "T",
                                                     "reservationId": 3})
        assert err.value.code == "PropertyConstraintViolation" and "expiryDate" in err.value.description
        assert await rt.store.reservations_all() == []
