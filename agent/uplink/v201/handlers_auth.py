"""Authorization (2.0.1 functional blocks C and D): ClearCache, GetLocalListVersion,
SendLocalList. Authorize itself is the station's call (session.authorize); the offline
policy is the AuthCtrlr variables, mapped onto the shared settings."""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from agent.auth.types import AuthStatus, ListItem, UpdateStatus
from agent.uplink.v201.station_fields import date_time


class AuthHandlers:
    ctx: Any

    @on(Action.clear_cache)
    async def on_v201_clear_cache(self, **_: Any) -> Any:
        ok = await self.ctx.authorizer.cache.clear()
        if ok:
            return call_result.ClearCache(status="Accepted")
        return call_result.ClearCache(status="Rejected", status_info={"reason_code": "CacheDisabled",
                                                                     "additional_info": "AuthCacheCtrlr.Enabled is false"})

    @on(Action.get_local_list_version)
    async def on_v201_get_local_list_version(self, **_: Any) -> Any:
        version = await self.ctx.authorizer.local_list.version()
        return call_result.GetLocalListVersion(version_number=max(0, version))

    @on(Action.send_local_list)
    async def on_v201_send_local_list(self, version_number: int, update_type: str,
                                      local_authorization_list: list[dict[str, Any]] | None = None, **_: Any) -> Any:
        items = []
        for entry in local_authorization_list or []:
            info = entry.get("id_token_info")
            expiry = info.get("cache_expiry_date_time") if info else None
            group = (info.get("group_id_token") or {}).get("id_token") if info else None
            items.append(ListItem(entry["id_token"]["id_token"], AuthStatus(info["status"]) if info else None,
                                  date_time(expiry, "cacheExpiryDateTime") if expiry else None, group))
        outcome = await self.ctx.authorizer.local_list.send_local_list(version_number, update_type, items)
        if outcome.status is UpdateStatus.ACCEPTED:
            return call_result.SendLocalList(status="Accepted")
        status = "VersionMismatch" if outcome.status is UpdateStatus.VERSION_MISMATCH else "Failed"
        return call_result.SendLocalList(status=status, status_info={"reason_code": outcome.status.value[:20],
                                                                     "additional_info": outcome.reason[:512]})
