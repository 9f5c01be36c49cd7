"""The CSMS's calls to the station (OCPP 1.6J), answered from the site's own parts.

Each handler is short: it checks what only 1.6 can say (its enums, its ids), then asks
the version-neutral part that owns the matter (sessions, settings, the authorizer, the
profile book, load management) and turns the answer back into 1.6 words. Handlers run
inside the connection's receive loop, so they never await a call to the CSMS: messages
a handler causes (TriggerMessage, a remote start's StartTransaction) go out afterwards,
from ``after_*`` hooks or through the outbox.

The ``ocpp`` library validates every incoming payload against the 1.6 schemas first and
answers a bad one with the matching CALLERROR before any handler runs, so nothing here
is reached with input the schema forbids.
"""

from __future__ import annotations

import logging
from typing import Any

from ocpp.charge_point import snake_to_camel_case
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action

from agent.auth.types import AuthStatus, ListItem
from agent.charging_profiles import ProfileError
from agent.energy.profile_shape import with_start
from agent.timefmt import utc_text
from agent.uplink.answers import AnswerBook, MatchedAnswers
from agent.uplink.error_codes import VersionSpelledErrors
from agent.uplink.ocpp_log import OcppLibraryLog
from agent.uplink.routing import GuardedRouting
# the date-time check both versions need (jsonschema ignores format: date-time)
from agent.uplink.v201.station_fields import date_time
from agent.uplink.v16.maintenance import MaintenanceHandlers

log = logging.getLogger("evsite.uplink.v16")

TRIGGERABLE = ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification",
               "DiagnosticsStatusNotification", "FirmwareStatusNotification")


