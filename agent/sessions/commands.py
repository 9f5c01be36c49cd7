"""What the CSMS, the installer and a card at the charger ask of the sessions.

A mixin of ``SessionManager`` (manager.py), kept apart so the poll-loop side and the
command side can each be read whole. Rules every command keeps: authorization, which
may ask the CSMS, happens outside the sessions' lock; what it changes happens inside
it, and only after re-checking that the connector is still as it was; events are
recorded before the command reports success.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from agent.auth.types import AuthResult, AuthStatus
from agent.sessions.connector import Connector, PendingAuth, Reservation
from agent.sessions.events import (
    ConnectorStatus, Event, SecurityEvent, StopReason, TransactionEnded, TransactionUpdated, Trigger,
)
from agent.timefmt import utc_text

log = logging.getLogger("evsite.sessions")


class SessionCommands:
    """Needs from the manager: connectors, authorizer, settings, store, clock, _lock,
    link_online, _emit, _end, _status_event, _setpoint, _apply_now, _spawn,
    _save_availability, on_reservation_ended."""

    connectors: dict[int, Connector]
    authorizer: Any
    settings: Any
    store: Any
    clock: Any
    _lock: Any
    link_online: bool
    async def present_tag(self, connector_id: int, id_tag: str, source: str = "local") -> AuthResult:
        """A tag shown at a connector: stops its transaction (same tag, or one of its
        group) or authorizes a new one."""
        c = self.connector(connector_id)
        if not id_tag or len(id_tag) > 36:
            raise ValueError(f"idTag must be 1..36 characters, got {len(id_tag)}")
        if c.tx is not None:
            tx = c.tx
            result = await self.authorizer.authorize_stop(id_tag, started_by=tx.id_tag, started_parent=tx.parent)
            if result.accepted:
                async with self._lock:
                    if c.tx is tx:
                        now = self.clock.now()
                        await self._emit(self._end(c, now, StopReason.LOCAL, id_tag=id_tag)
                                         + self._status_event(c, self._setpoint(c), now))
            log.info("connector %d: %s presented (%s) to stop: %s", connector_id, _show(id_tag), source, result.status.value)
            return result
        result = await self.authorizer.authorize(id_tag)
        log.info("connector %d: %s presented (%s): %s via %s", connector_id, _show(id_tag), source,
                 result.status.value, result.source.value)
        if not result.accepted:
            return result
        async with self._lock:
            if c.tx is not None or c.recovering is not None:
                return AuthResult(AuthStatus.CONCURRENT_TX, source=result.source)
            if not c.matches_reservation(id_tag, result.parent):
                log.info("connector %d is reserved for another tag", connector_id)
                return AuthResult(AuthStatus.INVALID, source=result.source)
            if not c.operative:
                return AuthResult(AuthStatus.INVALID, source=result.source)
            c.finishing = False
            c.pending = PendingAuth(id_tag, result.parent, self.clock.monotonic())
            await self._apply_now(c)
        return result

    async def remote_start(self, connector_id: int | None, id_tag: str, charging_profile: Any = None,
                           remote_start_id: int | None = None, id_token_type: str = "ISO14443") -> bool:
        """RemoteStartTransaction / RequestStartTransaction: True when accepted. Never
        waits for the CSMS (the handler answering it runs in the connection's loop)."""
        if connector_id is None or connector_id == 0:
            free = [c for c in self.connectors.values() if c.available_for_start() and c.pending is None]
            free.sort(key=lambda c: (not c.plugged, c.connector_id))
            if not free:
                return False
            c = free[0]
        else:
            c = self.connectors.get(connector_id)
            if c is None or not c.available_for_start():
                return False
        if not c.matches_reservation(id_tag, None):
            return False
        pending = PendingAuth(id_tag, None, self.clock.monotonic(), Trigger.REMOTE_START, id_token_type, remote_start_id)
        if self.settings["AuthorizeRemoteTxRequests"]:
            self._spawn(self._authorize_then_apply(c, pending), f"remote start {c.connector_id}")
            return True
        async with self._lock:
            c.pending = pending
            await self._apply_now(c)
        return True

    async def _authorize_then_apply(self, c: Connector, pending: PendingAuth) -> None:
        result = await self.authorizer.authorize(pending.id_tag)
        if not result.accepted:
            log.info("remote start on connector %d: %s not authorized (%s)", c.connector_id, _show(pending.id_tag), result.status.value)
            return
        async with self._lock:
            if c.tx is None:
                pending.parent = result.parent
                c.pending = pending
                await self._apply_now(c)

    async def remote_stop(self, tx_id: str) -> bool:
        async with self._lock:
            for c in self.connectors.values():
                if c.tx is not None and c.tx.tx_id == tx_id:
                    now = self.clock.now()
                    await self._emit(self._end(c, now, StopReason.REMOTE) + self._status_event(c, self._setpoint(c), now))
                    return True
        return False

    async def tx_authorization(self, tx_id: str, result: AuthResult) -> None:
        """The CSMS's verdict on a started transaction's tag (1.6 StartTransaction
        idTagInfo, 2.0.1 TransactionEvent idTokenInfo). Not Accepted: stop with
        DeAuthorized, or with StopTransactionOnInvalidId false, offer no energy."""
        if result.accepted:
            return
        async with self._lock:
            for c in self.connectors.values():
                if c.tx is not None and c.tx.tx_id == tx_id:
                    now = self.clock.now()
                    if self.settings["StopTransactionOnInvalidId"]:
                        log.info("connector %d: CSMS refused %s (%s): transaction stopped", c.connector_id,
                                 _show(c.tx.id_tag), result.status.value)
                        await self._emit(self._end(c, now, StopReason.DEAUTHORIZED) + self._status_event(c, self._setpoint(c), now))
                    else:
                        c.tx.suspended_by_csms = True
                        await self._emit([TransactionUpdated(c.connector_id, now, tx_id, Trigger.DEAUTHORIZED,
                                                             offline=not self.link_online)]
                                         + self._status_event(c, self._setpoint(c), now))

    async def set_availability(self, connector_id: int, operative: bool) -> str:
        """ChangeAvailability: "Accepted", "Scheduled" (a transaction runs; applies
        when it ends) or "Rejected" (no such connector)."""
        targets = list(self.connectors.values()) if connector_id == 0 else [self.connectors.get(connector_id)]
        if any(c is None for c in targets):
            return "Rejected"
        scheduled = False
        async with self._lock:
            for c in targets:
                assert c is not None
                if not operative and c.tx is not None:
                    c.inoperative_pending = True
                    scheduled = True
                else:
                    c.operative, c.inoperative_pending = operative, False
                    if not operative:
                        c.pending = None
            await self._save_availability()
            now = self.clock.now()
            events: list[Event] = []
            for c in targets:
                assert c is not None
                events += self._status_event(c, self._setpoint(c), now)
            await self._emit(events)
        return "Scheduled" if scheduled else "Accepted"

    async def reserve(self, reservation_id: int, connector_id: int, id_tag: str, expiry: datetime,
                      parent: str | None = None) -> str:
        """ReserveNow: Accepted, Faulted, Occupied, Rejected or Unavailable."""
        c = self.connectors.get(connector_id)
        if c is None:
            return "Rejected"
        async with self._lock:
            for other in self.connectors.values():
                if other.reservation is not None and other.reservation.reservation_id == reservation_id and other is not c:
                    other.reservation = None
            view = c.status(self._setpoint(c))
            if view.status is ConnectorStatus.FAULTED:
                return "Faulted"
            if view.status is ConnectorStatus.UNAVAILABLE:
                return "Unavailable"
            same = c.reservation is not None and c.reservation.reservation_id == reservation_id
            if c.tx is not None or c.plugged or c.pending is not None or (c.reservation is not None and not same):
                return "Occupied"
            c.reservation = Reservation(reservation_id, connector_id, id_tag, parent, expiry)
            await self.store.reservation_put(c.reservation.as_json())
            now = self.clock.now()
            await self._emit(self._status_event(c, self._setpoint(c), now))
        log.info("connector %d reserved (%d) for %s until %s", connector_id, reservation_id, _show(id_tag), utc_text(expiry))
        return "Accepted"

    async def cancel_reservation(self, reservation_id: int) -> bool:
        async with self._lock:
            for c in self.connectors.values():
                if c.reservation is not None and c.reservation.reservation_id == reservation_id:
                    c.reservation = None
                    await self.store.reservation_remove(reservation_id)
                    await self._emit(self._status_event(c, self._setpoint(c), self.clock.now()))
                    return True
        return False

    async def stop_all(self, reason: StopReason) -> int:
        """End every running transaction (reset, shutdown for an update); returns how many."""
        async with self._lock:
            now = self.clock.now()
            events: list[Event] = []
            for c in self.connectors.values():
                if c.tx is not None:
                    events += self._end(c, now, reason)
            await self._emit(events)
            return sum(1 for e in events if isinstance(e, TransactionEnded))

    async def security_event(self, type_: str, tech_info: str | None = None) -> None:
        await self._emit([SecurityEvent(0, self.clock.now(), type_, tech_info)])


def _show(tag: str) -> str:
    return tag if len(tag) <= 4 else tag[:4] + "\u2026"
