"""Queued events as OCPP 2.0.1 messages (agent/uplink/v201/messages.py), built from real
outbox rows of a SQLite store in tmp_path and checked against the OCA 2.0.1 schemas."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case

from agent.clock import SimClock
from agent.sessions.connector import charging_state
from agent.sessions.events import (
    ChargingState, ConnectorStatus, MeterSampled, SampledValue, SecurityEvent, StatusChanged, StopReason,
    TransactionEnded, TransactionStarted, TransactionUpdated, Trigger,
)
from agent.store import Store
from agent.uplink.outbox import Skip
from agent.uplink.v201 import messages
from tests.ocpp_schemas import validate

T = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
ENERGY = "Energy.Active.Import.Register"


def payload(call) -> dict:
    return remove_nones(snake_to_camel_case(serialize_as_dict(call)))


def checked(call) -> dict:
    p = payload(call)
    validate("2.0.1", type(call).__name__, "call", p)
    return p


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "s.db", SimClock(T))
    yield s
    await s.close()


async def rows_of(store, *events):
    for e in events:
        await store.record(e)
    return await store.outbox_head(limit=100)


#: the one setting messages.build reads (TxEndedMeasurands), typed as the registry types it
SETTINGS = {"StopTxnSampledData": (ENERGY,)}


async def test_a_whole_transaction_numbers_its_events_and_is_rebuilt_identically(store):
    tx = "3f1c2a9e-0000-4000-8000-000000000001"
    energy = (SampledValue(ENERGY, 1234.5, "Wh"), SampledValue("Current.Import", 15.5, "A", phase="L1"))
    rows = await rows_of(
        store,
        TransactionStarted(1, T, tx_id=tx, id_tag="CARD-1", meter_start_wh=1000, trigger=Trigger.CABLE_PLUGGED_IN,
                           reservation_id=7),
        TransactionUpdated(1, T + timedelta(seconds=1), tx, Trigger.CHARGING_STATE_CHANGED, ChargingState.CHARGING),
        MeterSampled(1, T + timedelta(seconds=60), energy, "Sample.Periodic", tx),
        MeterSampled(1, T + timedelta(seconds=90), energy, "Sample.Clock", tx, offline=True),
        TransactionEnded(1, T + timedelta(seconds=120), tx_id=tx, meter_stop_wh=1500, reason=StopReason.LOCAL,
                         id_tag="CARD-2", trigger=Trigger.STOP_AUTHORIZED),
    )
    built = [checked(await messages.build(r, store, SETTINGS)) for r in rows]
    assert [b["seqNo"] for b in built] == [0, 1, 2, 3, 4]
    assert [b["eventType"] for b in built] == ["Started", "Updated", "Updated", "Updated", "Ended"]
    assert [b["triggerReason"] for b in built] == ["CablePluggedIn", "ChargingStateChanged", "MeterValuePeriodic",
                                                   "MeterValueClock", "StopAuthorized"]
    assert all(b["transactionInfo"]["transactionId"] == tx for b in built)
    started, state, periodic, clock, ended = built
    assert started["idToken"] == {"idToken": "CARD-1", "type": "ISO14443"} and started["reservationId"] == 7
    assert started["meterValue"][0]["sampledValue"][0] == {
        "value": 1000, "context": "Transaction.Begin", "measurand": ENERGY, "location": "Outlet",
        "unitOfMeasure": {"unit": "Wh"}}
    assert state["transactionInfo"]["chargingState"] == "Charging"
    assert periodic["meterValue"][0]["sampledValue"][1]["phase"] == "L1"
    assert "offline" not in periodic and clock["offline"] is True
    assert ended["transactionInfo"]["stoppedReason"] == "Local" and ended["idToken"]["idToken"] == "CARD-2"
    contexts = [(s["context"], s["value"]) for mv in ended["meterValue"] for s in mv["sampledValue"]]
    assert contexts == [("Transaction.Begin", 1000), ("Transaction.End", 1500)]
    again = [payload(await messages.build(r, store, SETTINGS)) for r in rows]
    assert again == built          # a retry sends the very same payload


@pytest.mark.parametrize("reason", list(StopReason))
async def test_every_stop_reason_is_a_2_0_1_stopped_reason(store, reason):
    rows = await rows_of(store, TransactionStarted(2, T, tx_id="t", id_tag="A", meter_start_wh=0),
                         TransactionEnded(2, T, tx_id="t", meter_stop_wh=5, reason=reason))
    ended = checked(await messages.build(rows[-1], store, SETTINGS))
    assert ended["transactionInfo"]["stoppedReason"] == messages.STOPPED_REASON[reason]
    assert "idToken" not in ended


async def test_no_ended_meter_values_when_tx_ended_measurands_are_empty(store):
    rows = await rows_of(store, TransactionStarted(1, T, tx_id="t", id_tag="A", meter_start_wh=0),
                         TransactionEnded(1, T, tx_id="t", meter_stop_wh=5, reason=StopReason.REMOTE))
    assert "meterValue" not in checked(await messages.build(rows[-1], store, {"StopTxnSampledData": ()}))


@pytest.mark.parametrize("status, want", [
    (ConnectorStatus.AVAILABLE, "Available"), (ConnectorStatus.PREPARING, "Occupied"),
    (ConnectorStatus.CHARGING, "Occupied"), (ConnectorStatus.SUSPENDED_EV, "Occupied"),
    (ConnectorStatus.SUSPENDED_EVSE, "Occupied"), (ConnectorStatus.FINISHING, "Occupied"),
    (ConnectorStatus.RESERVED, "Reserved"), (ConnectorStatus.UNAVAILABLE, "Unavailable"),
    (ConnectorStatus.FAULTED, "Faulted"),
])
async def test_statuses_map_down_to_the_2_0_1_words(store, status, want):
    [row] = await rows_of(store, StatusChanged(3, T, status))
    p = checked(await messages.build(row, store, SETTINGS))
    assert p == {"timestamp": "2026-03-01T12:00:00.000Z", "connectorStatus": want, "evseId": 3, "connectorId": 1}


async def test_station_status_is_skipped_and_other_events_have_their_messages(store):
    rows = await rows_of(store, StatusChanged(0, T, ConnectorStatus.FAULTED, "OtherError"),
                         MeterSampled(0, T, (SampledValue(ENERGY, 9e6, "Wh", location="Inlet"),), "Sample.Clock"),
                         SecurityEvent(0, T, "SettingSystemTime", "x" * 300))
    with pytest.raises(Skip, match="station as a whole"):
        await messages.build(rows[0], store, SETTINGS)
    grid = checked(await messages.build(rows[1], store, SETTINGS))
    assert grid["evseId"] == 0 and grid["meterValue"][0]["sampledValue"][0]["location"] == "Inlet"
    security = checked(await messages.build(rows[2], store, SETTINGS))
    assert security["type"] == "SettingSystemTime" and len(security["techInfo"]) == 255


@pytest.mark.parametrize("status, plugged, want", [
    (ConnectorStatus.CHARGING, True, ChargingState.CHARGING),
    (ConnectorStatus.SUSPENDED_EV, True, ChargingState.SUSPENDED_EV),
    (ConnectorStatus.SUSPENDED_EVSE, True, ChargingState.SUSPENDED_EVSE),
    (ConnectorStatus.SUSPENDED_EV, False, ChargingState.IDLE),
    (ConnectorStatus.FAULTED, True, None),
])
def test_charging_state_follows_the_connector_status(status, plugged, want):
    assert charging_state(status, plugged) is want
