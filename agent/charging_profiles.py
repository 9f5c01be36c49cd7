"""The CSMS's charging profiles, kept in the store: one book for both OCPP versions.

Profiles are stored in the OCPP 1.6 JSON shape (``csChargingProfiles``, camelCase)
plus ``connector_id``; the 2.0.1 adapter converts its own shape to this one on the way
in. Load management (agent/energy) reads the book on every change, so a profile counts
from the moment it is answered Accepted, and survives a restart.

The rules here are the ones that decide Accepted or Rejected, so both versions refuse
the same things: TxProfile only where a transaction runs, ChargePointMaxProfile only on
connector 0, stack level within ChargeProfileMaxStackLevel, at most
MaxChargingProfilesInstalled, and a profile with the same id or the same (connector,
purpose, stack level) replaces the old one (1.6 section 3.13.2).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from collections.abc import Callable
from typing import Any

log = logging.getLogger("evsite.smartcharging")

PURPOSES = ("ChargePointMaxProfile", "TxDefaultProfile", "TxProfile")


class ProfileError(ValueError):
    """Why a profile was refused (logged; 2.0.1 sends it as statusInfo)."""


def plain(value: Any) -> Any:
    """JSON-ready copy: the ``ocpp`` library parses numbers as Decimal."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    return value


class ProfileBook:
    def __init__(self, store: Any, settings: Any, *, validate: Callable[[dict[str, Any]], list[str]] | None = None) -> None:
        self.store = store
        self.settings = settings
        self._validate = validate
        self._listeners: list[Callable[[], Any]] = []
        self.profiles: list[dict[str, Any]] = []

    async def load(self) -> ProfileBook:
        self.profiles = list(await self.store.profiles_all())
        return self

    def on_change(self, listener: Callable[[], Any]) -> None:
        self._listeners.append(listener)

    def for_connector(self, connector_id: int) -> list[dict[str, Any]]:
        return [p for p in self.profiles if p["connector_id"] in (0, connector_id)]

    async def put(self, connector_id: int, profile: dict[str, Any], *, tx_running: bool, tx_id: Any = None) -> None:
        """Install ``profile`` (1.6 camelCase shape) or raise ProfileError."""
        profile = plain(profile)
        purpose = profile.get("chargingProfilePurpose")
        if purpose not in PURPOSES:
            raise ProfileError(f"chargingProfilePurpose {purpose!r} is not one of {', '.join(PURPOSES)}")
        if purpose == "ChargePointMaxProfile" and connector_id != 0:
            raise ProfileError("a ChargePointMaxProfile belongs on connector 0")
        if purpose == "TxProfile":
            if connector_id == 0:
                raise ProfileError("a TxProfile needs a connector > 0")
            if not tx_running:
                raise ProfileError(f"no transaction runs on connector {connector_id} for a TxProfile")
        level = profile.get("stackLevel")
        max_level = self.settings["ChargeProfileMaxStackLevel"]
        if not isinstance(level, int) or not 0 <= level <= max_level:
            raise ProfileError(f"stackLevel {level!r} is outside 0..{max_level} (ChargeProfileMaxStackLevel)")
        schedule = profile.get("chargingSchedule") or {}
        periods = schedule.get("chargingSchedulePeriod") or []
        if not periods:
            raise ProfileError("chargingSchedule has no chargingSchedulePeriod")
        if len(periods) > self.settings["ChargingScheduleMaxPeriods"]:
            raise ProfileError(f"{len(periods)} periods exceed ChargingScheduleMaxPeriods "
                               f"{self.settings['ChargingScheduleMaxPeriods']}")
        if self._validate is not None:
            problems = self._validate(dict(profile, connector_id=connector_id))
            if problems:
                raise ProfileError("; ".join(problems))
        pid = profile.get("chargingProfileId")
        if not isinstance(pid, int):
            raise ProfileError("chargingProfileId must be an integer")
        keep = [p for p in self.profiles
                if p["chargingProfileId"] != pid
                and not (p["connector_id"] == connector_id and p["chargingProfilePurpose"] == purpose
                         and p["stackLevel"] == level)]
        if len(keep) >= self.settings["MaxChargingProfilesInstalled"]:
            raise ProfileError(f"already {len(keep)} profiles installed (MaxChargingProfilesInstalled)")
        for gone in self.profiles:
            if gone not in keep:
                await self.store.profile_remove(gone["id"])
        entry = dict(profile, id=pid, connector_id=connector_id)
        if tx_id is not None:
            entry["evsite_tx_id"] = tx_id
        await self.store.profile_put(entry)
        self.profiles = keep + [entry]
        log.info("charging profile %d (%s, stack %d) installed on connector %d", pid, purpose, level, connector_id)
        self._changed()

    async def clear(self, *, profile_id: int | None = None, connector_id: int | None = None,
                    purpose: str | None = None, stack_level: int | None = None) -> int:
        """ClearChargingProfile: every given criterion must match; returns how many went."""
        def hit(p: dict[str, Any]) -> bool:
            if profile_id is not None:
                return p["chargingProfileId"] == profile_id
            return ((connector_id is None or p["connector_id"] == connector_id)
                    and (purpose is None or p["chargingProfilePurpose"] == purpose)
                    and (stack_level is None or p["stackLevel"] == stack_level))
        gone = [p for p in self.profiles if hit(p)]
        for p in gone:
            await self.store.profile_remove(p["id"])
        if gone:
            self.profiles = [p for p in self.profiles if p not in gone]
            log.info("charging profiles cleared: %s", ", ".join(str(p["id"]) for p in gone))
            self._changed()
        return len(gone)

    async def transaction_ended(self, connector_id: int) -> None:
        """A TxProfile lives as long as its transaction (1.6 3.13.3)."""
        await self.clear(connector_id=connector_id, purpose="TxProfile")

    def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("charging profile listener failed")