class Station(VersionSpelledErrors, GuardedRouting, MatchedAnswers, MaintenanceHandlers, ChargePoint):
    """``ctx`` is the V16Uplink of this connection (session.py). Answers to our CALLs
    are matched by id (agent/uplink/answers.py), not through the library's queue."""

    route_log = log

    def __init__(self, station_id: str, connection: Any, ctx: Any, *, response_timeout: float) -> None:
        super().__init__(station_id, connection, response_timeout=response_timeout, logger=_ocpp_log)
        self.ctx = ctx
        self.answers = AnswerBook()

    def out_of_range(self, payload: Any) -> str | None:
        return out_of_int32(payload)

    # ---- transactions -------------------------------------------------------------------
    @on(Action.remote_start_transaction)
    async def on_remote_start(self, id_tag: str, connector_id: int | None = None, charging_profile: dict | None = None) -> Any:
        ctx = self.ctx
        if charging_profile is not None:
            profile = snake_to_camel_case(charging_profile)
            if profile.get("chargingProfilePurpose") != "TxProfile" or connector_id in (None, 0):
                log.info("RemoteStartTransaction refused: its profile must be a TxProfile for a given connector")
                return call_result.RemoteStartTransaction(status="Rejected")
        ok = await ctx.sessions.remote_start(connector_id, id_tag, remote_start_id=None)
        if ok and charging_profile is not None and connector_id:
            try:
                await ctx.profiles.put(connector_id, profile, tx_running=True)
            except ProfileError as exc:
                log.info("RemoteStartTransaction's profile not installed: %s", exc)
        return call_result.RemoteStartTransaction(status="Accepted" if ok else "Rejected")

    @on(Action.remote_stop_transaction)
    async def on_remote_stop(self, transaction_id: int) -> Any:
        tx_id = await self.ctx.tx_id_for(transaction_id)
        ok = tx_id is not None and await self.ctx.sessions.remote_stop(tx_id)
        return call_result.RemoteStopTransaction(status="Accepted" if ok else "Rejected")

    @on(Action.unlock_connector)
    async def on_unlock(self, connector_id: int) -> Any:
        return call_result.UnlockConnector(status=await self.ctx.unlock(connector_id))

    # ---- availability and reset -----------------------------------------------------------
    @on(Action.change_availability)
    async def on_change_availability(self, connector_id: int, type: str) -> Any:
        status = await self.ctx.sessions.set_availability(connector_id, type == "Operative")
        return call_result.ChangeAvailability(status=status)

    @on(Action.reset)
    async def on_reset(self, type: str) -> Any:
        return call_result.Reset(status="Accepted")

    @after(Action.reset)
    async def after_reset(self, type: str) -> None:
        await self.ctx.reset(hard=(type == "Hard"))

    # ---- TriggerMessage ---------------------------------------------------------------------
    @on(Action.trigger_message)
    async def on_trigger(self, requested_message: str, connector_id: int | None = None) -> Any:
        if requested_message not in TRIGGERABLE:
            return call_result.TriggerMessage(status="NotImplemented")
        if connector_id is not None and connector_id != 0 and connector_id not in self.ctx.sessions.connectors:
            return call_result.TriggerMessage(status="Rejected")
        return call_result.TriggerMessage(status="Accepted")

    @after(Action.trigger_message)
    async def after_trigger(self, requested_message: str, connector_id: int | None = None) -> None:
        if requested_message in TRIGGERABLE:
            await self.ctx.triggered(requested_message, connector_id)

    # ---- configuration ---------------------------------------------------------------------
    @on(Action.get_configuration)
    async def on_get_configuration(self, key: list[str] | None = None) -> Any:
        settings = self.ctx.settings
        if not key:
            known = [{"key": d.name, "readonly": d.readonly, "value": text} for d, text in settings.items()]
            return call_result.GetConfiguration(configuration_key=known)
        limit = settings["GetConfigurationMaxKeys"]
        wanted = key[:limit]
        known = [{"key": k, "readonly": settings.defs[k].readonly, "value": settings.text(k)} for k in wanted if k in settings.defs]
        unknown = [k for k in wanted if k not in settings.defs]
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.change_configuration)
    async def on_change_configuration(self, key: str, value: str) -> Any:
        status = await self.ctx.settings.change(key, value)
        return call_result.ChangeConfiguration(status=status)

    # ---- authorization ---------------------------------------------------------------------
    @on(Action.clear_cache)
    async def on_clear_cache(self) -> Any:
        ok = await self.ctx.authorizer.cache.clear()
        return call_result.ClearCache(status="Accepted" if ok else "Rejected")

    @on(Action.get_local_list_version)
    async def on_get_local_list_version(self) -> Any:
        return call_result.GetLocalListVersion(list_version=await self.ctx.authorizer.local_list.version())

    @on(Action.send_local_list)
    async def on_send_local_list(self, list_version: int, update_type: str, local_authorization_list: list | None = None) -> Any:
        items = []
        for entry in local_authorization_list or []:
            info = entry.get("id_tag_info")
            items.append(ListItem(
                entry["id_tag"],
                AuthStatus(info["status"]) if info else None,
                date_time(info.get("expiry_date"), "idTagInfo.expiryDate") if info else None,
                info.get("parent_id_tag") if info else None,
            ))
        outcome = await self.ctx.authorizer.local_list.send_local_list(list_version, update_type, items)
        return call_result.SendLocalList(status=outcome.status.value)

    # ---- reservations ------------------------------------------------------------------------
    @on(Action.reserve_now)
    async def on_reserve_now(self, connector_id: int, expiry_date: str, id_tag: str, reservation_id: int,
                             parent_id_tag: str | None = None) -> Any:
        if connector_id == 0 and not self.ctx.settings["ReserveConnectorZeroSupported"]:
            return call_result.ReserveNow(status="Rejected")
        expiry = date_time(expiry_date, "expiryDate")
        status = await self.ctx.sessions.reserve(reservation_id, connector_id, id_tag, expiry, parent_id_tag)
        return call_result.ReserveNow(status=status)

    @on(Action.cancel_reservation)
    async def on_cancel_reservation(self, reservation_id: int) -> Any:
        ok = await self.ctx.sessions.cancel_reservation(reservation_id)
        return call_result.CancelReservation(status="Accepted" if ok else "Rejected")

    # ---- smart charging ------------------------------------------------------------------------
    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict) -> Any:
        # an Absolute profile without startSchedule starts when received (1.6 3.13.1); kept
        # with that time so it means the same after a restart
        profile = with_start(snake_to_camel_case(cs_charging_profiles), self.ctx.clock.now())
        sessions = self.ctx.sessions
        if connector_id != 0 and connector_id not in sessions.connectors:
            return call_result.SetChargingProfile(status="Rejected")
        tx_id = None
        if connector_id:
            c = sessions.connectors[connector_id]
            tx_id = c.tx.tx_id if c.tx else None
            wanted = profile.get("transactionId")
            if wanted is not None and profile.get("chargingProfilePurpose") == "TxProfile":
                if tx_id is None or await self.ctx.tx_id_for(wanted) != tx_id:
                    log.info("SetChargingProfile refused: transactionId %s does not run on connector %d", wanted, connector_id)
                    return call_result.SetChargingProfile(status="Rejected")
        try:
            await self.ctx.profiles.put(connector_id, profile, tx_running=tx_id is not None, tx_id=tx_id)
        except ProfileError as exc:
            log.info("SetChargingProfile refused: %s", exc)
            return call_result.SetChargingProfile(status="Rejected")
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.clear_charging_profile)
    async def on_clear_charging_profile(self, id: int | None = None, connector_id: int | None = None,
                                        charging_profile_purpose: str | None = None, stack_level: int | None = None) -> Any:
        n = await self.ctx.profiles.clear(profile_id=id, connector_id=connector_id, purpose=charging_profile_purpose,
                                          stack_level=stack_level)
        return call_result.ClearChargingProfile(status="Accepted" if n else "Unknown")

    @on(Action.get_composite_schedule)
    async def on_get_composite_schedule(self, connector_id: int, duration: int, charging_rate_unit: str | None = None) -> Any:
        if connector_id != 0 and connector_id not in self.ctx.sessions.connectors:
            return call_result.GetCompositeSchedule(status="Rejected")
        now = self.ctx.clock.now().replace(microsecond=0)
        schedule = self.ctx.composite_schedule(connector_id, now, duration, charging_rate_unit or "A")
        if schedule is None:
            return call_result.GetCompositeSchedule(status="Rejected")
        return call_result.GetCompositeSchedule(status="Accepted", connector_id=connector_id,
                                                schedule_start=schedule.get("startSchedule", utc_text(now)), charging_schedule=schedule)

    # ---- the rest ----------------------------------------------------------------------------------
    @on(Action.data_transfer)
    async def on_data_transfer(self, vendor_id: str, message_id: str | None = None, data: str | None = None) -> Any:
        return call_result.DataTransfer(status="UnknownVendorId")


def out_of_int32(value: Any, path: str = "") -> str | None:
    """The path of the first integer outside -2^31 .. 2^31-1 (OCPP's integer type), if any:
    such ids and versions cannot be kept, so the call is refused before it acts."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return path or "payload" if not -2**31 <= value < 2**31 else None
    if isinstance(value, dict):
        for k, v in value.items():
            if (hit := out_of_int32(v, f"{path}.{k}" if path else str(k))) is not None:
                return hit
    if isinstance(value, list):
        for i, v in enumerate(value):
            if (hit := out_of_int32(v, f"{path}[{i}]")) is not None:
                return hit
    return None


_ocpp_log = OcppLibraryLog(logging.getLogger("evsite.uplink.ocpp"), "1.6")
__all__ = ["Station"]
