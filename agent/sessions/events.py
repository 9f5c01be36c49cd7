"""What happens at a connector, in words that mean the same in OCPP 1.6 and 2.0.1.

Sessions produce these; the store writes each one (and its outbox row) before anyone acts
on it; each uplink adapter turns them into its own messages at send time. They are plain
frozen data with a JSON form (``to_json`` / ``event_from_json``) because the outbox keeps
them across restarts and the adapters must rebuild byte-identical payloads on a retry.

Field names follow the domain, not either protocol: ``tx_id`` is the station-generated
transaction id (a UUID; 2.0.1 sends it as transactionId, 1.6 maps it to the integer its
CSMS assigned, which the store keeps), energies are Wh, currents A, times aware UTC.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.timefmt import parse_utc, utc_text


class ConnectorStatus(enum.StrEnum):
    """Session-level status: the 1.6 vocabulary, which 2.0.1 adapters map down to
    Available / Occupied / Reserved / Unavailable / Faulted (plus ChargingState)."""

    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EV = "SuspendedEV"
    SUSPENDED_EVSE = "SuspendedEVSE"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


class StopReason(enum.StrEnum):
    """Why a transaction ended (1.6 Reason; 2.0.1 stoppedReason uses the same words
    except where the adapter maps them, e.g. HardReset -> ImmediateReset)."""

    LOCAL = "Local"
    REMOTE = "Remote"
    EV_DISCONNECTED = "EVDisconnected"
    POWER_LOSS = "PowerLoss"
    DEAUTHORIZED = "DeAuthorized"
    REBOOT = "Reboot"
    HARD_RESET = "HardReset"
    SOFT_RESET = "SoftReset"
    EMERGENCY_STOP = "EmergencyStop"
    UNLOCK_COMMAND = "UnlockCommand"
    OTHER = "Other"


class Trigger(enum.StrEnum):
    """What caused a transaction event (2.0.1 triggerReason; 1.6 ignores it)."""

    AUTHORIZED = "Authorized"
    CABLE_PLUGGED_IN = "CablePluggedIn"
    EV_DETECTED = "EVDetected"
    CHARGING_STATE_CHANGED = "ChargingStateChanged"
    REMOTE_START = "RemoteStart"
    REMOTE_STOP = "RemoteStop"
    STOP_AUTHORIZED = "StopAuthorized"
    EV_COMMUNICATION_LOST = "EVCommunicationLost"
    EV_DEPARTED = "EVDeparted"
    DEAUTHORIZED = "Deauthorized"
    METER_VALUE_PERIODIC = "MeterValuePeriodic"
    METER_VALUE_CLOCK = "MeterValueClock"
    RESET_COMMAND = "ResetCommand"
    ABNORMAL_CONDITION = "AbnormalCondition"
    CHARGING_RATE_CHANGED = "ChargingRateChanged"
    TRIGGER = "Trigger"


class ChargingState(enum.StrEnum):
    """2.0.1 chargingState of a transaction (derived from the session status)."""

    CHARGING = "Charging"
    EV_CONNECTED = "EVConnected"
    SUSPENDED_EV = "SuspendedEV"
    SUSPENDED_EVSE = "SuspendedEVSE"
    IDLE = "Idle"


@dataclass(frozen=True)
class SampledValue:
    """One measured value. ``measurand`` uses the OCPP names (both versions share
    them): Energy.Active.Import.Register, Power.Active.Import, Current.Import, Voltage."""

    measurand: str
    value: float
    unit: str                        # Wh, W, A, V
    phase: str | None = None         # "L1".."L3" (or "L1-N" for voltage), None = total
    location: str = "Outlet"         # Outlet (charger) | Inlet (grid meter, connector 0)


@dataclass(frozen=True)
class Event:
    """Base: every event happened at ``at`` on ``connector_id`` (0 = the station)."""

    connector_id: int
    at: datetime

    kind = "event"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            out[f.name] = _dump(getattr(self, f.name))
        return out


@dataclass(frozen=True)
class StatusChanged(Event):
    status: ConnectorStatus
    error_code: str = "NoError"      # 1.6 ChargePointErrorCode vocabulary
    info: str | None = None
    vendor_error_code: str | None = None

    kind = "status"


@dataclass(frozen=True)
class TransactionStarted(Event):
    tx_id: str
    id_tag: str
    meter_start_wh: int
    trigger: Trigger = Trigger.AUTHORIZED
    id_token_type: str = "ISO14443"   # 2.0.1 IdTokenType (Central for remote/free charging)
    reservation_id: int | None = None
    remote_start_id: int | None = None
    offline: bool = False

    kind = "tx_started"


@dataclass(frozen=True)
class TransactionUpdated(Event):
    """A change inside a running transaction that 2.0.1 reports (charging state, a
    late authorization); 1.6 sends nothing for it."""

    tx_id: str
    trigger: Trigger
    charging_state: ChargingState | None = None
    offline: bool = False

    kind = "tx_updated"


@dataclass(frozen=True)
class MeterSampled(Event):
    """Periodic (Sample.Periodic) or clock-aligned (Sample.Clock) values; ``tx_id`` is
    None for values outside a transaction (e.g. connector 0 from the grid meter)."""

    values: tuple[SampledValue, ...]
    context: str = "Sample.Periodic"
    tx_id: str | None = None
    offline: bool = False

    kind = "meter"


@dataclass(frozen=True)
class TransactionEnded(Event):
    tx_id: str
    meter_stop_wh: int
    reason: StopReason
    id_tag: str | None = None         # who stopped it, when someone did
    trigger: Trigger = Trigger.EV_DEPARTED
    offline: bool = False

    kind = "tx_ended"


@dataclass(frozen=True)
class SecurityEvent(Event):
    """A security event (1.6 security extension / 2.0.1 SecurityEventNotification),
    queued durably like transaction messages. ``connector_id`` is 0."""

    type: str                         # e.g. "FirmwareUpdated", "SettingSystemTime"
    tech_info: str | None = None

    kind = "security"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (StatusChanged, TransactionStarted, TransactionUpdated, MeterSampled, TransactionEnded, SecurityEvent)
}


def event_from_json(data: dict[str, Any]) -> Event:
    """Rebuild an event from ``Event.to_json()``; unknown kinds are a ``ValueError``
    naming the kind (an outbox row from a newer version, say)."""
    data = dict(data)
    kind = data.pop("kind", None)
    cls = EVENT_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _load(f.name, data[f.name], cls)
    return cls(**kwargs)


def _dump(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_dump(v) for v in value]
    if dataclasses.is_dataclass(value):
        return {f.name: _dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


_ENUMS: dict[str, type[enum.Enum]] = {
    "status": ConnectorStatus, "reason": StopReason, "trigger": Trigger, "charging_state": ChargingState,
}


def _load(name: str, value: Any, cls: type[Event]) -> Any:
    if value is None:
        return None
    if name == "at":
        return parse_utc(value)
    if name in _ENUMS:
        return _ENUMS[name](value)
    if name == "values":
        return tuple(SampledValue(**v) for v in value)
    return value


__all__ = [
    "ChargingState", "ConnectorStatus", "Event", "EVENT_TYPES", "MeterSampled", "SampledValue",
    "SecurityEvent", "StatusChanged", "StopReason", "TransactionEnded", "TransactionStarted",
    "TransactionUpdated", "Trigger", "event_from_json",
]
