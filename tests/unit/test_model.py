"""The emulated site's physics (hil.model), stepped by hand: no IO, no clock."""

from __future__ import annotations

import pytest

from hil.model import NOMINAL_VOLTAGE, ChargerModel, Ev, GridModel, SiteModel


def site_with(charger: ChargerModel, base: float = 0.0) -> SiteModel:
    site = SiteModel(GridModel(base))
    site.add_charger(charger)
    site.add_meter("grid")
    return site


def test_ev_draws_nothing_until_its_ramp_delay_then_min_of_setpoint_and_its_max():
    c = ChargerModel("c1", max_current=32)
    site = site_with(c)
    c.plug(Ev(max_current=16, ramp_delay=3.0), site.now)
    c.command(site.now, current=20)
    assert c.state == "C" and c.currents == (0.0, 0.0, 0.0)
    site.step(2.0)
    assert c.currents == (0.0, 0.0, 0.0)
    site.step(1.0)
    assert c.currents == (16.0, 16.0, 16.0)          # the EV's own max, not the 20 A offer
    c.command(site.now, current=10)
    assert c.currents == (10.0, 10.0, 10.0)          # a lower setpoint applies at once


def test_setpoint_below_six_amps_pauses_and_resuming_waits_for_the_ramp_again():
    c = ChargerModel("c1")
    site = site_with(c)
    c.plug(Ev(ramp_delay=1.0), site.now)
    c.command(site.now, current=16)
    site.step(1.0)
    assert c.currents[0] == 16.0
    c.command(site.now, current=5.9)
    assert c.state == "B" and c.currents == (0.0, 0.0, 0.0)
    c.command(site.now, current=8)
    assert c.state == "C" and c.currents[0] == 0.0   # ramping again
    site.step(1.0)
    assert c.currents[0] == 8.0


def test_disabled_charger_offers_nothing():
    c = ChargerModel("c1")
    site = site_with(c)
    c.plug(Ev(ramp_delay=0), site.now)
    c.command(site.now, current=16, enabled=False)
    assert c.state == "B" and c.offered() == 0.0
    c.command(site.now, enabled=True)
    assert c.state == "C" and c.currents[0] == 16.0


def test_energy_register_integrates_v_times_i_over_time():
    c = ChargerModel("c1", energy_wh=1000.0)
    site = site_with(c)
    c.plug(Ev(capacity_kwh=100, soc=0.1, ramp_delay=0, max_current=16), site.now)
    c.command(site.now, current=16)
    v = c.voltages[0]
    assert NOMINAL_VOLTAGE - 1 < v < NOMINAL_VOLTAGE   # a little sag under 16 A
    site.step(3600.0)
    assert c.energy_wh == pytest.approx(1000.0 + 3 * v * 16, rel=1e-9)
    assert c.session_wh == pytest.approx(3 * v * 16, rel=1e-9)
    # the grid meter saw exactly the same energy (no base load)
    assert site.meters["grid"].energy_import_wh == pytest.approx(c.session_wh, rel=1e-9)


def test_battery_fills_tapers_above_eighty_percent_and_stops_at_full_staying_plugged():
    c = ChargerModel("c1")
    site = site_with(c)
    ev = Ev(capacity_kwh=10, soc=0.79, max_current=16, ramp_delay=0)
    c.plug(ev, site.now)
    c.command(site.now, current=16)
    assert c.currents[0] == 16.0
    site.step(120)
    assert ev.soc > 0.8 and c.currents[0] < 16.0      # tapering
    tapered = c.currents[0]
    site.step(120)
    assert c.currents[0] < tapered
    site.step(4 * 3600)
    assert ev.full and ev.soc == 1.0
    assert c.currents == (0.0, 0.0, 0.0) and c.state == "B"   # SuspendedEV, still plugged
    delivered = c.session_wh
    assert delivered == pytest.approx(0.21 * 10_000, rel=1e-6)  # never more than the room left
    site.step(600)
    assert c.session_wh == delivered


def test_full_ev_can_stay_in_state_c_at_zero_amps():
    c = ChargerModel("c1")
    site = site_with(c)
    c.plug(Ev(soc=1.0, full_state="C"), site.now)
    c.command(site.now, current=16)
    assert c.state == "C" and c.currents == (0.0, 0.0, 0.0)


def test_unplug_returns_to_a_and_a_new_session_counts_from_zero():
    c = ChargerModel("c1")
    site = site_with(c)
    c.plug(Ev(ramp_delay=0), site.now)
    c.command(site.now, current=10)
    site.step(60)
    total = c.energy_wh
    assert total > 0
    ev = c.unplug(site.now)
    assert ev is not None and c.state == "A" and c.currents == (0.0, 0.0, 0.0)
    site.step(60)
    assert c.energy_wh == total
    c.plug(Ev(ramp_delay=0), site.now)
    assert c.session_wh == 0.0 and c.energy_wh == total


def test_plugging_twice_is_refused():
    c = ChargerModel("c1")
    c.plug(Ev(), 0.0)
    with pytest.raises(ValueError, match="already plugged"):
        c.plug(Ev(), 0.0)


def test_silent_controller_makes_the_charger_fall_back_to_its_failsafe_current():
    c = ChargerModel("c1", watchdog=True, failsafe_current=0.0)
    site = site_with(c)
    c.plug(Ev(ramp_delay=0), site.now)
    c.command(site.now, current=16, failsafe_current=8, failsafe_timeout=10)
    assert c.currents[0] == 16.0
    site.step(9.0)
    c.contact(site.now)                  # a keep-alive in time
    site.step(9.0)
    assert not c.silent() and c.currents[0] == 16.0
    site.step(1.0)                       # 10 s since the keep-alive
    assert c.silent() and c.currents[0] == 8.0
    c.command(site.now, current=12)      # the controller is back
    assert not c.silent() and c.currents[0] == 12.0


