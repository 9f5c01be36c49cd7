"""One OCPP 1.6J connection's life: boot, current statuses, heartbeats, the outbox.

Order after every (re)connect, as the 1.6 spec and CSMSs expect:

1. BootNotification until Accepted. While Pending or Rejected nothing else is sent (the
   CSMS may still call us; we answer); the retry interval is the one the CSMS gave.
2. The current status of connector 0 and every connector, sent directly: statuses queued
   before this connection are history and are skipped when the outbox reaches them.
3. The outbox drains in order (agent/uplink/outbox.py); heartbeats run beside it.

The link counts as online (sessions mark events offline=false; the authorizer asks the
CSMS) only between an Accepted boot and the end of the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import datetime
from typing import Any

from ocpp.v16 import call

from agent import __version__
from agent.auth.types import AuthResult, AuthStatus, OfflineError
from agent.sessions.events import MeterSampled, StatusChanged, TransactionEnded, TransactionStarted
from agent.timefmt import parse_utc, utc_text
from agent.uplink.answers import receive, until_answered
from agent.uplink.connection import Link
from agent.uplink.outbox import DeliveryStats, Outcome, Skip, deliver
from agent.uplink.v16 import messages
from agent.uplink.v16.station import Station

log = logging.getLogger("evsite.uplink.v16")


class V16Uplink:
    """The 1.6 adapter over the site's parts (``rt``: the supervisor's Runtime)."""

    version = "1.6"

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.sessions = rt.sessions
        self.settings = rt.settings
        self.authorizer = rt.authorizer
        self.store = rt.store
        self.profiles = rt.profiles
        self.clock = rt.clock
        self.station: Station | None = None
        self.booted_at: datetime | None = None
        self.boot_status: str | None = None
        self.clock_offset: float | None = None      # CSMS time minus ours (s) at the last boot
        self.stats = DeliveryStats()
        self.recent: deque[str] = deque(maxlen=50)   # last messages, for status and diagnostics
        self._csms_ids: dict[int, str] = {}

    # ---- the connection --------------------------------------------------------------------
    async def run_link(self, link: Link) -> None:
        up = self.rt.config.uplink
        station = Station(up.station_id, link.ws, self, response_timeout=up.call_timeout)
        self.station = station
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(receive(station), name="ocpp receive")
                await self._boot(station)
                self._set_online(True)
                await self._send_statuses()
                tg.create_task(deliver(self.store, self, sleep=self.clock.sleep, stats=self.stats), name="outbox")
                tg.create_task(self._heartbeats(), name="heartbeat")
        finally:
            self._set_online(False)
            self.station = None

    def _set_online(self, online: bool) -> None:
        self.sessions.link_online = online
        self.authorizer.online = self.authorize if online else None
        self.authorizer.is_online = (lambda: True) if online else (lambda: False)

    async def _boot(self, station: Station) -> None:
        up = self.rt.config.uplink
        while True:
            result = await self._call(call.BootNotification(
                charge_point_vendor=up.vendor[:20], charge_point_model=up.model[:20],
                charge_point_serial_number=(up.serial or None) and up.serial[:25],
                firmware_version=__version__[:50], meter_type=None))
            self.boot_status = str(result.status)
            try:
                csms_now = parse_utc(result.current_time)
                self.clock_offset = (csms_now - self.clock.now()).total_seconds()
                if abs(self.clock_offset) > 5:
                    log.warning("CSMS clock differs from ours by %.1f s", self.clock_offset)
            except ValueError:
                log.warning("BootNotification answer has an unreadable currentTime %r", result.current_time)
            interval = int(result.interval)
            if self.boot_status == "Accepted":
                if interval > 0:
                    await self.settings.change("HeartbeatInterval", str(interval))
                self.booted_at = self.clock.now()
                log.info("BootNotification accepted (heartbeat every %d s)", self.settings["HeartbeatInterval"])
                return
            wait = interval if interval > 0 else 60
            log.warning("BootNotification %s: trying again in %d s", self.boot_status, wait)
            await self.clock.sleep(wait)

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

    async def _send_statuses(self) -> None:
        now = self.clock.now()
        station_status = self.sessions.station
        await self._call(messages.status_notification(
            StatusChanged(0, now, station_status.status, station_status.error_code, station_status.info)
            if station_status is not None else StatusChanged(0, now, _available())))
        for cid in sorted(self.sessions.connectors):
            await self.send_status(cid)

    async def send_status(self, connector_id: int) -> None:
        c = self.sessions.connectors[connector_id]
        view = c.recorded
        if view is None:
            return
        await self._call(messages.status_notification(
            StatusChanged(connector_id, self.clock.now(), view.status, view.error_code, view.info, view.vendor_error_code)))

    async def _call(self, payload: Any, message_id: str | None = None) -> Any:
        if self.station is None:
            raise OfflineError("not connected")
        self.recent.append(f"{utc_text(self.clock.now())} -> {type(payload).__name__}")
        result = await self.station.call(payload, suppress=False, unique_id=message_id)
        self.recent.append(f"{utc_text(self.clock.now())} <- {type(payload).__name__} answered")
        return result

    # ---- the outbox (agent/uplink/outbox.Delivery) ------------------------------------------
    async def build(self, row: Any) -> Any:
        ev = row.event
        if isinstance(ev, StatusChanged) and self.booted_at is not None and row.created_at < self.booted_at:
            raise Skip("status from before this connection: the current one was sent at boot")
        return await messages.build(ev, self.store, self.settings)

    async def send(self, payload: Any, message_id: str) -> Any:
        station = self.station
        if station is not None and (late := await station.late_result(payload, message_id)) is not None:
            self.recent.append(f"{utc_text(self.clock.now())} <- {type(payload).__name__} answered late")
            return late   # its answer came after we stopped waiting: no need to send it again
        return await self._call(payload, message_id)

    async def until_answered(self, message_id: str) -> None:
        """Returns when a late answer to ``message_id`` has come (outbox: ends its pause)."""
        await until_answered(self.station, message_id)

    async def handle(self, row: Any, payload: Any, result: Any) -> Outcome:
        ev = row.event
        if isinstance(ev, TransactionStarted):
            info = _id_tag_info(result.id_tag_info)
            await self.authorizer.record(ev.id_tag, info)
            self._csms_ids[int(result.transaction_id)] = ev.tx_id
            if not info.accepted:
                await self.sessions.tx_authorization(ev.tx_id, info)
            return Outcome(csms_tx_id=int(result.transaction_id))
        if isinstance(ev, TransactionEnded) and ev.id_tag and getattr(result, "id_tag_info", None):
            await self.authorizer.record(ev.id_tag, _id_tag_info(result.id_tag_info))
        return Outcome()

    def retry_policy(self, row: Any) -> tuple[int, float] | None:
        ev = row.event
        if isinstance(ev, (TransactionStarted, TransactionEnded)) or (isinstance(ev, MeterSampled) and ev.tx_id):
            return self.settings["TransactionMessageAttempts"], float(self.settings["TransactionMessageRetryInterval"])
        return None

    # ---- what the handlers and the authorizer use ---------------------------------------------
    async def authorize(self, id_tag: str) -> AuthResult:
        result = await self._call(call.Authorize(id_tag=id_tag))
        return _id_tag_info(result.id_tag_info)

    async def tx_id_for(self, csms_tx_id: int) -> str | None:
        """Our transaction for the CSMS's integer id (running transactions only)."""
        known = self._csms_ids.get(int(csms_tx_id))
        if known is not None:
            return known
        for c in self.sessions.connectors.values():
            if c.tx is not None:
                rec = await self.store.transaction(c.tx.tx_id)
                if rec is not None and rec.csms_tx_id is not None and int(rec.csms_tx_id) == int(csms_tx_id):
                    self._csms_ids[int(csms_tx_id)] = c.tx.tx_id
                    return c.tx.tx_id
        return None

    async def triggered(self, what: str, connector_id: int | None) -> None:
        """Send what a TriggerMessage asked for (after its answer went out)."""
        try:
            if what == "BootNotification":
                up = self.rt.config.uplink
                await self._call(call.BootNotification(charge_point_vendor=up.vendor[:20], charge_point_model=up.model[:20],
                                                       firmware_version=__version__[:50]))
            elif what == "Heartbeat":
                await self.heartbeat()
            elif what == "StatusNotification":
                if connector_id in (None, 0):
                    await self._send_statuses() if connector_id is None else await self._send_station_status()
                else:
                    await self.send_status(connector_id)
            elif what == "MeterValues":
                await self._send_meter_values(connector_id)
            elif what == "DiagnosticsStatusNotification":
                await self._call(call.DiagnosticsStatusNotification(status=getattr(self.rt, "diagnostics_status", "Idle")))
            elif what == "FirmwareStatusNotification":
                await self._call(call.FirmwareStatusNotification(status=getattr(self.rt, "firmware_status", "Idle")))
        except Exception as exc:  # a triggered message is best effort; the connection goes on
            log.warning("triggered %s not sent: %s", what, exc)

    async def _send_station_status(self) -> None:
        s = self.sessions.station
        ev = StatusChanged(0, self.clock.now(), s.status, s.error_code, s.info) if s else StatusChanged(0, self.clock.now(), _available())
        await self._call(messages.status_notification(ev))

    async def _send_meter_values(self, connector_id: int | None) -> None:
        from agent.sessions.connector import sampled_values
        state = self.rt.poller.latest if self.rt.poller is not None else None
        targets = sorted(self.sessions.connectors) if connector_id in (None, 0) else [connector_id]
        for cid in targets:
            c = self.sessions.connectors[cid]
            values = sampled_values(c.reading, self.settings["MeterValuesSampledData"], energy_wh=c.energy_wh)
            if not values or state is None:
                continue
            tx = None
            if c.tx is not None:
                rec = await self.store.transaction(c.tx.tx_id)
                tx = rec.csms_tx_id if rec is not None else None
            await self._call(call.MeterValues(connector_id=cid, transaction_id=tx,
                                              meter_value=[messages.meter_value(self.clock.now(), values, "Trigger")]))

    async def unlock(self, connector_id: int) -> str:
        unlock = self.rt.unlock if hasattr(self.rt, "unlock") else None
        if connector_id not in self.sessions.connectors or unlock is None:
            return "NotSupported"
        return await unlock(connector_id)

    async def reset(self, hard: bool) -> None:
        from agent.sessions.events import StopReason
        n = await self.sessions.stop_all(StopReason.HARD_RESET if hard else StopReason.SOFT_RESET)
        log.warning("%s reset requested by the CSMS: %d transaction(s) stopped; restarting", "hard" if hard else "soft", n)
        if not hard:
            # let the StopTransactions reach the CSMS first (bounded: a reset must happen)
            try:
                async with asyncio.timeout(10):
                    while await self.store.outbox_len() and self.station is not None:
                        await self.clock.sleep(0.2)
            except TimeoutError:
                pass
        self.rt.request_restart(f"{'hard' if hard else 'soft'} reset by the CSMS")

    def composite_schedule(self, connector_id: int, start: datetime, duration: int, unit: str) -> dict | None:
        """From the same computation load management uses (agent/energy)."""
        energy = self.rt.energy
        if energy is None:
            return None
        from agent.energy.wiring import composite
        return composite(energy, self.rt.config, connector_id, duration, unit)

    def status(self) -> dict[str, Any]:
        return {"version": self.version, "boot": self.boot_status, "clock_offset_s": self.clock_offset,
                "delivered": self.stats.sent, "dropped": self.stats.dropped, "refused": self.stats.refused,
                "timeouts": self.stats.retried_timeouts, "recent": list(self.recent)[-10:]}


def _available() -> Any:
    from agent.sessions.events import ConnectorStatus
    return ConnectorStatus.AVAILABLE


def _id_tag_info(info: dict[str, Any] | None) -> AuthResult:
    if not info:
        return AuthResult(AuthStatus.INVALID)
    expiry = info.get("expiry_date")
    return AuthResult(AuthStatus(info["status"]), parent_id_tag=info.get("parent_id_tag"),
                      expiry=parse_utc(expiry) if expiry else None, group=info.get("parent_id_tag"))
