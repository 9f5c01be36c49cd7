"""The connectors' sessions: plug, authorize, charge, stop, for both OCPP versions.

Why it is built this way:

- Every change becomes an event that the store writes *before* anything acts on it
  (status, transaction start and end, meter samples). After a crash the store knows
  every transaction that started; ``start()`` ends the ones still open with PowerLoss
  at the charger's first good reading, so the CSMS gets a stop for every start.
- The poll loop must never wait for the CSMS. Authorization may ask the CSMS, so tags
  read from a charger's RFID register are authorized in a task of their own; remote
  starts with AuthorizeRemoteTxRequests likewise. Changes to the connectors happen
  under one lock, so a tick and a tag never interleave half-way.
- A store write that fails (disk full, read-only) is logged once and the events wait
  in memory, in order, and are written first when the store works again; charging
  control goes on meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from agent.auth.types import AuthSource
from agent.sessions.commands import SessionCommands
from agent.sessions.connector import (
    ActiveTx, Connector, PendingAuth, Reservation, charging_state, energy_of, sampled_values,
)
from agent.sessions.events import (
    ConnectorStatus, Event, MeterSampled, StatusChanged, StopReason, TransactionEnded,
    TransactionStarted, TransactionUpdated, Trigger,
)
from agent.site.state import SiteState
from agent.timefmt import parse_utc
from drivers.contract import ChargerReading, EnergyScope, Setpoint

log = logging.getLogger("evsite.sessions")

#: seconds a transaction open before a restart waits for its charger before it is
#: ended with the last energy value the store knows
RECOVERY_WAIT = 60.0

_STOP_TRIGGERS = {
    StopReason.LOCAL: Trigger.STOP_AUTHORIZED,
    StopReason.REMOTE: Trigger.REMOTE_STOP,
    StopReason.EV_DISCONNECTED: Trigger.EV_COMMUNICATION_LOST,
    StopReason.DEAUTHORIZED: Trigger.DEAUTHORIZED,
    StopReason.POWER_LOSS: Trigger.ABNORMAL_CONDITION,
    StopReason.REBOOT: Trigger.RESET_COMMAND,
    StopReason.HARD_RESET: Trigger.RESET_COMMAND,
    StopReason.SOFT_RESET: Trigger.RESET_COMMAND,
}


class SessionManager(SessionCommands):
    def __init__(self, config: Any, store: Any, clock: Any, authorizer: Any, settings: Any) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.authorizer = authorizer
        self.settings = settings
        self.link_online = False
        self.connectors: dict[int, Connector] = {
            d.connector_id: Connector(d.connector_id, d.id, meter_id=d.meter, free_tag=d.free_charging_tag)
            for d in config.chargers()
        }
        self.grid_id = next((d.id for d in config.devices if d.role == "grid_meter"), None)
        self.station: StatusChanged | None = None
        self._lock = asyncio.Lock()
        self._subscribers: list[asyncio.Queue[Event]] = []
        self._unwritten: list[tuple[Event, bool]] = []
        self._store_failing = False
        self._aligned_slot: int | None = None
        self._started_mono = clock.monotonic()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._latest: SiteState | None = None
        #: the transaction the control API shows per connector: it changes only once the
        #: start or end has gone through ``_emit`` (stored, or kept and counted in
        #: ``unwritten_events``), so a client that sees a session ended and then kills the
        #: agent cannot lose its end (``c.tx`` changes before the store write)
        self._shown_tx: dict[int, ActiveTx] = {}
        #: called with (connector_id, reservation_id, reason) when a reservation ends
        #: without being used (2.0.1 ReservationStatusUpdate)
        self.on_reservation_ended: list[Any] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Restore availability, reservations and open transactions from the store."""
        avail = await self.store.kv_get("availability") or {}
        for cid, operative in avail.items():
            c = self.connectors.get(int(cid))
            if c is not None:
                c.operative = bool(operative)
        for r in await self.store.reservations_all():
            c = self.connectors.get(int(r.get("connector_id", -1)))
            if c is not None:
                c.reservation = Reservation(int(r["id"]), c.connector_id, r["id_tag"], r.get("parent"), parse_utc(r["expiry"]))
        # statuses from the last run are history: each connector's status is known again
        # from its first reading (the CSMS is told the current one, never the stored one)
        for tx in await self.store.open_transactions():
            c = self.connectors.get(tx.connector_id)
            if c is None or c.recovering is not None:
                log.warning("transaction %s on connector %s (no longer configured) ended: PowerLoss", tx.tx_id, tx.connector_id)
                await self._emit([TransactionEnded(tx.connector_id, self.clock.now(), tx_id=tx.tx_id,
                                                   meter_stop_wh=_wh(tx.last_meter_wh or tx.meter_start_wh),
                                                   reason=StopReason.POWER_LOSS, trigger=Trigger.ABNORMAL_CONDITION,
                                                   offline=not self.link_online)])
                continue
            c.recovering = tx
            log.info("transaction %s on connector %d was open at shutdown: ends with PowerLoss at the next reading",
                     tx.tx_id, c.connector_id)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def subscribe(self) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue(maxsize=10_000)
        self._subscribers.append(q)
        return q

    def connector(self, connector_id: int) -> Connector:
        try:
            return self.connectors[connector_id]
        except KeyError:
            raise ValueError(f"no connector {connector_id} (connectors: {sorted(self.connectors)})") from None

    # ------------------------------------------------------------------ the poll loop
    async def on_site_state(self, state: SiteState) -> None:
        self._latest = state
        async with self._lock:
            events: list[Event] = []
            for c in self.connectors.values():
                events += self._tick_connector(c, state)
            events += self._station_status(state)
            events += self._aligned_samples(state)
            await self._emit(events)
            # RFID register: a new tag read at the charger is presented like a card
            for c in self.connectors.values():
                tag = c.reading.rfid if c.reading is not None and not c.stale else None
                if tag and tag != c.last_rfid:
                    self._spawn(self.present_tag(c.connector_id, tag, source="rfid"), f"rfid {c.connector_id}")
                c.last_rfid = tag

    def _tick_connector(self, c: Connector, state: SiteState) -> list[Event]:
        now, mono = state.taken_at, state.monotonic
        health = state.health.get(c.device_id)
        reading = health.last_good if health is not None and isinstance(health.last_good, ChargerReading) else None
        c.reading, c.stale = reading, (health is None or health.stale)
        meter_health = state.health.get(c.meter_id) if c.meter_id else health
        energy = energy_of(meter_health)
        if energy is not None and not math.isfinite(energy):
            energy = None
        fresh = energy is not None and not (meter_health and meter_health.stale)
        session_register = reading is not None and not c.meter_id and reading.energy_scope is EnergyScope.SESSION
        if fresh and (problem := c.count_energy(energy, session_register)):  # type: ignore[arg-type]
            log.warning("connector %d: %s", c.connector_id, problem)
        events: list[Event] = []
        offline = not self.link_online

        if c.recovering is not None:
            rec = c.recovering
            known = rec.last_meter_wh if rec.last_meter_wh is not None else rec.meter_start_wh
            if reading is not None and not c.stale and c.energy_wh is not None:
                # a register below what this transaction already counted was reset or
                # replaced meanwhile: its value says nothing about this transaction
                stop = _wh(c.energy_wh) if c.energy_wh >= max(known, rec.meter_start_wh) else _wh(known)
            elif mono - self._started_mono >= RECOVERY_WAIT:
                stop = _wh(known)
            else:
                stop = None
            if stop is not None:
                events.append(TransactionEnded(c.connector_id, now, tx_id=rec.tx_id, meter_stop_wh=stop,
                                               reason=StopReason.POWER_LOSS, trigger=Trigger.ABNORMAL_CONDITION,
                                               offline=offline))
                c.recovering = None
                c.finishing = bool(reading is not None and reading.plugged)
                log.info("connector %d: transaction %s ended after restart (PowerLoss, meter %d Wh)",
                         c.connector_id, rec.tx_id, stop)

        if reading is not None and not c.stale:
            was, now_plugged = c.plugged, reading.plugged
            c.plugged = now_plugged
            if was and not now_plugged:
                c.finishing = False
                if c.tx is not None and self.settings["StopTransactionOnEVSideDisconnect"]:
                    events += self._end(c, now, StopReason.EV_DISCONNECTED)
            if now_plugged and not was and c.tx is None and c.recovering is None and not c.finishing:
                if c.free_tag and c.operative:
                    c.pending = PendingAuth(c.free_tag, None, mono, Trigger.CABLE_PLUGGED_IN, "Central")
                elif c.pending is not None:
                    c.pending.trigger = Trigger.CABLE_PLUGGED_IN
            if now_plugged and c.pending is not None and c.tx is None and c.recovering is None and not c.finishing:
                events += self._start(c, now, mono)
        # ConnectionTimeOut: an authorization that never met a cable lapses
        if c.pending is not None and c.tx is None and not c.plugged:
            if mono - c.pending.since_mono >= self.settings["ConnectionTimeOut"]:
                log.info("connector %d: no cable within ConnectionTimeOut; authorization of %s lapsed",
                         c.connector_id, _show(c.pending.id_tag))
                c.pending = None
        # reservations expire
        if c.reservation is not None and c.reservation.expiry <= now:
            res = c.reservation
            c.reservation = None
            self._spawn(self.store.reservation_remove(res.reservation_id), "reservation expiry")
            log.info("reservation %d on connector %d expired", res.reservation_id, c.connector_id)
            for cb in self.on_reservation_ended:
                cb(c.connector_id, res.reservation_id, "Expired")
        # sampled meter values inside a transaction
        interval = self.settings["MeterValueSampleInterval"]
        if c.tx is not None and interval > 0 and mono - c.tx.last_sample_mono >= interval and reading is not None and not c.stale:
            values = sampled_values(reading, self.settings["MeterValuesSampledData"], energy_wh=c.energy_wh,
                                    offered=self._offered(c, state))
            if values:
                events.append(MeterSampled(c.connector_id, now, values, "Sample.Periodic", c.tx.tx_id, offline))
            c.tx.last_sample_mono = mono
        never_read = health is not None and health.last_good is None and health.consecutive_failures < 3
        if not never_read:  # a charger not read yet is not Faulted: say nothing until it answers or is stale
            events += self._status_event(c, state.setpoints.get(c.connector_id), now)
        return events

    def _station_status(self, state: SiteState) -> list[Event]:
        """Connector 0: Faulted while the grid meter does not answer (the site then runs
        on its failsafe limit), Available otherwise."""
        if self.grid_id is None:
            return []
        grid = state.health.get(self.grid_id)
        if grid is not None and grid.stale and grid.consecutive_failures == 0 and grid.last_good is None:
            return []  # before the first read
        if grid is None or grid.stale:
            want = StatusChanged(0, state.taken_at, ConnectorStatus.FAULTED, "OtherError", info="grid meter not answering")
        else:
            want = StatusChanged(0, state.taken_at, ConnectorStatus.AVAILABLE)
        cur = self.station
        if cur is not None and (cur.status, cur.error_code, cur.info) == (want.status, want.error_code, want.info):
            return []
        self.station = want
        return [want]

    def _aligned_samples(self, state: SiteState) -> list[Event]:
        interval = self.settings["ClockAlignedDataInterval"]
        if interval <= 0:
            return []
        slot = int(state.taken_at.timestamp() // interval)
        if self._aligned_slot is None or slot == self._aligned_slot:
            self._aligned_slot = slot
            return []
        self._aligned_slot = slot
        measurands = self.settings["MeterValuesAlignedData"]
        if not measurands:
            return []
        events: list[Event] = []
        offline = not self.link_online
        if self.grid_id is not None:
            g = state.health.get(self.grid_id)
            if g is not None and not g.stale:
                values = sampled_values(g.last_good, measurands, location="Inlet")  # type: ignore[arg-type]
                if values:
                    events.append(MeterSampled(0, state.taken_at, values, "Sample.Clock", None, offline))
        for c in self.connectors.values():
            if c.reading is None or c.stale:
                continue
            values = sampled_values(c.reading, measurands, energy_wh=c.energy_wh, offered=self._offered(c, state))
            if values:
                events.append(MeterSampled(c.connector_id, state.taken_at, values, "Sample.Clock",
                                           c.tx.tx_id if c.tx else None, offline))
        return events

    @staticmethod
    def _offered(c: Connector, state: SiteState) -> float | None:
        sp = state.setpoints.get(c.connector_id)
        if sp is None:
            return None
        return sp.amps if sp.enabled and c.may_draw() else 0.0

    # ------------------------------------------------------------------ transactions
    def _start(self, c: Connector, now: datetime, mono: float) -> list[Event]:
        p = c.pending
        assert p is not None
        if c.energy_wh is None:
            return []  # wait for a reading of the energy register: meterStart must be real
        c.pending = None
        reservation_id = p.reservation_id
        if c.reservation is not None and c.matches_reservation(p.id_tag, p.parent):
            reservation_id = c.reservation.reservation_id
            self._spawn(self.store.reservation_remove(reservation_id), "reservation used")
            c.reservation = None
        tx = ActiveTx(str(uuid.uuid4()), p.id_tag, p.parent, now, _wh(c.energy_wh), last_sample_mono=mono)
        c.tx = tx
        log.info("connector %d: transaction %s started for %s at %d Wh", c.connector_id, tx.tx_id, _show(p.id_tag), tx.meter_start_wh)
        return [TransactionStarted(c.connector_id, now, tx_id=tx.tx_id, id_tag=p.id_tag, meter_start_wh=tx.meter_start_wh,
                                   trigger=p.trigger, id_token_type=p.id_token_type, reservation_id=reservation_id,
                                   remote_start_id=p.remote_start_id, offline=not self.link_online)]

    def _end(self, c: Connector, now: datetime, reason: StopReason, id_tag: str | None = None) -> list[Event]:
        tx = c.tx
        assert tx is not None
        c.tx = None
        c.finishing = bool(c.plugged)
        stop = _wh(c.energy_wh) if c.energy_wh is not None else tx.meter_start_wh
        c.end_energy_offset()
        if c.inoperative_pending:
            c.operative, c.inoperative_pending = False, False
            self._spawn(self._save_availability(), "availability")
        log.info("connector %d: transaction %s ended (%s) at %d Wh, %d Wh delivered", c.connector_id, tx.tx_id,
                 reason.value, stop, stop - tx.meter_start_wh)
        return [TransactionEnded(c.connector_id, now, tx_id=tx.tx_id, meter_stop_wh=stop, reason=reason, id_tag=id_tag,
                                 trigger=_STOP_TRIGGERS.get(reason, Trigger.ABNORMAL_CONDITION), offline=not self.link_online)]

    def _status_event(self, c: Connector, setpoint: Setpoint | None, now: datetime) -> list[Event]:
        view = c.status(setpoint)
        events: list[Event] = []
        if view != c.recorded:
            c.recorded = view
            events.append(StatusChanged(c.connector_id, now, view.status, view.error_code, view.info,
                                        view.vendor_error_code))
        # inside a transaction the same change is a chargingState (2.0.1 TransactionEvent;
        # 1.6 sends nothing for it)
        state = charging_state(view.status, c.plugged) if c.tx is not None else None
        if c.tx is not None and state is not None and state is not c.tx.charging_state:
            c.tx.charging_state = state
            events.append(TransactionUpdated(c.connector_id, now, c.tx.tx_id, Trigger.CHARGING_STATE_CHANGED, state,
                                             offline=not self.link_online))
        return events

    def may_draw(self, connector_id: int) -> bool:
        c = self.connectors.get(connector_id)
        return c is not None and c.may_draw()

    def busy(self) -> bool:
        """A transaction runs somewhere (updates and OnIdle resets wait for this)."""
        return any(c.tx is not None or c.recovering is not None for c in self.connectors.values())

    def status_view(self) -> dict[str, Any]:
        """The control API's ``sessions`` section."""
        out = []
        for c in self.connectors.values():
            view = c.recorded
            tx = self._shown_tx.get(c.connector_id)
            out.append({
                "connector_id": c.connector_id,
                "status": view.status.value if view else None,
                "error_code": view.error_code if view else None,
                "operative": c.operative,
                "tx_id": tx.tx_id if tx else None,
                "id_tag": _show(tx.id_tag) if tx else None,
                "meter_start_wh": tx.meter_start_wh if tx else None,
                "energy_wh": None if c.energy_wh is None else round(c.energy_wh),
                "reservation": c.reservation.reservation_id if c.reservation else None,
            })
        return {"link_online": self.link_online, "connectors": out, "unwritten_events": len(self._unwritten)}

    # ------------------------------------------------------------------ internals
    def _setpoint(self, c: Connector) -> Setpoint | None:
        return self._latest.setpoints.get(c.connector_id) if self._latest is not None else None

    async def _apply_now(self, c: Connector) -> None:
        """Under the lock: start at once if the cable is in, and record the status."""
        now, mono = self.clock.now(), self.clock.monotonic()
        events: list[Event] = []
        if c.plugged and c.reading is not None and not c.stale and c.pending is not None:
            events += self._start(c, now, mono)
        events += self._status_event(c, self._setpoint(c), now)
        await self._emit(events)

    async def _save_availability(self) -> None:
        await self.store.kv_set("availability", {str(cid): c.operative for cid, c in self.connectors.items()})

    async def _emit(self, events: Iterable[Event]) -> None:
        from agent.store import StoreError
        batch = [(e, self._to_outbox(e)) for e in events]
        if not batch and not self._unwritten:
            return
        queue = self._unwritten + batch
        self._unwritten = []
        for i, (event, outbox) in enumerate(queue):
            try:
                await self.store.record(event, outbox=outbox)
            except StoreError as exc:
                self._unwritten = queue[i:]
                for kept, _ in self._unwritten:
                    self._show(kept)
                if not self._store_failing:
                    log.error("store write failed, %d event(s) kept in memory until it works again: %s", len(self._unwritten), exc)
                    self._store_failing = True
                return
            self._show(event)
            if self._store_failing:
                log.warning("store writes work again")
                self._store_failing = False
            for q in self._subscribers:
                if not q.full():
                    q.put_nowait(event)

    def _show(self, event: Event) -> None:
        """A start or end has been stored (or kept): the control API may show it now."""
        if isinstance(event, TransactionStarted):
            c = self.connectors.get(event.connector_id)
            if c is not None and c.tx is not None and c.tx.tx_id == event.tx_id:
                self._shown_tx[event.connector_id] = c.tx
        elif isinstance(event, TransactionEnded):
            shown = self._shown_tx.get(event.connector_id)
            if shown is not None and shown.tx_id == event.tx_id:
                del self._shown_tx[event.connector_id]

    def _to_outbox(self, event: Event) -> bool:
        """Transaction messages and security events always queue; a status only while
        the link is up (after a reconnect the adapter sends the current status instead
        of history); meter values outside a transaction only while the link is up."""
        if isinstance(event, StatusChanged):
            return self.link_online
        if isinstance(event, MeterSampled) and event.tx_id is None:
            return self.link_online
        return True

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed: %s", name, t.exception(), exc_info=t.exception())
        task.add_done_callback(done)


def _wh(value: float) -> int:
    return int(round(value))


def _show(tag: str) -> str:
    return tag if len(tag) <= 4 else tag[:4] + "…"


__all__ = ["AuthSource", "SessionManager"]
