"""Queued events as OCPP 1.6 messages, rebuilt the same way on every retry.

A row of the outbox holds a version-neutral event; the 1.6 payload is made from it at
send time. The only thing that is not in the event is the transactionId the CSMS
assigned to its StartTransaction, which the store keeps with the transaction; a
StopTransaction or MeterValues whose start was never answered cannot be sent at all
(``Drop``): the CSMS could not attach it to anything.
"""

from __future__ import annotations

from typing import Any

from ocpp.v16 import call

from agent.sessions.events import (
    Event, MeterSampled, SampledValue, SecurityEvent, StatusChanged, StopReason, TransactionEnded,
    TransactionStarted, TransactionUpdated,
)
from agent.timefmt import utc_text
from agent.uplink.outbox import Drop, Skip

#: 1.6 UnitOfMeasure values (Frequency has none: the unit is left out)
_UNITS = {"Wh": "Wh", "kWh": "kWh", "W": "W", "kW": "kW", "A": "A", "V": "V", "Percent": "Percent"}

#: 1.6 Reason values; 2.0.1-only reasons fall back to their nearest 1.6 word
_REASONS = {
    StopReason.LOCAL: "Local", StopReason.REMOTE: "Remote", StopReason.EV_DISCONNECTED: "EVDisconnected",
    StopReason.POWER_LOSS: "PowerLoss", StopReason.DEAUTHORIZED: "DeAuthorized", StopReason.REBOOT: "Reboot",
    StopReason.HARD_RESET: "HardReset", StopReason.SOFT_RESET: "SoftReset",
    StopReason.EMERGENCY_STOP: "EmergencyStop", StopReason.UNLOCK_COMMAND: "UnlockCommand", StopReason.OTHER: "Other",
}


def sampled_value(v: SampledValue, context: str) -> dict[str, Any]:
    out: dict[str, Any] = {"value": _number(v.value), "context": context, "measurand": v.measurand,
                           "location": v.location}
    if v.phase:
        out["phase"] = v.phase
    unit = _UNITS.get(v.unit)
    if unit:
        out["unit"] = unit
    return out


def meter_value(at: Any, values: tuple[SampledValue, ...], context: str) -> dict[str, Any]:
    return {"timestamp": utc_text(at), "sampledValue": [sampled_value(v, context) for v in values]}


def status_notification(ev: StatusChanged) -> call.StatusNotification:
    return call.StatusNotification(
        connector_id=ev.connector_id, error_code=ev.error_code, status=ev.status.value,
        timestamp=utc_text(ev.at), info=(ev.info or None) and ev.info[:50],
        vendor_error_code=(ev.vendor_error_code or None) and ev.vendor_error_code[:50],
    )


async def build(event: Event, store: Any) -> Any:
    """The 1.6 call for a queued event; raises Skip (nothing to send in 1.6) or Drop."""
    if isinstance(event, TransactionStarted):
        return call.StartTransaction(connector_id=event.connector_id, id_tag=event.id_tag,
                                     meter_start=int(event.meter_start_wh), timestamp=utc_text(event.at),
                                     reservation_id=event.reservation_id)
    if isinstance(event, TransactionEnded):
        tx = await store.transaction(event.tx_id)
        if tx is None or tx.csms_tx_id is None:
            raise Drop(f"transaction {event.tx_id} has no transactionId: its StartTransaction never got an answer")
        data = None
        samples = await _stop_samples(store, event)
        if samples:
            data = samples
        return call.StopTransaction(meter_stop=int(event.meter_stop_wh), timestamp=utc_text(event.at),
                                    transaction_id=int(tx.csms_tx_id), reason=_REASONS[event.reason],
                                    id_tag=event.id_tag, transaction_data=data)
    if isinstance(event, MeterSampled):
        tx_id = None
        if event.tx_id is not None:
            tx = await store.transaction(event.tx_id)
            if tx is None or tx.csms_tx_id is None:
                raise Drop(f"transaction {event.tx_id} has no transactionId: its StartTransaction never got an answer")
            tx_id = int(tx.csms_tx_id)
        return call.MeterValues(connector_id=event.connector_id, transaction_id=tx_id,
                                meter_value=[meter_value(event.at, event.values, event.context)])
    if isinstance(event, StatusChanged):
        return status_notification(event)
    if isinstance(event, SecurityEvent):
        return call.SecurityEventNotification(type=event.type, timestamp=utc_text(event.at),
                                              tech_info=(event.tech_info or None) and event.tech_info[:255])
    if isinstance(event, TransactionUpdated):
        raise Skip("1.6 has no message for a transaction update")
    raise Drop(f"no OCPP 1.6 message for event kind {event.kind!r}")


async def _stop_samples(store: Any, event: TransactionEnded) -> list[dict[str, Any]] | None:
    """transactionData: the start and stop register values (StopTxnSampledData), which
    lets a CSMS check meterStart/meterStop against the samples it got."""
    tx = await store.transaction(event.tx_id)
    if tx is None:
        return None
    begin = SampledValue("Energy.Active.Import.Register", float(tx.meter_start_wh), "Wh")
    end = SampledValue("Energy.Active.Import.Register", float(event.meter_stop_wh), "Wh")
    return [meter_value(tx.started_at, (begin,), "Transaction.Begin"),
            meter_value(event.at, (end,), "Transaction.End")]


def _number(value: float) -> str:
    """1.6 sends values as strings; integers without a trailing .0."""
    f = float(value)
    return str(int(f)) if f.is_integer() else repr(round(f, 3))
