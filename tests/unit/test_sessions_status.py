"""The status rules of one connector (agent/sessions/connector.py), as a table."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from agent.sessions.connector import ActiveTx, Connector, PendingAuth, Reservation, sampled_values
from agent.sessions.events import ConnectorStatus as S
from drivers.contract import ChargerReading, CpState, Measurement, Setpoint

T = datetime(2026, 1, 1, tzinfo=timezone.utc)
ON = Setpoint(amps=16)
OFF = Setpoint(amps=0, enabled=False)


def reading(state: str, fault: str | None = None) -> ChargerReading:
    return ChargerReading(timestamp=T, monotonic=0.0, state=CpState(state), fault=fault, energy_wh=1000.0,
                          current=(6.0, 6.1, None), power_total=2800.0)


def conn(state: str | None = "A", *, tx=False, pending=False, finishing=False, operative=True, reserved=False,
         fault=None, stale=False) -> Connector:
    c = Connector(1, "cp1", operative=operative, finishing=finishing)
    c.reading = reading(state, fault) if state else None
    c.stale = stale or state is None
    if tx:
        c.tx = ActiveTx("t", "TAG", None, T, 1000, 0.0)
    if pending:
        c.pending = PendingAuth("TAG", None, 0.0)
    if reserved:
        c.reservation = Reservation(1, 1, "TAG", None, T)
    return c


@pytest.mark.parametrize("c, sp, want", [
    (conn("A"), ON, S.AVAILABLE),
    (conn("A", reserved=True), ON, S.RESERVED),
    (conn("A", pending=True), ON, S.PREPARING),
    (conn("B"), OFF, S.PREPARING),
    (conn("C", tx=True), ON, S.CHARGING),
    (conn("B", tx=True), ON, S.SUSPENDED_EV),       # offered, the EV takes nothing
    (conn("B", tx=True), OFF, S.SUSPENDED_EVSE),    # the site offers nothing (load management)
    (conn("B", finishing=True), OFF, S.FINISHING),
    (conn("A", operative=False), ON, S.UNAVAILABLE),
    (conn("C", tx=True, operative=False), ON, S.CHARGING),   # Inoperative waits for the transaction
    (conn(None), ON, S.FAULTED),
    (conn("A", fault="E42"), ON, S.FAULTED),
    (conn("E"), ON, S.FAULTED),
])
def test_status_table(c, sp, want):
    assert c.status(sp).status is want


def test_faults_carry_codes():
    assert conn("E").status(ON).error_code == "EVCommunicationError"
    v = conn("A", fault="overtemperature 81C in the relay box, code 0x42 and more text here").status(ON)
    assert v.error_code == "OtherError" and len(v.vendor_error_code) == 50
    assert conn(None).status(ON).info == "charger not answering"


def test_energy_flows_only_in_a_transaction():
    assert not conn("B").may_draw()
    assert conn("C", tx=True).may_draw()
    c = conn("C", tx=True)
    c.tx.suspended_by_csms = True
    assert not c.may_draw()


def test_reservation_matches_tag_or_parent():
    c = conn("A")
    c.reservation = Reservation(1, 1, "card-1", "FLEET", T)
    assert c.matches_reservation("CARD-1", None)
    assert c.matches_reservation("other", "fleet")
    assert not c.matches_reservation("other", None)


def test_sampled_values_leave_out_what_is_not_measured():
    values = sampled_values(reading("C"), ("Energy.Active.Import.Register", "Current.Import", "Voltage", "SoC"))
    assert [(v.measurand, v.phase) for v in values] == [
        ("Energy.Active.Import.Register", None), ("Current.Import", "L1"), ("Current.Import", "L2")]
    grid = Measurement(timestamp=T, monotonic=0.0, power_total=5000.0, energy_import_wh=12345.0)
    values = sampled_values(grid, ("Energy.Active.Import.Register", "Power.Active.Import"), location="Inlet")
    assert [v.value for v in values] == [12345.0, 5000.0] and values[0].location == "Inlet"
