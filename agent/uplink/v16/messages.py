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
from agent.store.events_log import spread
from agent.timefmt import utc_text
from agent.uplink.outbox import Drop, Skip

#: 1.6 UnitOfMeasure values (Frequency has none: the unit is left out)
_UNITS = {"Wh": "Wh", "kWh": "kWh", "W": "W", "kW": "kW", "A": "A", "V": "V", "Percent": "Percent"}

ENERGY = "Energy.Active.Import.Register"

#: A StopTransaction's transactionData holds at most this many sampled meterValues
#: between Transaction.Begin and Transaction.End, and at most ``MAX_STOP_VALUES``
#: sampledValues in them; a longer transaction's samples are thinned evenly (its first
#: and last sample kept). 96 is a day of 15-minute clock-aligned values; 400 values keep
#: a stop under about 55 KB of JSON whatever the measurands (96 samples of energy plus
#: three phase currents measured 52 KB), so a CSMS with a 64 KB frame limit takes it.
MAX_STOP_SAMPLES = 96
MAX_STOP_VALUES = 400

#: which setting picks the measurands of each sample context in a stop's transactionData
_STOP_TXN_KEYS = {"Sample.Periodic": "StopTxnSampledData", "Sample.Clock": "StopTxnAlignedData"}

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


async def build(event: Event, store: Any, settings: Any = None) -> Any:
    """The 1.6 call for a queued event; raises Skip (nothing to send in 1.6) or Drop.
    ``settings`` (StopTxnSampledData / StopTxnAlignedData) shape a stop's transactionData."""
    if isinstance(event, TransactionStarted):
        return call.StartTransaction(connector_id=event.connector_id, id_tag=event.id_tag,
                                     meter_start=int(event.meter_start_wh), timestamp=utc_text(event.at),
                                     reservation_id=event.reservation_id)
    if isinstance(event, TransactionEnded):
        tx = await store.transaction(event.tx_id)
        if tx is None or tx.csms_tx_id is None:
            raise Drop(f"transaction {event.tx_id} has no transactionId: its StartTransaction never got an answer")
        data = None
        samples = await _stop_samples(store, event, settings)
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


async def _stop_samples(store: Any, event: TransactionEnded, settings: Any) -> list[dict[str, Any]] | None:
    """transactionData, oldest first: the Transaction.Begin register value, the samples
    recorded during the transaction cut to the StopTxnSampledData measurands (periodic
    ones) and StopTxnAlignedData measurands (clock-aligned ones), interleaved by time, and
    the Transaction.End value. A CSMS that missed MeterValues (or never got them: the
    samples of an offline transaction) can still check meterStart/meterStop against them.

    Everything comes from the store, so a stop sent after a restart carries the samples
    taken before it; the transaction has ended, so no new sample can change a retry (the
    two keys are read when the stop is built: a change between two tries shows in the next).
    Samples beyond ``MAX_STOP_SAMPLES`` / ``MAX_STOP_VALUES`` are thinned evenly; begin
    and end always stay."""
    tx = await store.transaction(event.tx_id)
    if tx is None:
        return None
    begin = SampledValue(ENERGY, float(tx.meter_start_wh), "Wh")
    end = SampledValue(ENERGY, float(event.meter_stop_wh), "Wh")
    out = [meter_value(tx.started_at, (begin,), "Transaction.Begin")]
    wanted = {ctx: frozenset(_setting(settings, key)) for ctx, key in _STOP_TXN_KEYS.items()}
    contexts = tuple(ctx for ctx, measurands in wanted.items() if measurands)
    if contexts:
        kept = []
        for sample in await store.tx_samples(event.tx_id, contexts=contexts, limit=MAX_STOP_SAMPLES):
            values = tuple(v for v in sample.values if v.measurand in wanted.get(sample.context, ()))
            if values:
                kept.append((sample.at, values, sample.context))
        if sum(len(values) for _, values, _ in kept) > MAX_STOP_VALUES:
            widest = max(len(values) for _, values, _ in kept)
            kept = spread(kept, max(1, MAX_STOP_VALUES // widest))
        out += [meter_value(at, values, context) for at, values, context in kept]
    out.append(meter_value(event.at, (end,), "Transaction.End"))
    return out


def _setting(settings: Any, name: str) -> tuple[str, ...]:
    """A measurand list from the settings (none given: no sampled data, begin/end only)."""
    if settings is None:
        return ()
    return tuple(settings[name])


def _number(value: float) -> str:
    """1.6 sends values as strings; integers without a trailing .0."""
    f = float(value)
    return str(int(f)) if f.is_integer() else repr(round(f, 3))
