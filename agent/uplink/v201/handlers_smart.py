"""Smart charging (2.0.1 functional block K): SetChargingProfile, GetChargingProfiles with
ReportChargingProfiles, ClearChargingProfile, GetCompositeSchedule. Profiles go into the
one profile book both versions share (converted by profiles.py); the composite schedule
comes from load management, the same function 1.6 asks."""

from __future__ import annotations

import logging
from typing import Any

from ocpp.charge_point import snake_to_camel_case
from ocpp.routing import after, on
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action

from agent.charging_profiles import ProfileError
from agent.uplink.v201.profiles import PURPOSE_IN, ConversionError, composite_to_v201, from_book, to_book

log = logging.getLogger("evsite.uplink.v201")


def _info(code: str, text: str = "") -> dict[str, str]:
    out = {"reason_code": code[:20]}
    if text:
        out["additional_info"] = text[:512]
    return out


class SmartChargingHandlers:
    ctx: Any
    pending_reports: dict[int, list[Any]]

    @on(Action.set_charging_profile)
    async def on_v201_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        ctx = self.ctx
        profile = snake_to_camel_case(charging_profile)
        if evse_id != 0 and evse_id not in ctx.sessions.connectors:
            return call_result.SetChargingProfile(status="Rejected", status_info=_info("UnknownEvse", f"no EVSE {evse_id}"))
        try:
            book, extras = to_book(profile, ctx.clock.now())
        except ConversionError as exc:
            log.info("SetChargingProfile refused: %s", exc)
            return call_result.SetChargingProfile(status="Rejected", status_info=_info("InvalidProfile", str(exc)))
        tx_id = None
        if evse_id:
            c = ctx.sessions.connectors[evse_id]
            tx_id = c.tx.tx_id if c.tx else None
        if book["chargingProfilePurpose"] == "TxProfile":
            wanted = profile.get("transactionId")
            if wanted is None or wanted != tx_id:
                why = (f"transaction {wanted} does not run on EVSE {evse_id}" if wanted
                       else "a TxProfile must name the transaction it is for")
                log.info("SetChargingProfile refused: %s", why)
                return call_result.SetChargingProfile(status="Rejected", status_info=_info("TxNotFound", why))
        try:
            await ctx.profiles.put(evse_id, book, tx_running=tx_id is not None, tx_id=tx_id)
        except ProfileError as exc:
            log.info("SetChargingProfile refused: %s", exc)
            return call_result.SetChargingProfile(status="Rejected", status_info=_info("InvalidProfile", str(exc)))
        await ctx.save_profile_extras(dict(ctx.profile_extras, **{str(book["chargingProfileId"]): extras}))
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.get_charging_profiles)
    async def on_v201_get_charging_profiles(self, request_id: int, charging_profile: dict[str, Any],
                                            evse_id: int | None = None, **_: Any) -> Any:
        found = self._select(charging_profile, evse_id)
        if not found:
            return call_result.GetChargingProfiles(status="NoProfiles")
        self.pending_reports[request_id] = found
        return call_result.GetChargingProfiles(status="Accepted")

    @after(Action.get_charging_profiles)
    def after_v201_get_charging_profiles(self, request_id: int, **_: Any) -> None:
        found = self.pending_reports.pop(request_id, None)
        if found:
            self.ctx.later(self._report_profiles(request_id, found), f"ReportChargingProfiles {request_id}")

    def _select(self, criteria: dict[str, Any], evse_id: int | None) -> list[dict[str, Any]]:
        sources = criteria.get("charging_limit_source")
        if sources and "CSO" not in sources:
            return []  # every profile here was set by the CSMS (source CSO)
        purpose = criteria.get("charging_profile_purpose")
        ids = criteria.get("charging_profile_id")
        level = criteria.get("stack_level")
        out = []
        for p in self.ctx.profiles.profiles:
            if evse_id is not None and p["connector_id"] != evse_id:
                continue
            if purpose is not None and p["chargingProfilePurpose"] != PURPOSE_IN.get(purpose):
                continue
            if ids and p["chargingProfileId"] not in ids:
                continue
            if level is not None and p["stackLevel"] != level:
                continue
            out.append(p)
        return out

    async def _report_profiles(self, request_id: int, found: list[dict[str, Any]]) -> None:
        by_evse: dict[int, list[dict[str, Any]]] = {}
        for p in found:
            extras = self.ctx.profile_extras.get(str(p["chargingProfileId"]))
            by_evse.setdefault(p["connector_id"], []).append(from_book(p, extras))
        evses = sorted(by_evse)
        for n, evse in enumerate(evses):
            await self.ctx._call(call.ReportChargingProfiles(
                request_id=request_id, charging_limit_source="CSO", evse_id=evse, charging_profile=by_evse[evse],
                tbc=True if n < len(evses) - 1 else None))

    @on(Action.clear_charging_profile)
    async def on_v201_clear_charging_profile(self, charging_profile_id: int | None = None,
                                             charging_profile_criteria: dict[str, Any] | None = None, **_: Any) -> Any:
        crit = charging_profile_criteria or {}
        purpose = crit.get("charging_profile_purpose")
        if purpose is not None and purpose not in PURPOSE_IN:
            return call_result.ClearChargingProfile(status="Unknown")
        n = await self.ctx.profiles.clear(profile_id=charging_profile_id, connector_id=crit.get("evse_id"),
                                          purpose=PURPOSE_IN.get(purpose) if purpose else None,
                                          stack_level=crit.get("stack_level"))
        if n:
            kept = {str(p["chargingProfileId"]) for p in self.ctx.profiles.profiles}
            await self.ctx.save_profile_extras({k: v for k, v in self.ctx.profile_extras.items() if k in kept})
        return call_result.ClearChargingProfile(status="Accepted" if n else "Unknown")

    @on(Action.get_composite_schedule)
    async def on_v201_get_composite_schedule(self, duration: int, evse_id: int, charging_rate_unit: str | None = None,
                                             **_: Any) -> Any:
        ctx = self.ctx
        if evse_id != 0 and evse_id not in ctx.sessions.connectors:
            return call_result.GetCompositeSchedule(status="Rejected", status_info=_info("UnknownEvse"))
        now = ctx.clock.now().replace(microsecond=0)
        unit = charging_rate_unit or "A"
        schedule = ctx.composite_schedule(evse_id, duration, unit)
        if schedule is None:
            return call_result.GetCompositeSchedule(status="Rejected", status_info=_info(
                "NoLoadManagement", "load management is not running on this site"))
        composite = composite_to_v201(snake_to_camel_case(schedule), evse_id, now, duration, unit)
        if not composite["chargingSchedulePeriod"]:
            return call_result.GetCompositeSchedule(status="Rejected", status_info=_info(
                "NoLimit", "no charging profile limits this EVSE in that window"))
        return call_result.GetCompositeSchedule(status="Accepted", schedule=composite)
