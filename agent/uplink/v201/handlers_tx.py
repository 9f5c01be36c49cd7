"""Transactions and reservations (2.0.1 functional blocks E, F, H):
RequestStartTransaction, RequestStopTransaction, GetTransactionStatus, UnlockConnector,
ReserveNow, CancelReservation. The transactionId is the station's own (the sessions'
``tx_id``), so no mapping to a CSMS-assigned id is needed as in 1.6."""

from __future__ import annotations

import logging
from typing import Any

from ocpp.charge_point import snake_to_camel_case
from ocpp.routing import on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from agent.charging_profiles import ProfileError
from agent.sessions.events import MeterSampled, TransactionEnded, TransactionStarted, TransactionUpdated
from agent.uplink.v201.profiles import ConversionError, to_book
from agent.uplink.v201.station_fields import date_time

log = logging.getLogger("evsite.uplink.v201")


def _info(code: str, text: str = "") -> dict[str, str]:
    out = {"reason_code": code[:20]}
    if text:
        out["additional_info"] = text[:512]
    return out


class TransactionHandlers:
    ctx: Any

    @on(Action.request_start_transaction)
    async def on_v201_request_start(self, id_token: dict[str, Any], remote_start_id: int, evse_id: int | None = None,
                                    group_id_token: dict[str, Any] | None = None,
                                    charging_profile: dict[str, Any] | None = None, **_: Any) -> Any:
        ctx = self.ctx
        if not ctx.accepted:
            return call_result.RequestStartTransaction(status="Rejected", status_info=_info("NotAccepted"))
        if evse_id is not None and evse_id not in ctx.sessions.connectors:
            return call_result.RequestStartTransaction(status="Rejected", status_info=_info("UnknownEvse"))
        book = None
        if charging_profile is not None:
            profile = snake_to_camel_case(charging_profile)
            if profile.get("chargingProfilePurpose") != "TxProfile" or not evse_id:
                return call_result.RequestStartTransaction(status="Rejected", status_info=_info(
                    "InvalidProfile", "the profile of a RequestStartTransaction must be a TxProfile for a given EVSE"))
            try:
                book, _extras = to_book(profile, ctx.clock.now())
            except ConversionError as exc:
                return call_result.RequestStartTransaction(status="Rejected", status_info=_info("InvalidProfile", str(exc)))
        ok = await ctx.sessions.remote_start(evse_id, id_token["id_token"], remote_start_id=remote_start_id,
                                             id_token_type=id_token["type"])
        if ok and book is not None:
            try:
                await ctx.profiles.put(evse_id, book, tx_running=True)
            except ProfileError as exc:
                log.info("RequestStartTransaction's profile not installed: %s", exc)
        return call_result.RequestStartTransaction(status="Accepted" if ok else "Rejected")

    @on(Action.request_stop_transaction)
    async def on_v201_request_stop(self, transaction_id: str, **_: Any) -> Any:
        ok = await self.ctx.sessions.remote_stop(transaction_id)
        return call_result.RequestStopTransaction(status="Accepted" if ok else "Rejected")

    @on(Action.get_transaction_status)
    async def on_v201_get_transaction_status(self, transaction_id: str | None = None, **_: Any) -> Any:
        store = self.ctx.store
        rows = await store.outbox_head(limit=max(1, await store.outbox_len()))
        if transaction_id is None:
            queued = any(_is_tx_row(r) for r in rows)
            return call_result.GetTransactionStatus(messages_in_queue=queued)
        queued = any(r.tx_id == transaction_id for r in rows)
        tx = await store.transaction(transaction_id)
        return call_result.GetTransactionStatus(messages_in_queue=queued,
                                                ongoing_indicator=tx is not None and tx.is_open)

    @on(Action.unlock_connector)
    async def on_v201_unlock(self, evse_id: int, connector_id: int, **_: Any) -> Any:
        c = self.ctx.sessions.connectors.get(evse_id)
        if c is None or connector_id != 1:
            return call_result.UnlockConnector(status="UnknownConnector")
        if c.tx is not None:
            return call_result.UnlockConnector(status="OngoingAuthorizedTransaction")
        unlock = getattr(self.ctx.rt, "unlock", None)
        if unlock is None:
            return call_result.UnlockConnector(status="UnlockFailed", status_info=_info(
                "NoUnlock", "this site's chargers have no unlock the agent can drive"))
        answer = await unlock(evse_id)
        return call_result.UnlockConnector(status="Unlocked" if answer == "Unlocked" else "UnlockFailed")

    @on(Action.reserve_now)
    async def on_v201_reserve_now(self, id: int, expiry_date_time: str, id_token: dict[str, Any],
                                  connector_type: str | None = None, evse_id: int | None = None,
                                  group_id_token: dict[str, Any] | None = None, **_: Any) -> Any:
        if evse_id is None:
            return call_result.ReserveNow(status="Rejected", status_info=_info(
                "NoEvse", "reservations without an EVSE are not supported (NonEvseSpecific false)"))
        group = (group_id_token or {}).get("id_token")
        expiry = date_time(expiry_date_time, "expiryDateTime")
        status = await self.ctx.sessions.reserve(id, evse_id, id_token["id_token"], expiry, group)
        return call_result.ReserveNow(status=status)

    @on(Action.cancel_reservation)
    async def on_v201_cancel_reservation(self, reservation_id: int, **_: Any) -> Any:
        ok = await self.ctx.sessions.cancel_reservation(reservation_id)
        return call_result.CancelReservation(status="Accepted" if ok else "Rejected")


def _is_tx_row(row: Any) -> bool:
    ev = row.event
    return isinstance(ev, (TransactionStarted, TransactionUpdated, TransactionEnded)) or (
        isinstance(ev, MeterSampled) and ev.tx_id is not None)