def test_failsafe_below_minimum_pauses_and_no_watchdog_keeps_the_setpoint():
    guarded = ChargerModel("g", watchdog=True, failsafe_current=0.0, failsafe_timeout=5)
    unguarded = ChargerModel("u")
    site = SiteModel()
    for c in (guarded, unguarded):
        site.add_charger(c)
        c.plug(Ev(ramp_delay=0), site.now)
        c.command(site.now, current=16)
    site.step(30)
    assert guarded.state == "B" and guarded.currents[0] == 0.0
    assert unguarded.currents[0] == 16.0             # a charger without a watchdog carries on


def test_grid_sums_base_load_and_chargers_per_their_wiring():
    three = ChargerModel("three", wiring=["L2", "L3", "L1"])   # rotated wiring
    one = ChargerModel("one", phases=1, wiring=["L2"])
    site = SiteModel(GridModel([5, 3, 1]))
    site.add_charger(three)
    site.add_charger(one)
    site.add_meter("grid")
    site.add_meter("sub", chargers=["one"])
    three.plug(Ev(ramp_delay=0, max_current=16, phases=1), site.now)   # 1-phase EV on a 3-phase charger
    one.plug(Ev(ramp_delay=0, max_current=32, phases=3), site.now)     # 3-phase EV on a 1-phase charger
    three.command(site.now, current=16)
    one.command(site.now, current=10)
    site.refresh()
    grid = site.meter_reading("grid")
    # "three" carries 16 A on its phase 1 = site L2; "one" carries 10 A on L2
    assert grid.current == (5.0, 3.0 + 16.0 + 10.0, 1.0)
    assert grid.voltage[1] < grid.voltage[0] < grid.voltage[2]     # sag follows each phase's load
    assert grid.power[1] == pytest.approx(grid.voltage[1] * 29.0)
    assert grid.power_total == pytest.approx(sum(v * i for v, i in zip(grid.voltage, grid.current)))
    sub = site.meter_reading("sub")
    assert sub.current == (0.0, 10.0, 0.0)           # only its charger, no base load


def test_base_load_step_and_export():
    site = SiteModel(GridModel(0))
    site.add_meter("grid")
    site.grid.set_base(12.0, phase="L3")
    site.refresh()
    assert site.meter_reading("grid").current == (0.0, 0.0, 12.0)
    site.grid.set_base([-10, -10, -10])              # PV exporting
    site.refresh()
    site.step(3600)
    r = site.meter_reading("grid")
    assert r.current == (10.0, 10.0, 10.0) and r.power_total < 0
    assert r.energy_export_wh == pytest.approx(-r.power_total, rel=1e-9) and r.energy_import_wh == 0.0


def test_phase_switching_to_one_phase_uses_the_first_wired_phase():
    c = ChargerModel("c1", wiring=["L3", "L1", "L2"])
    site = site_with(c)
    c.plug(Ev(ramp_delay=0), site.now)
    c.command(site.now, current=16, phases=1)
    site.refresh()
    assert c.currents == (16.0, 0.0, 0.0)
    assert site.meter_reading("grid").current == (0.0, 0.0, 16.0)


def test_advance_to_never_goes_back_and_large_steps_are_split():
    c = ChargerModel("c1")
    site = site_with(c)
    c.plug(Ev(ramp_delay=0.5), site.now)
    c.command(site.now, current=16)
    site.advance_to(site.now + 10.0)                 # split: the ramp delay is honoured inside
    assert c.energy_wh == pytest.approx(3 * c.voltages[0] * 16 * 9.5 / 3600, rel=1e-9)
    now = site.now
    site.advance_to(now - 5)
    assert site.now == now


@pytest.mark.parametrize("kwargs, message", [
    ({"soc": 1.5}, "soc must be between 0 and 1"),
    ({"capacity_kwh": 0}, "capacity_kwh must be > 0"),
    ({"phases": 2}, "phases must be 1 or 3"),
    ({"max_current": -1}, "max_current must be > 0"),
    ({"full_state": "A"}, "full_state must be 'B' or 'C'"),
])
def test_ev_parameters_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Ev(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"phases": 1, "wiring": ["L1", "L2"]}, "wiring must name 1"),
    ({"wiring": ["L1", "L1", "L2"]}, "distinct"),
    ({"wiring": ["L1", "L2", "N"]}, "L1, L2, L3"),
    ({"phases": 2}, "phases must be 1 or 3"),
])
def test_charger_wiring_is_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ChargerModel("bad", **kwargs)


def test_bad_commands_and_base_loads_are_refused():
    c = ChargerModel("c1")
    with pytest.raises(ValueError, match="current must be"):
        c.command(0.0, current=float("nan"))
    with pytest.raises(ValueError, match="failsafe_timeout must be > 0"):
        c.command(0.0, failsafe_timeout=0)
    g = GridModel()
    with pytest.raises(ValueError, match="3 values"):
        g.set_base([1, 2])
    with pytest.raises(ValueError, match="phase must be one of"):
        g.set_base(3, phase="L4")


def test_full_ev_shows_b_when_the_charger_pauses_even_if_it_stays_in_c_when_offered():
    c = ChargerModel("c1")
    site = site_with(c)
    c.plug(Ev(soc=1.0, full_state="C"), site.now)
    c.command(site.now, current=16)
    assert c.state == "C"
    c.command(site.now, current=0)
    assert c.state == "B"
