"""Queued events as OCPP 2.0.1 messages, rebuilt the same way on every retry.

Everything a 2.0.1 message needs is in the event and its outbox row: the transactionId
is the station's own (``tx_id``), the seqNo is the row's ``tx_seq`` (fixed when the
event was recorded, so a retry or a restart never renumbers), the offline flag was set
when the event happened. Unlike 1.6 nothing waits for an id from the CSMS, so no event
of a transaction is ever undeliverable because an earlier one was refused.

Vocabulary mapping (the sessions speak 1.6 words):

- status: Preparing, Charging, SuspendedEV/EVSE and Finishing are all ``Occupied``;
  what the EV is doing goes into the transaction's chargingState instead.
- connector N is EVSE N with its connector 1; connector 0 (the station) has no
  StatusNotification in 2.0.1 and clock-aligned grid values go out as MeterValues for
  evseId 0.
- stoppedReason: HardReset -> ImmediateReset, SoftReset -> Reboot, UnlockCommand ->
  Other (2.0.1 has the trigger, not the reason).
"""

from __future__ import annotations

from typing import Any

from ocpp.v201 import call

from agent.sessions.events import (
    ConnectorStatus, Event, MeterSampled, SampledValue, SecurityEvent, StatusChanged, StopReason, TransactionEnded,
    TransactionStarted, TransactionUpdated,
)
from agent.timefmt import utc_text
from agent.uplink.outbox import Drop, Skip

STATUS = {
    ConnectorStatus.AVAILABLE: "Available",
    ConnectorStatus.PREPARING: "Occupied",
    ConnectorStatus.CHARGING: "Occupied",
    ConnectorStatus.SUSPENDED_EV: "Occupied",
    ConnectorStatus.SUSPENDED_EVSE: "Occupied",
    ConnectorStatus.FINISHING: "Occupied",
    ConnectorStatus.RESERVED: "Reserved",
    ConnectorStatus.UNAVAILABLE: "Unavailable",
    ConnectorStatus.FAULTED: "Faulted",
}

STOPPED_REASON = {
    StopReason.LOCAL: "Local", StopReason.REMOTE: "Remote", StopReason.EV_DISCONNECTED: "EVDisconnected",
    StopReason.POWER_LOSS: "PowerLoss", StopReason.DEAUTHORIZED: "DeAuthorized", StopReason.REBOOT: "Reboot",
    StopReason.HARD_RESET: "ImmediateReset", StopReason.SOFT_RESET: "Reboot",
    StopReason.EMERGENCY_STOP: "EmergencyStop", StopReason.UNLOCK_COMMAND: "Other", StopReason.OTHER: "Other",
}

ENERGY = "Energy.Active.Import.Register"
#: the connector of every EVSE (one per charger)
CONNECTOR = 1


def sampled_value(v: SampledValue, context: str) -> dict[str, Any]:
    out: dict[str, Any] = {"value": _number(v.value), "context": context, "measurand": v.measurand,
                           "location": v.location}
    if v.phase:
        out["phase"] = v.phase
    if v.unit:
        out["unitOfMeasure"] = {"unit": v.unit}
    return out


def meter_value(at: Any, values: tuple[SampledValue, ...], context: str) -> dict[str, Any]:
    return {"timestamp": utc_text(at), "sampledValue": [sampled_value(v, context) for v in values]}


def status_notification(connector_id: int, status: ConnectorStatus, at: Any) -> call.StatusNotification:
    return call.StatusNotification(timestamp=utc_text(at), connector_status=STATUS[status], evse_id=connector_id,
                                   connector_id=CONNECTOR)


def id_token(tag: str, token_type: str = "ISO14443") -> dict[str, str]:
    return {"idToken": tag, "type": token_type}


