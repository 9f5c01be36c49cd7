"""One connector's session state, and the pure rules that turn it into a status.

The manager owns the IO (store, authorizer, clock); this module holds what a connector
*is* at a moment and what follows from it, so the rules can be read in one place and
tested without a loop: which status a connector shows, which meter value is the
session's, which sampled values go to the CSMS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.sessions.events import ChargingState, ConnectorStatus, SampledValue, Trigger
from drivers.contract import ChargerReading, CpState, DeviceHealth, Measurement, Setpoint


@dataclass
class PendingAuth:
    """A tag accepted before a transaction started: waits for the cable (ConnectionTimeOut)."""

    id_tag: str
    parent: str | None
    since_mono: float
    trigger: Trigger = Trigger.AUTHORIZED
    id_token_type: str = "ISO14443"
    remote_start_id: int | None = None
    reservation_id: int | None = None


@dataclass
class ActiveTx:
    tx_id: str
    id_tag: str
    parent: str | None
    started_at: datetime
    meter_start_wh: int
    last_sample_mono: float
    #: the CSMS refused the tag after the start (StopTransactionOnInvalidId false): no energy
    suspended_by_csms: bool = False
    #: the 2.0.1 chargingState last reported for this transaction (TransactionUpdated)
    charging_state: ChargingState | None = None


@dataclass
class Reservation:
    reservation_id: int
    connector_id: int
    id_tag: str
    parent: str | None
    expiry: datetime

    def as_json(self) -> dict[str, Any]:
        from agent.timefmt import utc_text
        return {"id": self.reservation_id, "connector_id": self.connector_id, "id_tag": self.id_tag,
                "parent": self.parent, "expiry": utc_text(self.expiry)}


@dataclass(frozen=True)
class StatusView:
    status: ConnectorStatus
    error_code: str = "NoError"
    info: str | None = None
    vendor_error_code: str | None = None


@dataclass
class Connector:
    connector_id: int
    device_id: str
    meter_id: str = ""               # a sub-meter measuring this charger, if configured
    free_tag: str = ""
    operative: bool = True
    #: ChangeAvailability(Inoperative) during a transaction: applied when it ends
    inoperative_pending: bool = False
    pending: PendingAuth | None = None
    tx: ActiveTx | None = None
    #: a transaction open before a restart, ended with PowerLoss at the first good reading
    recovering: Any = None
    #: the transaction ended but the EV is still plugged in
    finishing: bool = False
    reservation: Reservation | None = None
    plugged: bool | None = None      # None: never read
    last_rfid: str | None = None
    recorded: StatusView | None = None
    reading: ChargerReading | None = None
    stale: bool = True
    energy_wh: float | None = None
    #: added to the register since it went backwards during the running transaction
    #: (device replaced or reset): the transaction's energy never decreases
    energy_offset: float = 0.0
    sample: tuple[SampledValue, ...] = field(default_factory=tuple)

    # -- rules --
    def status(self, setpoint: Setpoint | None) -> StatusView:
        """The status this connector shows now (1.6 vocabulary)."""
        r = self.reading
        if not self.operative and self.tx is None:
            return StatusView(ConnectorStatus.UNAVAILABLE)
        if r is None or self.stale:
            return StatusView(ConnectorStatus.FAULTED, "OtherError", info="charger not answering")
        if r.fault:
            return StatusView(ConnectorStatus.FAULTED, "OtherError", info="charger reports a fault",
                              vendor_error_code=r.fault[:50])
        if r.state is CpState.E:
            return StatusView(ConnectorStatus.FAULTED, "EVCommunicationError", info="control pilot state E")
        if r.state is CpState.F:
            return StatusView(ConnectorStatus.FAULTED, "InternalError", info="control pilot state F")
        if self.tx is not None:
            if not r.plugged:
                return StatusView(ConnectorStatus.SUSPENDED_EV)
            if r.state.charging:
                return StatusView(ConnectorStatus.CHARGING)
            offered = setpoint is not None and setpoint.enabled and setpoint.amps > 0 and not self.tx.suspended_by_csms
            return StatusView(ConnectorStatus.SUSPENDED_EV if offered else ConnectorStatus.SUSPENDED_EVSE)
        if r.plugged:
            return StatusView(ConnectorStatus.FINISHING if self.finishing else ConnectorStatus.PREPARING)
        if self.pending is not None:
            return StatusView(ConnectorStatus.PREPARING)
        if self.reservation is not None:
            return StatusView(ConnectorStatus.RESERVED)
        return StatusView(ConnectorStatus.AVAILABLE)

    def count_energy(self, register: float, session_register: bool = False) -> str | None:
        """Take a fresh reading of the energy register; returns what is wrong with it, if
        anything. A register that went backwards during a transaction was replaced or
        reset: the transaction counts on from its last value (``energy_offset``), so its
        energy never decreases. Outside one, only a lifetime register going backwards is
        news (a session register starts at 0 with every session)."""
        problem = None
        if self.energy_wh is not None and register + self.energy_offset < self.energy_wh - 1:
            problem = (f"energy register went backwards ({self.energy_wh:.0f} -> {register:.0f} Wh): "
                       f"device replaced or reset?")
            if self.tx is not None:
                problem += f" transaction {self.tx.tx_id} counts on from {self.energy_wh:.0f} Wh"
                self.energy_offset = self.energy_wh - register
            elif session_register:
                problem = None
        self.energy_wh = register + self.energy_offset
        return problem

    def end_energy_offset(self) -> None:
        """The transaction counting across a register reset ended: the register's own values again."""
        if self.energy_offset and self.energy_wh is not None:
            self.energy_wh -= self.energy_offset
        self.energy_offset = 0.0

    def may_draw(self) -> bool:
        """Energy flows only inside an authorized, running transaction."""
        return self.tx is not None and not self.tx.suspended_by_csms and self.operative_or_pending()

    def operative_or_pending(self) -> bool:
        return self.operative or self.inoperative_pending

    def available_for_start(self) -> bool:
        return (self.operative and self.tx is None and not self.finishing and self.recovering is None
                and self.reading is not None and not self.stale and not self.reading.fault
                and self.reading.state not in (CpState.E, CpState.F))

    def matches_reservation(self, id_tag: str, parent: str | None) -> bool:
        res = self.reservation
        if res is None:
            return True
        if res.id_tag.casefold() == id_tag.casefold():
            return True
        return bool(res.parent and parent and res.parent.casefold() == parent.casefold())


