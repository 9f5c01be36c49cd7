"""OCPP 2.0.1 CSMS calls against the test CSMS, in process: RequestStart/StopTransaction,
GetTransactionStatus (F, E14), reservations (H), smart charging (K) including the same
composite schedule as 1.6 for the same profiles, UnlockConnector, DataTransfer,
SecurityEventNotification, and clean refusals of what is not implemented (L, N, M)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from agent.energy.wiring import energy_shape
from agent.timefmt import parse_utc, utc_text
from hil.csms.server import TestCsms
from hil.model import Ev
from tests.integration.test_uplink_v201 import STATION, connector_status, csms_201, free_port, site, wait_until


async def plugged(rt, rig) -> None:
    rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
    await wait_until(lambda: rt.sessions.connectors[1].plugged)


async def test_remote_start_stop_and_transaction_status(tmp_path):
    async with csms_201() as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        await plugged(rt, rig)
        start = await csms.call(STATION, "RequestStartTransaction", {
            "idToken": {"idToken": "REMOTE-1", "type": "Central"}, "remoteStartId": 42, "evseId": 1})
        assert start == {"status": "Accepted"}
        started = await csms.wait_for("TransactionEvent", station=STATION,
                                      predicate=lambda m: m.payload["eventType"] == "Started")
        assert started.payload["triggerReason"] == "RemoteStart"
        assert started.payload["transactionInfo"]["remoteStartId"] == 42
        assert started.payload["idToken"] == {"idToken": "REMOTE-1", "type": "Central"}
        tx_id = started.payload["transactionInfo"]["transactionId"]
        assert tx_id == rt.sessions.connectors[1].tx.tx_id
        busy = await csms.call(STATION, "RequestStartTransaction", {
            "idToken": {"idToken": "REMOTE-2", "type": "Central"}, "remoteStartId": 43, "evseId": 1})
        assert busy["status"] == "Rejected"
        await wait_until(lambda: tx_id in csms.transactions)
        async with asyncio.timeout(5):
            while (status := await csms.call(STATION, "GetTransactionStatus", {"transactionId": tx_id}))["messagesInQueue"]:
                await asyncio.sleep(0.1)
        assert status == {"ongoingIndicator": True, "messagesInQueue": False}
        assert (await csms.call(STATION, "RequestStopTransaction", {"transactionId": "not-ours"}))["status"] == "Rejected"
        assert (await csms.call(STATION, "RequestStopTransaction", {"transactionId": tx_id}))["status"] == "Accepted"
        await wait_until(lambda: csms.transactions[tx_id].stop is not None)
        ended = csms.transactions[tx_id].stop
        assert ended["transactionInfo"]["stoppedReason"] == "Remote" and ended["triggerReason"] == "RemoteStop"
        after = await csms.call(STATION, "GetTransactionStatus", {"transactionId": tx_id})
        assert after["ongoingIndicator"] is False
        unknown = await csms.call(STATION, "GetTransactionStatus", {"transactionId": "never-seen"})
        assert unknown == {"ongoingIndicator": False, "messagesInQueue": False}


async def test_remote_start_with_a_tx_profile(tmp_path):
    profile = {"id": 11, "stackLevel": 1, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
               "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                                     "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 8.0}]}]}
    async with csms_201() as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        await plugged(rt, rig)
        wrong = await csms.call(STATION, "RequestStartTransaction", {
            "idToken": {"idToken": "R", "type": "Central"}, "remoteStartId": 1,
            "chargingProfile": {**profile, "chargingProfilePurpose": "TxDefaultProfile"}, "evseId": 1})
        assert wrong["status"] == "Rejected" and wrong["statusInfo"]["reasonCode"] == "InvalidProfile"
        ok = await csms.call(STATION, "RequestStartTransaction", {
            "idToken": {"idToken": "R", "type": "Central"}, "remoteStartId": 2, "chargingProfile": profile, "evseId": 1})
        assert ok == {"status": "Accepted"}
        [entry] = rt.profiles.profiles
        assert entry["chargingProfilePurpose"] == "TxProfile" and entry["connector_id"] == 1
        assert entry["chargingSchedule"]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 8.0}]


async def test_reservations(tmp_path):
    async with csms_201() as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        expiry = utc_text(rt.clock.now() + timedelta(hours=1))
        token = {"idToken": "RES-1", "type": "ISO14443"}
        assert (await csms.call(STATION, "ReserveNow", {"id": 5, "expiryDateTime": expiry, "idToken": token}))[
            "status"] == "Rejected"   # no EVSE named: NonEvseSpecific is false
        since = len(csms.log)
        ok = await csms.call(STATION, "ReserveNow", {"id": 5, "expiryDateTime": expiry, "idToken": token, "evseId": 1})
        assert ok == {"status": "Accepted"}
        await connector_status(csms, "Reserved", since=since)
        assert (await csms.call(STATION, "CancelReservation", {"reservationId": 99}))["status"] == "Rejected"
        since = len(csms.log)
        assert (await csms.call(STATION, "CancelReservation", {"reservationId": 5}))["status"] == "Accepted"
        await connector_status(csms, "Available", since=since)
        soon = utc_text(rt.clock.now() + timedelta(seconds=1))
        assert (await csms.call(STATION, "ReserveNow", {"id": 6, "expiryDateTime": soon, "idToken": token,
                                                        "evseId": 1}))["status"] == "Accepted"
        update = await csms.wait_for("ReservationStatusUpdate", station=STATION, timeout=10)
        assert update.payload == {"reservationId": 6, "reservationUpdateStatus": "Expired"}
        assert await rt.store.reservations_all() == []


def schedule_201(pid: int, purpose: str, start: str, periods: list[tuple[int, float]], **kw) -> dict:
    return {"id": pid, "stackLevel": 0, "chargingProfilePurpose": purpose, "chargingProfileKind": "Absolute",
            "chargingSchedule": [{"id": 100 + pid, "startSchedule": start, "chargingRateUnit": "A", "duration": 7200,
                                  "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim, **kw} for s, lim in periods]}]}


def schedule_16(pid: int, purpose: str, start: str, periods: list[tuple[int, float]]) -> dict:
    return {"chargingProfileId": pid, "stackLevel": 0, "chargingProfilePurpose": purpose, "chargingProfileKind": "Absolute",
            "chargingSchedule": {"startSchedule": start, "chargingRateUnit": "A", "duration": 7200,
                                 "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods]}}


async def test_profiles_set_get_clear_and_refusals(tmp_path):
    async with csms_201() as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        start = utc_text(rt.clock.now())
        default = schedule_201(1, "TxDefaultProfile", start, [(0, 10.0), (1800, 6.0)], numberPhases=3)
        default["chargingSchedule"][0]["chargingSchedulePeriod"][1]["phaseToUse"] = 1
        default["chargingSchedule"][0]["chargingSchedulePeriod"][1]["numberPhases"] = 1
        assert (await csms.call(STATION, "SetChargingProfile", {"evseId": 1, "chargingProfile": default}))["status"] == "Accepted"
        station_max = schedule_201(2, "ChargingStationMaxProfile", start, [(0, 32.0)])
        assert (await csms.call(STATION, "SetChargingProfile", {"evseId": 0, "chargingProfile": station_max}))["status"] == "Accepted"
        for evse, bad, code in [
            (0, schedule_201(3, "ChargingStationExternalConstraints", start, [(0, 5.0)]), "InvalidProfile"),
            (1, schedule_201(4, "TxProfile", start, [(0, 5.0)]), "TxNotFound"),
            (1, {**schedule_201(5, "TxDefaultProfile", start, [(0, 5.0)]), "stackLevel": 99}, "InvalidProfile"),
            (7, schedule_201(6, "TxDefaultProfile", start, [(0, 5.0)]), "UnknownEvse"),
        ]:
            answer = await csms.call(STATION, "SetChargingProfile", {"evseId": evse, "chargingProfile": bad})
            assert answer["status"] == "Rejected" and answer["statusInfo"]["reasonCode"] == code, answer
        assert sorted(p["chargingProfileId"] for p in rt.profiles.profiles) == [1, 2]

        got = await csms.call(STATION, "GetChargingProfiles", {"requestId": 3, "chargingProfile": {}})
        assert got == {"status": "Accepted"}
        await csms.wait_for("ReportChargingProfiles", station=STATION,
                            predicate=lambda m: m.payload["requestId"] == 3 and not m.payload.get("tbc"))
        reports = csms.messages(STATION, "ReportChargingProfiles", "in", "call", predicate=lambda m: m.payload["requestId"] == 3)
        by_evse = {r.payload["evseId"]: r.payload["chargingProfile"] for r in reports}
        assert by_evse[1] == [default] and by_evse[0] == [station_max]    # given back as set, ids and phaseToUse too
        none = await csms.call(STATION, "GetChargingProfiles", {"requestId": 4, "chargingProfile": {
            "chargingProfilePurpose": "TxProfile"}})
        assert none == {"status": "NoProfiles"}
        ems = await csms.call(STATION, "GetChargingProfiles", {"requestId": 5, "chargingProfile": {
            "chargingLimitSource": ["EMS"]}})
        assert ems == {"status": "NoProfiles"}

        assert (await csms.call(STATION, "ClearChargingProfile", {"chargingProfileId": 1}))["status"] == "Accepted"
        assert (await csms.call(STATION, "ClearChargingProfile", {"chargingProfileId": 1}))["status"] == "Unknown"
        cleared = await csms.call(STATION, "ClearChargingProfile", {"chargingProfileCriteria": {
            "chargingProfilePurpose": "ChargingStationMaxProfile"}})
        assert cleared["status"] == "Accepted" and rt.profiles.profiles == []
        assert await rt.store.profiles_all() == []
        free = await csms.call(STATION, "GetCompositeSchedule", {"duration": 600, "evseId": 1})
        assert free["status"] == "Accepted"      # no profile left: the EVSE's own maximum
        assert free["schedule"]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 16.0}]
        unknown = await csms.call(STATION, "GetCompositeSchedule", {"duration": 600, "evseId": 5})
        assert unknown["status"] == "Rejected"


async def test_the_same_profiles_give_the_same_composite_schedule_in_1_6_and_2_0_1(tmp_path):
    """One agent, one profile book and one load-management controller; the profiles are
    set and the schedule asked once over 1.6 and once over 2.0.1 (offer_both: the CSMS
    decides the version)."""
    port = free_port()
    only16 = TestCsms(ocpp="1.6", port=port)
    await only16.start()
    try:
        async with site(tmp_path, csms=only16, uplink="offer_both = true") as (rt, rig):
            await only16.wait_connected(STATION, timeout=10)
            start = utc_text(rt.clock.now() - timedelta(minutes=10))
            for cid, p in [(1, schedule_16(1, "TxDefaultProfile", start, [(0, 16.0), (1200, 10.0), (3000, 6.0)])),
                           (0, schedule_16(2, "ChargePointMaxProfile", start, [(0, 32.0), (2400, 8.0)]))]:
                answer = await only16.call(STATION, "SetChargingProfile", {"connectorId": cid, "csChargingProfiles": p})
                assert answer == {"status": "Accepted"}
            book_16 = sorted((energy_shape(p) for p in rt.profiles.profiles), key=lambda p: p["chargingProfileId"])
            answer_16 = await only16.call(STATION, "GetCompositeSchedule", {"connectorId": 1, "duration": 5400,
                                                                            "chargingRateUnit": "A"})
            assert answer_16["status"] == "Accepted"
            via_16 = answer_16["chargingSchedule"]
            assert (await only16.call(STATION, "ClearChargingProfile", {}))["status"] == "Accepted"
            await only16.stop()
            async with csms_201(port=port) as csms:
                await connector_status(csms, "Available")
                for evse, p in [(1, schedule_201(1, "TxDefaultProfile", start, [(0, 16.0), (1200, 10.0), (3000, 6.0)])),
                                (0, schedule_201(2, "ChargingStationMaxProfile", start, [(0, 32.0), (2400, 8.0)]))]:
                    answer = await csms.call(STATION, "SetChargingProfile", {"evseId": evse, "chargingProfile": p})
                    assert answer == {"status": "Accepted"}
                book_201 = sorted((energy_shape(p) for p in rt.profiles.profiles), key=lambda p: p["chargingProfileId"])
                assert book_201 == book_16
                answer = await csms.call(STATION, "GetCompositeSchedule", {"duration": 5400, "evseId": 1,
                                                                           "chargingRateUnit": "A"})
        assert answer["status"] == "Accepted"
        via_201 = answer["schedule"]
        assert via_201["evseId"] == 1 and via_201["chargingRateUnit"] == "A" and via_201["duration"] == 5400

        def absolute(schedule, start_key):
            t0 = parse_utc(schedule[start_key])
            return [(t0 + timedelta(seconds=p["startPeriod"]), p["limit"]) for p in schedule["chargingSchedulePeriod"]]

        a16, a201 = absolute(via_16, "startSchedule"), absolute(via_201, "scheduleStart")
        assert [limit for _, limit in a16] == [limit for _, limit in a201] == [16.0, 10.0, 8.0, 6.0]
        assert all(abs((x - y).total_seconds()) <= 1.0 for (x, _), (y, _) in zip(a16, a201))
    finally:
        await only16.stop()


async def test_unlock_data_transfer_security_events_and_refusals(tmp_path):
    async with csms_201() as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        assert (await csms.call(STATION, "UnlockConnector", {"evseId": 7, "connectorId": 1}))["status"] == "UnknownConnector"
        unlock = await csms.call(STATION, "UnlockConnector", {"evseId": 1, "connectorId": 1})
        assert unlock["status"] == "UnlockFailed"
        assert (await csms.call(STATION, "DataTransfer", {"vendorId": "com.example"}))["status"] == "UnknownVendorId"
        await rt.sessions.security_event("SettingSystemTime", "clock stepped by 42 s")
        event = await csms.wait_for("SecurityEventNotification", station=STATION)
        assert event.payload["type"] == "SettingSystemTime" and event.payload["techInfo"] == "clock stepped by 42 s"
        firmware = await csms.call(STATION, "UpdateFirmware", {"requestId": 1, "firmware": {
            "location": "https://example.com/fw.bin", "retrieveDateTime": utc_text(rt.clock.now())}})
        assert firmware["status"] == "Rejected" and firmware["statusInfo"]["reasonCode"] == "NotSupported"
        log = await csms.call(STATION, "GetLog", {"logType": "DiagnosticsLog", "requestId": 2,
                                                  "log": {"remoteLocation": "ftp://127.0.0.1/logs"}})
        assert log["status"] == "Rejected" and log["statusInfo"]["reasonCode"] == "InvalidURL"
        cert = await csms.call(STATION, "InstallCertificate", {"certificateType": "CSMSRootCertificate",
                                                               "certificate": "-----BEGIN CERTIFICATE-----"})
        assert cert["status"] == "Rejected"
        assert (await csms.call(STATION, "GetInstalledCertificateIds", {}))["status"] == "NotFound"


@pytest.mark.parametrize("purpose", ["TxProfile"])
async def test_tx_profile_for_the_running_transaction(tmp_path, purpose):
    async with csms_201() as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        await plugged(rt, rig)
        assert (await rt.sessions.present_tag(1, "CARD-1")).accepted
        await wait_until(lambda: rt.sessions.connectors[1].tx is not None)
        tx_id = rt.sessions.connectors[1].tx.tx_id
        profile = {**schedule_201(9, purpose, utc_text(rt.clock.now()), [(0, 12.0)]), "transactionId": tx_id}
        assert (await csms.call(STATION, "SetChargingProfile", {"evseId": 1, "chargingProfile": profile}))["status"] == "Accepted"
        [entry] = rt.profiles.profiles
        assert entry["evsite_tx_id"] == tx_id and "transactionId" not in entry
        wrong = {**profile, "id": 10, "transactionId": "someone-else"}
        assert (await csms.call(STATION, "SetChargingProfile", {"evseId": 1, "chargingProfile": wrong}))["status"] == "Rejected"
        assert (await csms.call(STATION, "RequestStopTransaction", {"transactionId": tx_id}))["status"] == "Accepted"
        await wait_until(lambda: rt.profiles.profiles == [])     # a TxProfile lives as long as its transaction


async def test_refused_notifications_cost_neither_the_link_nor_later_messages(tmp_path):
    async with csms_201() as csms:
        csms.fail_with("StatusNotification", "InternalError", times=1)      # the first one, at connect
        csms.fail_with("ReservationStatusUpdate", "InternalError", times=1)
        async with site(tmp_path, csms=csms) as (rt, rig):
            await csms.wait_for("StatusNotification", station=STATION, timeout=10)
            for rid in (1, 2):
                since = len(csms.log)
                ok = await csms.call(STATION, "ReserveNow", {
                    "id": rid, "expiryDateTime": utc_text(rt.clock.now() + timedelta(seconds=1)), "evseId": 1,
                    "idToken": {"idToken": "R", "type": "ISO14443"}})
                assert ok == {"status": "Accepted"}
                update = await csms.wait_for("ReservationStatusUpdate", station=STATION, timeout=10, since=since)
                assert update.payload["reservationId"] == rid
                await connector_status(csms, "Available", since=since)
            refused = csms.messages(STATION, "ReservationStatusUpdate", "out", "error")
            assert len(refused) == 1 and csms.connection_count(STATION) == 1