def transaction_event(event: Event, seq_no: int, *, event_type: str, trigger: str, info: dict[str, Any],
                      meter_values: list[dict[str, Any]] | None = None, token: dict[str, str] | None = None,
                      reservation_id: int | None = None, offline: bool = False) -> call.TransactionEvent:
    return call.TransactionEvent(
        event_type=event_type, timestamp=utc_text(event.at), trigger_reason=trigger, seq_no=seq_no,
        transaction_info=info, meter_value=meter_values or None, offline=True if offline else None,
        evse={"id": event.connector_id, "connectorId": CONNECTOR}, id_token=token, reservation_id=reservation_id,
    )


async def build(row: Any, store: Any, settings: Any) -> Any:
    """The 2.0.1 call for a queued row; raises Skip (nothing to send) or Drop."""
    event = row.event
    if isinstance(event, (TransactionStarted, TransactionUpdated, TransactionEnded)) or (
            isinstance(event, MeterSampled) and event.tx_id is not None):
        if row.tx_seq is None:
            raise Drop(f"transaction event of {event.tx_id} has no seqNo (recorded without an outbox row?)")
        return await _transaction(event, row.tx_seq, store, settings)
    if isinstance(event, MeterSampled):
        return call.MeterValues(evse_id=event.connector_id, meter_value=[meter_value(event.at, event.values, event.context)])
    if isinstance(event, StatusChanged):
        if event.connector_id == 0:
            raise Skip("2.0.1 has no StatusNotification for the station as a whole")
        return status_notification(event.connector_id, event.status, event.at)
    if isinstance(event, SecurityEvent):
        return call.SecurityEventNotification(type=event.type[:50], timestamp=utc_text(event.at),
                                              tech_info=(event.tech_info or None) and event.tech_info[:255])
    raise Drop(f"no OCPP 2.0.1 message for event kind {event.kind!r}")


async def _transaction(event: Any, seq_no: int, store: Any, settings: Any) -> call.TransactionEvent:
    info: dict[str, Any] = {"transactionId": event.tx_id}
    if isinstance(event, TransactionStarted):
        if event.remote_start_id is not None:
            info["remoteStartId"] = event.remote_start_id
        begin = SampledValue(ENERGY, float(event.meter_start_wh), "Wh")
        return transaction_event(event, seq_no, event_type="Started", trigger=event.trigger.value, info=info,
                                 meter_values=[meter_value(event.at, (begin,), "Transaction.Begin")],
                                 token=id_token(event.id_tag, event.id_token_type),
                                 reservation_id=event.reservation_id, offline=event.offline)
    if isinstance(event, TransactionUpdated):
        if event.charging_state is not None:
            info["chargingState"] = event.charging_state.value
        return transaction_event(event, seq_no, event_type="Updated", trigger=event.trigger.value, info=info,
                                 offline=event.offline)
    if isinstance(event, MeterSampled):
        trigger = "MeterValueClock" if event.context == "Sample.Clock" else "MeterValuePeriodic"
        return transaction_event(event, seq_no, event_type="Updated", trigger=trigger, info=info,
                                 meter_values=[meter_value(event.at, event.values, event.context)],
                                 offline=event.offline)
    assert isinstance(event, TransactionEnded)
    info["stoppedReason"] = STOPPED_REASON[event.reason]
    values = None
    if ENERGY in settings["StopTxnSampledData"]:
        end = SampledValue(ENERGY, float(event.meter_stop_wh), "Wh")
        values = [meter_value(event.at, (end,), "Transaction.End")]
        tx = await store.transaction(event.tx_id)
        if tx is not None:
            begin = SampledValue(ENERGY, float(tx.meter_start_wh), "Wh")
            values.insert(0, meter_value(tx.started_at, (begin,), "Transaction.Begin"))
    return transaction_event(event, seq_no, event_type="Ended", trigger=event.trigger.value, info=info,
                             meter_values=values, token=id_token(event.id_tag) if event.id_tag else None,
                             offline=event.offline)


def _number(value: float) -> float | int:
    f = float(value)
    return int(f) if f.is_integer() else round(f, 3)
