"""One OCPP 2.0.1 connection's life: boot, current statuses, heartbeats, the outbox.

Order after a connect, as 2.0.1 asks (B01-B04):

1. BootNotification (reason PowerUp; RemoteReset after a Reset the CSMS asked for;
   FirmwareUpdate when this release is on trial after an update)
   until Accepted; 2.0.1 boots once per start of the agent, so a reconnect after an
   Accepted boot goes straight on. While Pending the station sends nothing else but
   answers the CSMS (GetVariables, GetBaseReport, ...; a TriggerMessage for the boot
   sends it at once); while Rejected every CSMS call is answered SecurityError.
2. The current status of every connector (StatusNotification per EVSE/connector);
   a queued status goes out only while it is still current and not yet reported, so
   statuses from before this connection are never replayed over the current ones.
3. The outbox drains in order (agent/uplink/outbox.py): TransactionEvents with the
   seqNo fixed at record time and the offline flag set when they happened; heartbeats,
   reservation updates and follow-ups of CSMS calls (NotifyReport,
   ReportChargingProfiles, triggered messages) run beside it, one CALL at a time.

The link counts as online (sessions mark events offline=false; the authorizer asks the
CSMS) only between an Accepted boot and the end of the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Any

from ocpp.exceptions import OCPPError
from ocpp.v201 import call

from agent import __version__
from agent.auth.types import AuthResult, AuthStatus, OfflineError
from agent.sessions.events import (
    ConnectorStatus, MeterSampled, StatusChanged, StopReason, TransactionEnded, TransactionStarted,
    TransactionUpdated, Trigger,
)
from agent.timefmt import parse_utc, utc_text
from agent.uplink.answers import receive, until_answered
from agent.uplink.connection import Link
from agent.uplink.outbox import DeliveryStats, Outcome, Skip, deliver
from agent.uplink.v201 import messages
from agent.uplink.v201.device_model import DeviceModel, chunks
from agent.uplink.v201.maintenance import boot_reason, maintenance_online
from agent.uplink.v201.station import Station

log = logging.getLogger("evsite.uplink.v201")

BOOT_REASON_KEY = "v201.boot_reason"
PROFILE_EXTRAS_KEY = "v201.profile_extras"
TX_EVENTS = (TransactionStarted, TransactionUpdated, TransactionEnded)


class V201Uplink:
    """The 2.0.1 adapter over the site's parts (``rt``: the supervisor's Runtime)."""

    version = "2.0.1"

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.sessions = rt.sessions
        self.settings = rt.settings
        self.authorizer = rt.authorizer
        self.store = rt.store
        self.profiles = rt.profiles
        self.clock = rt.clock
        self.model = DeviceModel(self)
        self.station: Station | None = None
        self.boot_status: str | None = None
        self.accepted = False               # an Accepted boot since the agent started
        self.clock_offset: float | None = None
        self.stats = DeliveryStats()
        self.recent: deque[str] = deque(maxlen=50)
        self.reset_pending = False
        self.profile_extras: dict[str, Any] = {}
        self._last_status: dict[int, str] = {}
        self._boot_now = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._reservations: deque[tuple[int, str]] = deque(maxlen=1000)
        self._reservations_changed = asyncio.Event()
        self.sessions.on_reservation_ended.append(self._reservation_ended)

    # ---- the connection --------------------------------------------------------------------
    async def run_link(self, link: Link) -> None:
        await self.model.load()
        self.profile_extras = await self.store.kv_get(PROFILE_EXTRAS_KEY) or {}
        up = self.rt.config.uplink
        station = Station(up.station_id, link.ws, self, response_timeout=up.call_timeout)
        self.station = station
        self._last_status = {}
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(receive(station), name="ocpp receive")
                if not self.accepted:
                    await self._boot()
                self._set_online(True)
                await self._send_statuses()
                maintenance_online(self)       # firmware/log statuses from now on, through this link
                tg.create_task(deliver(self.store, self, sleep=self.clock.sleep, stats=self.stats), name="outbox")
                tg.create_task(self._heartbeats(), name="heartbeat")
                tg.create_task(self._reservation_updates(), name="reservation updates")
        finally:
            self._set_online(False)
            self.station = None
            self._tg = None

    def _set_online(self, online: bool) -> None:
        self.sessions.link_online = online
        self.authorizer.online = self.authorize if online else None
        self.authorizer.is_online = (lambda: True) if online else (lambda: False)

    async def _boot(self) -> None:
        reason = await self.store.kv_get(BOOT_REASON_KEY) or boot_reason(self.rt)
        while True:
            self._boot_now.clear()
            result = await self._send_boot(reason)
            if self.accepted:
                if reason != "PowerUp":
                    await self.store.kv_delete(BOOT_REASON_KEY)
                return
            wait = int(result.interval) if int(result.interval) > 0 else 60
            log.warning("BootNotification %s: trying again in %d s", self.boot_status, wait)
            sleeper = asyncio.ensure_future(self.clock.sleep(wait))
            woken = asyncio.ensure_future(self._boot_now.wait())
            try:
                await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                woken.cancel()
                await asyncio.gather(sleeper, woken, return_exceptions=True)
            if self._boot_now.is_set():
                reason = "Triggered"

    async def _send_boot(self, reason: str) -> Any:
        up = self.rt.config.uplink
        station: dict[str, Any] = {"model": up.model[:20], "vendorName": up.vendor[:50],
                                   "firmwareVersion": __version__[:50]}
        if up.serial:
            station["serialNumber"] = up.serial[:25]
        result = await self._call(call.BootNotification(charging_station=station, reason=reason))
        self.boot_status = str(result.status)
        try:
            self.clock_offset = (parse_utc(result.current_time) - self.clock.now()).total_seconds()
            if abs(self.clock_offset) > 5:
                log.warning("CSMS clock differs from ours by %.1f s", self.clock_offset)
        except ValueError:
            log.warning("BootNotification answer has an unreadable currentTime %r", result.current_time)
        if self.boot_status == "Accepted":
            if int(result.interval) > 0:
                await self.settings.change("HeartbeatInterval", str(int(result.interval)))
            self.accepted = True
            log.info("BootNotification (%s) accepted (heartbeat every %d s)", reason, self.settings["HeartbeatInterval"])
        return result

    def boot_requested(self) -> None:
        """TriggerMessage(BootNotification) while not yet Accepted: boot now."""
        self._boot_now.set()

    async def _heartbeats(self) -> None:
        while True:
            await self.clock.sleep(max(1, self.settings["HeartbeatInterval"] or 86_400))
            await self.heartbeat()

    async def heartbeat(self) -> None:
        result = await self._call(call.Heartbeat())
        try:
            self.clock_offset = (parse_utc(result.current_time) - self.clock.now()).total_seconds()
        except ValueError:
            pass

    async def _send_statuses(self, connector_ids: list[int] | None = None) -> None:
        for cid in connector_ids if connector_ids is not None else sorted(self.sessions.connectors):
            view = self.sessions.connectors[cid].recorded
            if view is None:
                continue
            try:
                await self._call(messages.status_notification(cid, view.status, self.clock.now()))
            except OCPPError as exc:   # a CSMS refusing a status must not cost the connection
                log.warning("StatusNotification for EVSE %d refused by the CSMS: %s", cid, exc)
                continue
            self._last_status[cid] = messages.STATUS[view.status]

    async def _call(self, payload: Any, message_id: str | None = None) -> Any:
        if self.station is None:
            raise OfflineError("not connected")
        name = type(payload).__name__
        self.recent.append(f"{utc_text(self.clock.now())} -> {name}")
        result = await self.station.call(payload, suppress=False, unique_id=message_id)
        self.recent.append(f"{utc_text(self.clock.now())} <- {name} answered")
        return result

    def later(self, coro: Awaitable[Any], name: str) -> None:
        """Run a follow-up of a CSMS call (NotifyReport, a triggered message) beside the
        outbox, after the call's answer went out; dropped when the connection is gone."""
        if self._tg is None:
            coro.close()  # type: ignore[attr-defined]
            log.info("%s not sent: not connected", name)
            return
        self._tg.create_task(_best_effort(coro, name), name=name)

    # ---- the outbox (agent/uplink/outbox.Delivery) ------------------------------------------
    async def build(self, row: Any) -> Any:
        ev = row.event
        if isinstance(ev, StatusChanged) and ev.connector_id != 0:
            # a queued status is sent only while it is still the connector's status and
            # not yet said: statuses from before this connection (the current one was sent
            # at connect) and ones a newer change overtook are skipped; no clock involved
            c = self.sessions.connectors.get(ev.connector_id)
            word = messages.STATUS[ev.status]
            if c is None or c.recorded is None or messages.STATUS[c.recorded.status] != word:
                raise Skip(f"{word} is no longer the status of EVSE {ev.connector_id}")
            if self._last_status.get(ev.connector_id) == word:
                raise Skip(f"{ev.status.value} is {word} again in 2.0.1: already reported")
        return await messages.build(row, self.store, self.settings)

    async def send(self, payload: Any, message_id: str) -> Any:
        station = self.station
        if station is not None and (late := await station.late_result(payload, message_id)) is not None:
            return late   # its answer came after we stopped waiting: no need to send it again
        return await self._call(payload, message_id)

    async def until_answered(self, message_id: str) -> None:
        await until_answered(self.station, message_id)

    async def handle(self, row: Any, payload: Any, result: Any) -> Outcome:
        ev = row.event
        if isinstance(ev, StatusChanged):
            self._last_status[ev.connector_id] = messages.STATUS[ev.status]
        elif isinstance(ev, (TransactionStarted, TransactionEnded)) and getattr(result, "id_token_info", None):
            tag = ev.id_tag
            if tag:
                info = id_token_info(result.id_token_info)
                await self.authorizer.record(tag, info)
                if isinstance(ev, TransactionStarted) and not info.accepted:
                    await self.sessions.tx_authorization(ev.tx_id, info)
        return Outcome()

    def retry_policy(self, row: Any) -> tuple[int, float] | None:
        """MessageAttemptsTransactionEvent / MessageAttemptIntervalTransactionEvent (the
        same settings as 1.6's TransactionMessageAttempts / RetryInterval)."""
        ev = row.event
        if isinstance(ev, TX_EVENTS) or (isinstance(ev, MeterSampled) and ev.tx_id):
            return self.settings["TransactionMessageAttempts"], float(self.settings["TransactionMessageRetryInterval"])
        return None

    # ---- what the handlers and the authorizer use ---------------------------------------------
    async def authorize(self, id_tag: str) -> AuthResult:
        result = await self._call(call.Authorize(id_token=messages.id_token(id_tag)))
        return id_token_info(result.id_token_info)

    def availability(self, evse: int | None) -> str:
        """AvailabilityState of the station (None) or of one EVSE/connector."""
        connectors = self.sessions.connectors
        if evse is None:
            station = self.sessions.station
            if station is not None and station.status is ConnectorStatus.FAULTED:
                return "Faulted"
            if connectors and all(not c.operative for c in connectors.values()):
                return "Unavailable"
            return "Available"
        c = connectors.get(evse)
        if c is None or c.recorded is None:
            return "Unavailable"
        return messages.STATUS[c.recorded.status]

    async def send_report(self, request_id: int, items: list[dict[str, Any]], size: int | None = None) -> None:
        generated = utc_text(self.clock.now())
        for seq_no, (part, tbc) in enumerate(chunks(items, size) if size else chunks(items)):
            await self._call(call.NotifyReport(request_id=request_id, generated_at=generated, seq_no=seq_no,
                                               report_data=part or None, tbc=tbc))

    async def send_statuses(self, connector_ids: list[int] | None) -> None:
        await self._send_statuses(connector_ids if connector_ids is not None else sorted(self.sessions.connectors))

    async def send_meter_values(self, connector_ids: list[int]) -> None:
        from agent.sessions.connector import sampled_values
        for cid in connector_ids:
            c = self.sessions.connectors[cid]
            values = sampled_values(c.reading, self.settings["MeterValuesSampledData"], energy_wh=c.energy_wh)
            if values:
                await self._call(call.MeterValues(evse_id=cid, meter_value=[
                    messages.meter_value(self.clock.now(), values, "Trigger")]))

    async def trigger_transaction_events(self, connector_ids: list[int]) -> None:
        """TriggerMessage(TransactionEvent): an Updated event with triggerReason Trigger
        for each running transaction, recorded so that it gets the next seqNo and goes
        out through the outbox in order."""
        for cid in connector_ids:
            tx = self.sessions.connectors[cid].tx
            if tx is not None:
                await self.store.record(TransactionUpdated(cid, self.clock.now(), tx.tx_id, Trigger.TRIGGER,
                                                           getattr(tx, "charging_state", None),
                                                           offline=not self.sessions.link_online))

    async def reset(self, immediate: bool) -> None:
        """Reset: Immediate stops every transaction (ImmediateReset) and restarts;
        OnIdle waits until no transaction runs. Either way the transactions' last events
        get a chance to reach the CSMS first (bounded), and the next boot says
        RemoteReset. Runs as a sessions task, not a connection's: a scheduled reset
        survives a dropped link."""
        await self.store.kv_set(BOOT_REASON_KEY, "RemoteReset")
        if immediate:
            n = await self.sessions.stop_all(StopReason.HARD_RESET)
            log.warning("immediate reset requested by the CSMS: %d transaction(s) stopped; restarting", n)
        else:
            self.reset_pending = True
            await self._idle_for(1.0)
            log.warning("reset (OnIdle) requested by the CSMS: no transaction runs any more; restarting")
        try:
            async with asyncio.timeout(10):
                while await self.store.outbox_len() and self.station is not None:
                    await self.clock.sleep(0.2)
        except TimeoutError:
            pass
        self.rt.request_restart(f"{'immediate' if immediate else 'OnIdle'} reset by the CSMS")

    async def _idle_for(self, seconds: float) -> None:
        """Until no transaction has run for ``seconds`` (so the last one's Ended event is
        in the outbox, not still on its way to the store)."""
        idle_since: float | None = None
        while idle_since is None or self.clock.monotonic() - idle_since < seconds:
            if self.sessions.busy():
                idle_since = None
            elif idle_since is None:
                idle_since = self.clock.monotonic()
            await self.clock.sleep(seconds / 4)

    def composite_schedule(self, connector_id: int, duration: int, unit: str) -> dict | None:
        """Load management's answer, from the same function 1.6 uses (1.6 chargingSchedule
        shape); None when load management is not running."""
        energy = self.rt.energy
        if energy is None or not hasattr(energy, "composite_schedule"):
            return None
        from agent.energy.wiring import composite
        try:
            return composite(energy, self.rt.config, connector_id, duration, unit)
        except ValueError as exc:
            log.info("GetCompositeSchedule for EVSE %d: %s", connector_id, exc)
            return None

    async def save_profile_extras(self, extras: dict[str, Any]) -> None:
        await self.store.kv_set(PROFILE_EXTRAS_KEY, extras)
        self.profile_extras = extras

    def _reservation_ended(self, connector_id: int, reservation_id: int, reason: str) -> None:
        self._reservations.append((reservation_id, reason))
        self._reservations_changed.set()

    async def _reservation_updates(self) -> None:
        """ReservationStatusUpdate for reservations that ended unused (expired/removed);
        kept in memory while offline."""
        while True:
            while self._reservations:
                reservation_id, reason = self._reservations[0]
                try:
                    await self._call(call.ReservationStatusUpdate(reservation_id=reservation_id,
                                                                  reservation_update_status=reason))
                except OCPPError as exc:   # refused: sending it again would not help
                    log.warning("ReservationStatusUpdate %d refused by the CSMS: %s", reservation_id, exc)
                except (TimeoutError, asyncio.TimeoutError):
                    await self.clock.sleep(5.0)
                    continue
                self._reservations.popleft()
            self._reservations_changed.clear()
            await self._reservations_changed.wait()

    def status(self) -> dict[str, Any]:
        return {"version": self.version, "boot": self.boot_status, "clock_offset_s": self.clock_offset,
                "delivered": self.stats.sent, "dropped": self.stats.dropped, "refused": self.stats.refused,
                "timeouts": self.stats.retried_timeouts, "reset_pending": self.reset_pending,
                "recent": list(self.recent)[-10:]}


def id_token_info(info: dict[str, Any] | None) -> AuthResult:
    """A 2.0.1 IdTokenInfo (snake_case, as the ocpp library hands it over) as an AuthResult."""
    if not info:
        return AuthResult(AuthStatus.INVALID)
    expiry = info.get("cache_expiry_date_time")
    group = (info.get("group_id_token") or {}).get("id_token")
    return AuthResult(AuthStatus(info["status"]), expiry=parse_utc(expiry) if expiry else None, group=group)


async def _best_effort(coro: Awaitable[Any], name: str) -> None:
    try:
        await coro
    except Exception as exc:  # a follow-up is best effort; the connection goes on
        log.warning("%s not completed: %s", name, exc)
