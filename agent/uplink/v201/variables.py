"""The 2.0.1 device model as data: every component and variable the agent implements.

Why a table: GetVariables, SetVariables, GetBaseReport and GetReport all answer from the
same list, so a variable is reported exactly when it can be read, and read exactly as it
is reported. Each variable says where its value lives:

- ``setting``: one of the version-neutral settings (agent/settings.py, 1.6 key names).
  A value set here is the value 1.6's GetConfiguration shows and that the sessions, the
  authorizer and the uplink read; it is stored by the settings registry.
- ``default`` with a writable mutability: a 2.0.1-only variable, stored in the store's
  key/value table by the device model (``device_model.STORE_KEY``).
- ``default`` read-only: a constant that describes what the agent does (TxStartPoint).
- ``live``: computed when asked (availability, the clock, list sizes); read-only.

Only variables whose value means something to the agent are listed: a CSMS that sets
one sees the effect. What is not here is answered UnknownComponent/UnknownVariable.
Names follow the OCPP 2.0.1 Part 2 appendix (component/variable[instance]).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.settings import MEASURANDS

#: 2.0.1 AvailabilityState / ConnectorStatus values
AVAILABILITY = ("Available", "Occupied", "Reserved", "Unavailable", "Faulted")
_MEASURANDS = tuple(sorted(MEASURANDS))
_RATE_UNITS = (("Current", "A"), ("Power", "W"))


@dataclass(frozen=True)
class Var:
    component: str
    name: str
    instance: str | None = None
    data_type: str = "string"          # DataEnumType: string decimal integer dateTime boolean OptionList ...
    mutability: str = "ReadOnly"       # ReadOnly | ReadWrite | WriteOnly
    setting: str | None = None         # agent.settings key holding the value
    default: str | None = None         # constant (ReadOnly) or 2.0.1-only stored value
    live: str | None = None            # computed by the device model
    max_set: str | None = None         # live source of a MaxSet attribute
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] | None = None   # valuesList of an OptionList/MemberList/SequenceList
    #: 1.6 setting text <-> 2.0.1 text for list items (RateUnit: Current <-> A)
    value_map: tuple[tuple[str, str], ...] = ()
    scope: str = "station"             # station | evse | connector
    reboot: bool = False               # 2.0.1-only: a change applies after a restart

    @property
    def key(self) -> str:
        """Where a 2.0.1-only value is stored: ``Component/Variable[/Instance]``."""
        return f"{self.component}/{self.name}" + (f"/{self.instance}" if self.instance else "")

    @property
    def stored(self) -> bool:
        return self.setting is None and self.live is None and self.mutability != "ReadOnly"

    @property
    def constant(self) -> bool:
        return self.setting is None and self.live is None and self.mutability == "ReadOnly"

    @property
    def attributes(self) -> tuple[str, ...]:
        return ("Actual", "MaxSet") if self.max_set else ("Actual",)


def _b(component: str, name: str, **kw: object) -> Var:
    return Var(component, name, data_type="boolean", **kw)  # type: ignore[arg-type]


def _i(component: str, name: str, **kw: object) -> Var:
    return Var(component, name, data_type="integer", **kw)  # type: ignore[arg-type]


def _members(component: str, name: str, **kw: object) -> Var:
    return Var(component, name, data_type="MemberList", values=_MEASURANDS, **kw)  # type: ignore[arg-type]


RW = "ReadWrite"

VARIABLES: tuple[Var, ...] = (
    # ---- OCPPCommCtrlr ------------------------------------------------------------------
    _i("OCPPCommCtrlr", "HeartbeatInterval", mutability=RW, setting="HeartbeatInterval", unit="s", min=0, max=86_400),
    _i("OCPPCommCtrlr", "WebSocketPingInterval", mutability=RW, setting="WebSocketPingInterval", unit="s",
       min=0, max=3600),
    _i("OCPPCommCtrlr", "MessageAttempts", instance="TransactionEvent", mutability=RW,
       setting="TransactionMessageAttempts", min=1, max=100),
    _i("OCPPCommCtrlr", "MessageAttemptInterval", instance="TransactionEvent", mutability=RW,
       setting="TransactionMessageRetryInterval", unit="s", min=1, max=86_400),
    _i("OCPPCommCtrlr", "MessageTimeout", instance="Default", live="call_timeout", unit="s"),
    _i("OCPPCommCtrlr", "ResetRetries", mutability=RW, setting="ResetRetries", min=0, max=10),
    _b("OCPPCommCtrlr", "UnlockOnEVSideDisconnect", setting="UnlockConnectorOnEVSideDisconnect"),
    _b("OCPPCommCtrlr", "QueueAllMessages", default="false"),
    # ---- TxCtrlr -------------------------------------------------------------------------
    _i("TxCtrlr", "EVConnectionTimeOut", mutability=RW, setting="ConnectionTimeOut", unit="s", min=1, max=3600),
    _b("TxCtrlr", "StopTxOnEVSideDisconnect", mutability=RW, setting="StopTransactionOnEVSideDisconnect"),
    _b("TxCtrlr", "StopTxOnInvalidId", mutability=RW, setting="StopTransactionOnInvalidId"),
    # a transaction starts when the EV is connected *and* authorized, and ends when either goes
    Var("TxCtrlr", "TxStartPoint", data_type="MemberList", default="PowerPathClosed",
        values=("ParkingBayOccupancy", "EVConnected", "Authorized", "DataSigned", "PowerPathClosed", "EnergyTransfer")),
    Var("TxCtrlr", "TxStopPoint", data_type="MemberList", default="EVConnected,Authorized",
        values=("ParkingBayOccupancy", "EVConnected", "Authorized", "DataSigned", "PowerPathClosed", "EnergyTransfer")),
    _b("TxCtrlr", "TxBeforeAcceptedEnabled", default="true"),
    # ---- SampledDataCtrlr ------------------------------------------------------------------
    _b("SampledDataCtrlr", "Enabled", default="true"),
    _i("SampledDataCtrlr", "TxUpdatedInterval", mutability=RW, setting="MeterValueSampleInterval", unit="s",
       min=0, max=86_400),
    _members("SampledDataCtrlr", "TxUpdatedMeasurands", mutability=RW, setting="MeterValuesSampledData"),
    _members("SampledDataCtrlr", "TxEndedMeasurands", mutability=RW, setting="StopTxnSampledData"),
    _members("SampledDataCtrlr", "TxStartedMeasurands", default="Energy.Active.Import.Register"),
    _i("SampledDataCtrlr", "TxEndedInterval", default="0", unit="s"),
    # ---- AlignedDataCtrlr ------------------------------------------------------------------
    _b("AlignedDataCtrlr", "Enabled", default="true"),
    _i("AlignedDataCtrlr", "Interval", mutability=RW, setting="ClockAlignedDataInterval", unit="s", min=0, max=86_400),
    _members("AlignedDataCtrlr", "Measurands", mutability=RW, setting="MeterValuesAlignedData"),
    # ---- AuthCtrlr / AuthCacheCtrlr / LocalAuthListCtrlr -----------------------------------
    _b("AuthCtrlr", "Enabled", default="true"),
    _b("AuthCtrlr", "AuthorizeRemoteStart", mutability=RW, setting="AuthorizeRemoteTxRequests"),
    _b("AuthCtrlr", "LocalAuthorizeOffline", mutability=RW, setting="LocalAuthorizeOffline"),
    _b("AuthCtrlr", "LocalPreAuthorize", mutability=RW, setting="LocalPreAuthorize"),
    _b("AuthCtrlr", "OfflineTxForUnknownIdEnabled", mutability=RW, setting="AllowOfflineTxForUnknownId"),
    _b("AuthCacheCtrlr", "Enabled", mutability=RW, setting="AuthorizationCacheEnabled"),
    _b("AuthCacheCtrlr", "Available", default="true"),
    Var("AuthCacheCtrlr", "Policy", data_type="OptionList", default="LRU", values=("LRU",)),
    _b("LocalAuthListCtrlr", "Enabled", mutability=RW, setting="LocalAuthListEnabled"),
    _b("LocalAuthListCtrlr", "Available", default="true"),
    _i("LocalAuthListCtrlr", "Entries", live="local_list_entries"),
    _i("LocalAuthListCtrlr", "ItemsPerMessage", setting="SendLocalListMaxLength"),
    _i("LocalAuthListCtrlr", "BytesPerMessage", live="max_message"),
    # ---- SmartChargingCtrlr ----------------------------------------------------------------
    _b("SmartChargingCtrlr", "Enabled", default="true"),
    _b("SmartChargingCtrlr", "Available", default="true"),
    _i("SmartChargingCtrlr", "Entries", instance="ChargingProfiles", live="profile_entries"),
    _i("SmartChargingCtrlr", "ProfileStackLevel", setting="ChargeProfileMaxStackLevel"),
    _i("SmartChargingCtrlr", "PeriodsPerSchedule", setting="ChargingScheduleMaxPeriods"),
    Var("SmartChargingCtrlr", "RateUnit", data_type="MemberList", setting="ChargingScheduleAllowedChargingRateUnit",
        values=("A", "W"), value_map=_RATE_UNITS),
    # ---- ReservationCtrlr ------------------------------------------------------------------
    _b("ReservationCtrlr", "Enabled", default="true"),
    _b("ReservationCtrlr", "Available", default="true"),
    _b("ReservationCtrlr", "NonEvseSpecific", setting="ReserveConnectorZeroSupported"),
    # ---- SecurityCtrlr (certificates are another issue's) ----------------------------------
    _i("SecurityCtrlr", "SecurityProfile", live="security_profile"),
    Var("SecurityCtrlr", "Identity", live="station_id"),
    Var("SecurityCtrlr", "OrganizationName", mutability=RW, default=""),
    # ---- DeviceDataCtrlr -------------------------------------------------------------------
    _i("DeviceDataCtrlr", "ItemsPerMessage", instance="GetReport", live="items_per_message"),
    _i("DeviceDataCtrlr", "ItemsPerMessage", instance="GetVariables", live="items_per_message"),
    _i("DeviceDataCtrlr", "ItemsPerMessage", instance="SetVariables", live="items_per_message"),
    _i("DeviceDataCtrlr", "BytesPerMessage", instance="GetReport", live="max_message"),
    _i("DeviceDataCtrlr", "BytesPerMessage", instance="GetVariables", live="max_message"),
    _i("DeviceDataCtrlr", "BytesPerMessage", instance="SetVariables", live="max_message"),
    _i("DeviceDataCtrlr", "ReportingValueSize", default="2500"),
    _i("DeviceDataCtrlr", "ConfigurationValueSize", default="500"),
    # ---- ClockCtrlr ------------------------------------------------------------------------
    Var("ClockCtrlr", "DateTime", data_type="dateTime", live="now"),
    Var("ClockCtrlr", "TimeSource", data_type="SequenceList", default="Heartbeat", values=("Heartbeat",)),
    # ---- the station, its EVSEs and connectors ---------------------------------------------
    Var("ChargingStation", "AvailabilityState", data_type="OptionList", live="availability", values=AVAILABILITY),
    _b("ChargingStation", "Available", default="true"),
    _b("ChargingStation", "Problem", live="problem"),
    _i("ChargingStation", "SupplyPhases", live="supply_phases"),
    Var("ChargingStation", "Model", live="model"),
    Var("ChargingStation", "VendorName", live="vendor"),
    Var("EVSE", "AvailabilityState", data_type="OptionList", live="availability", values=AVAILABILITY, scope="evse"),
    _b("EVSE", "Available", default="true", scope="evse"),
    _b("EVSE", "Problem", live="problem", scope="evse"),
    Var("EVSE", "Power", data_type="decimal", live="power", max_set="max_power", unit="W", scope="evse"),
    _i("EVSE", "SupplyPhases", live="supply_phases", scope="evse"),
    Var("Connector", "AvailabilityState", data_type="OptionList", live="availability", values=AVAILABILITY,
        scope="connector"),
    _b("Connector", "Available", default="true", scope="connector"),
    _b("Connector", "Problem", live="problem", scope="connector"),
)


def check_value(var: Var, text: str) -> str:
    """The 2.0.1 value ``text`` normalised for ``var``, or ValueError saying why not.
    Range and list checks of mapped settings happen again in the settings registry."""
    if not isinstance(text, str):
        raise ValueError(f"value must be a string, got {type(text).__name__}")
    raw = text.strip()
    t = var.data_type
    if t == "boolean":
        if raw.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, got {text!r}")
        return raw.lower()
    if t in ("integer", "decimal"):
        try:
            number = int(raw) if t == "integer" else float(raw)
        except ValueError:
            raise ValueError(f"expected {'an integer' if t == 'integer' else 'a number'}, got {text!r}") from None
        if var.min is not None and number < var.min:
            raise ValueError(f"must be >= {var.min:g}, got {raw}")
        if var.max is not None and number > var.max:
            raise ValueError(f"must be <= {var.max:g}, got {raw}")
        return str(number)
    if t == "OptionList":
        if var.values is not None and raw not in var.values:
            raise ValueError(f"{raw!r} is not one of {', '.join(var.values)}")
        return raw
    if t in ("MemberList", "SequenceList"):
        items = [i.strip() for i in raw.split(",") if i.strip()]
        bad = [i for i in items if var.values is not None and i not in var.values]
        if bad:
            raise ValueError(f"not supported: {', '.join(bad)}")
        if len(set(items)) != len(items):
            raise ValueError("an item appears twice")
        return ",".join(items)
    if len(raw) > 500:
        raise ValueError("longer than ConfigurationValueSize (500 characters)")
    return raw


def to_v201(var: Var, setting_text: str) -> str:
    """A setting's text as the 2.0.1 variable shows it."""
    if not var.value_map:
        return setting_text
    names = dict(var.value_map)
    return ",".join(names.get(i, i) for i in setting_text.split(",") if i)


def to_setting(var: Var, value: str) -> str:
    """A 2.0.1 value as the setting stores it."""
    if not var.value_map:
        return value
    names = {new: old for old, new in var.value_map}
    return ",".join(names.get(i, i) for i in value.split(",") if i)