def charging_state(status: ConnectorStatus, plugged: bool | None) -> ChargingState | None:
    """What the EV is doing inside a transaction (2.0.1 chargingState), from the status
    the connector shows; None when the status says nothing about it (Faulted)."""
    if not plugged:
        return ChargingState.IDLE
    return {
        ConnectorStatus.CHARGING: ChargingState.CHARGING,
        ConnectorStatus.SUSPENDED_EV: ChargingState.SUSPENDED_EV,
        ConnectorStatus.SUSPENDED_EVSE: ChargingState.SUSPENDED_EVSE,
        ConnectorStatus.PREPARING: ChargingState.EV_CONNECTED,
        ConnectorStatus.FINISHING: ChargingState.EV_CONNECTED,
    }.get(status)


def energy_of(health: DeviceHealth | None) -> float | None:
    """The energy register of a charger or sub-meter reading (Wh), None if unknown."""
    if health is None or health.last_good is None:
        return None
    g = health.last_good
    if isinstance(g, ChargerReading):
        return g.energy_wh
    if isinstance(g, Measurement):
        return g.energy_import_wh
    return None


def sampled_values(reading: ChargerReading | Measurement | None, measurands: tuple[str, ...], *,
                   energy_wh: float | None = None, offered: float | None = None,
                   location: str = "Outlet") -> tuple[SampledValue, ...]:
    """The configured measurands from one reading; measurands the device does not
    report are left out, never sent as zero."""
    if reading is None:
        return ()
    out: list[SampledValue] = []
    power = reading.power_total
    if isinstance(reading, ChargerReading):
        energy = energy_wh if energy_wh is not None else reading.energy_wh
    else:
        energy = energy_wh if energy_wh is not None else reading.energy_import_wh
    for m in measurands:
        if m == "Energy.Active.Import.Register" and energy is not None:
            out.append(SampledValue(m, round(float(energy), 1), "Wh", location=location))
        elif m == "Power.Active.Import" and power is not None:
            out.append(SampledValue(m, round(float(power), 1), "W", location=location))
        elif m == "Current.Import":
            for i, amps in enumerate(reading.current):
                if amps is not None:
                    out.append(SampledValue(m, round(float(amps), 2), "A", phase=f"L{i + 1}", location=location))
        elif m == "Voltage":
            for i, volts in enumerate(reading.voltage):
                if volts is not None:
                    out.append(SampledValue(m, round(float(volts), 1), "V", phase=f"L{i + 1}-N", location=location))
        elif m == "Current.Offered" and offered is not None:
            out.append(SampledValue(m, round(float(offered), 1), "A", location=location))
        elif m == "Frequency" and isinstance(reading, Measurement) and reading.frequency is not None:
            out.append(SampledValue(m, round(float(reading.frequency), 2), "Hz", location=location))
    return tuple(out)
