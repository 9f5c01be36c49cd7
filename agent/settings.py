"""The settings a CSMS may read and change, kept in the store across restarts.

One table of definitions serves both protocols: the names are OCPP 1.6 configuration
keys (what ChangeConfiguration / GetConfiguration use); the 2.0.1 adapter maps its
component/variable pairs onto the same names, so a value set over either version is the
value the sessions, the authorizer and the uplink read.

Why a definition table and not loose dictionary entries: every value the CSMS sends is
checked against its type and range *before* it is stored, so a bad
ChangeConfiguration is answered Rejected and the stored value stays what it was; and
read-only keys (NumberOfConnectors, the limits the agent was built with) can be reported
but never changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.auth.types import AuthPolicy

log = logging.getLogger("evsite.settings")

MEASURANDS = frozenset({
    "Energy.Active.Import.Register", "Energy.Active.Export.Register", "Power.Active.Import",
    "Current.Import", "Current.Offered", "Voltage", "Frequency", "SoC",
})


class SettingError(ValueError):
    """A value that cannot be stored for a setting; the message says why."""


@dataclass(frozen=True)
class Definition:
    name: str
    kind: str                      # bool | int | csl | str
    default: Any
    readonly: bool = False
    reboot: bool = False           # a change applies only after a reboot
    min: int | None = None
    max: int | None = None
    choices: frozenset[str] | None = None   # allowed items of a csl
    doc: str = ""

    def parse(self, text: str) -> Any:
        """The typed value of ``text``, or SettingError naming what is wrong."""
        if not isinstance(text, str):
            raise SettingError(f"{self.name}: value must be a string, got {type(text).__name__}")
        raw = text.strip()
        if self.kind == "bool":
            low = raw.lower()
            if low not in ("true", "false"):
                raise SettingError(f"{self.name}: expected true or false, got {text!r}")
            return low == "true"
        if self.kind == "int":
            try:
                value = int(raw)
            except ValueError:
                raise SettingError(f"{self.name}: expected an integer, got {text!r}") from None
            if self.min is not None and value < self.min:
                raise SettingError(f"{self.name}: must be >= {self.min}, got {value}")
            if self.max is not None and value > self.max:
                raise SettingError(f"{self.name}: must be <= {self.max}, got {value}")
            return value
        if self.kind == "csl":
            items = tuple(i.strip() for i in raw.split(",") if i.strip())
            if self.choices is not None:
                bad = [i for i in items if i not in self.choices]
                if bad:
                    raise SettingError(f"{self.name}: not supported: {', '.join(bad)}")
            return items
        if len(raw) > 500:
            raise SettingError(f"{self.name}: longer than 500 characters")
        return raw

    def text(self, value: Any) -> str:
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind == "csl":
            return ",".join(value)
        return str(value)


def definitions(config: Any) -> dict[str, Definition]:
    """Every setting, with defaults from the site config where it has one."""
    up = config.uplink
    n_connectors = len(config.chargers())
    d = [
        Definition("HeartbeatInterval", "int", int(up.heartbeat_interval), min=0, max=86_400,
                   doc="seconds between heartbeats (the BootNotification interval overrides)"),
        Definition("WebSocketPingInterval", "int", int(up.ping_interval), min=0, max=3600, reboot=True,
                   doc="seconds between WebSocket pings; 0 = off (applies from the next start)"),
        Definition("ConnectionTimeOut", "int", 60, min=1, max=3600,
                   doc="seconds an authorization waits for the cable before it lapses"),
        Definition("MeterValueSampleInterval", "int", 60, min=0, max=86_400,
                   doc="seconds between sampled meter values in a transaction; 0 = off"),
        Definition("MeterValuesSampledData", "csl",
                   ("Energy.Active.Import.Register", "Power.Active.Import", "Current.Import"), choices=MEASURANDS),
        Definition("ClockAlignedDataInterval", "int", 900, min=0, max=86_400,
                   doc="seconds between clock-aligned meter values; 0 = off"),
        Definition("MeterValuesAlignedData", "csl",
                   ("Energy.Active.Import.Register", "Power.Active.Import"), choices=MEASURANDS),
        Definition("StopTxnSampledData", "csl", ("Energy.Active.Import.Register",), choices=MEASURANDS),
        Definition("StopTxnAlignedData", "csl", (), choices=MEASURANDS),
        Definition("StopTransactionOnEVSideDisconnect", "bool", True),
        Definition("StopTransactionOnInvalidId", "bool", True),
        Definition("UnlockConnectorOnEVSideDisconnect", "bool", True, readonly=True),
        Definition("AuthorizeRemoteTxRequests", "bool", False),
        Definition("LocalAuthorizeOffline", "bool", True),
        Definition("LocalPreAuthorize", "bool", False),
        Definition("AllowOfflineTxForUnknownId", "bool", False),
        Definition("AuthorizationCacheEnabled", "bool", True),
        Definition("LocalAuthListEnabled", "bool", True),
        Definition("LocalAuthListMaxLength", "int", 10_000, readonly=True),
        Definition("SendLocalListMaxLength", "int", 1_000, readonly=True),
        Definition("TransactionMessageAttempts", "int", 5, min=1, max=100,
                   doc="tries for a transaction message the CSMS refuses (CALLERROR)"),
        Definition("TransactionMessageRetryInterval", "int", 60, min=1, max=86_400),
        Definition("MinimumStatusDuration", "int", 0, min=0, max=3600),
        Definition("ResetRetries", "int", 1, min=0, max=10),
        Definition("NumberOfConnectors", "int", n_connectors, readonly=True),
        Definition("ReserveConnectorZeroSupported", "bool", False, readonly=True),
        Definition("ChargeProfileMaxStackLevel", "int", 8, readonly=True),
        Definition("ChargingScheduleAllowedChargingRateUnit", "csl", ("Current", "Power"), readonly=True),
        Definition("ChargingScheduleMaxPeriods", "int", 24, readonly=True),
        Definition("MaxChargingProfilesInstalled", "int", 32, readonly=True),
        Definition("GetConfigurationMaxKeys", "int", 100, readonly=True),
        Definition("SupportedFeatureProfiles", "csl",
                   ("Core", "FirmwareManagement", "LocalAuthListManagement", "Reservation",
                    "SmartCharging", "RemoteTrigger"), readonly=True),
    ]
    return {x.name: x for x in d}


class Settings:
    """Typed access to the current values; ``change`` validates, persists, notifies."""

    def __init__(self, store: Any, defs: dict[str, Definition], values: dict[str, Any]) -> None:
        self._store = store
        self.defs = defs
        self._values = values
        self._listeners: list[Callable[[str, Any], None]] = []

    @classmethod
    async def load(cls, store: Any, config: Any) -> Settings:
        """Defaults from the config, overridden by what the CSMS set earlier. A stored
        value that no longer parses (an older version's range) is ignored with a warning,
        never a failed start."""
        defs = definitions(config)
        values = {name: d.default for name, d in defs.items()}
        stored = await store.settings_all() if store is not None else {}
        for name, text in stored.items():
            d = defs.get(name)
            if d is None or d.readonly:
                continue
            try:
                values[name] = d.parse(text)
            except SettingError as exc:
                log.warning("stored setting ignored, default used: %s", exc)
        return cls(store, defs, values)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def text(self, name: str) -> str:
        return self.defs[name].text(self._values[name])

    def items(self) -> list[tuple[Definition, str]]:
        return [(d, d.text(self._values[n])) for n, d in self.defs.items()]

    def on_change(self, listener: Callable[[str, Any], None]) -> None:
        self._listeners.append(listener)

    async def change(self, name: str, text: str) -> str:
        """ChangeConfiguration semantics: "Accepted", "RebootRequired", "Rejected" (bad
        value or read-only) or "NotSupported" (unknown key). Stored before it applies."""
        d = self.defs.get(name)
        if d is None:
            return "NotSupported"
        if d.readonly:
            log.info("setting %s is read-only: change refused", name)
            return "Rejected"
        try:
            value = d.parse(text)
        except SettingError as exc:
            log.info("setting change refused: %s", exc)
            return "Rejected"
        if self._store is not None:
            await self._store.setting_put(name, d.text(value))
        old = self._values.get(name)
        self._values[name] = value
        if old != value:
            log.info("setting %s: %s -> %s", name, d.text(old), d.text(value))
            for listener in list(self._listeners):
                try:
                    listener(name, value)
                except Exception:  # a listener's bug must not undo a stored setting
                    log.exception("setting listener failed for %s", name)
        return "RebootRequired" if d.reboot else "Accepted"

    def auth_policy(self) -> AuthPolicy:
        """The authorizer reads this on every decision, so a change applies at once."""
        v = self._values
        return AuthPolicy(
            local_authorize_offline=v["LocalAuthorizeOffline"],
            local_pre_authorize=v["LocalPreAuthorize"],
            allow_offline_tx_for_unknown_id=v["AllowOfflineTxForUnknownId"],
            authorization_cache_enabled=v["AuthorizationCacheEnabled"],
            local_auth_list_enabled=v["LocalAuthListEnabled"],
            local_auth_list_max_length=v["LocalAuthListMaxLength"],
            send_local_list_max_length=v["SendLocalListMaxLength"],
        )
