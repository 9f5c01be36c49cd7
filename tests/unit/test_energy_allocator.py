"""The allocator on small hand-made sites: sharing, priorities, pausing, wiring,
circuits, stale chargers, released current, 1p/3p switching, reasons."""

from __future__ import annotations

import math

import pytest

from agent.energy.allocator import AllocatorState, allocate
from agent.energy.explain import render
from agent.energy.limits import FuseTree, GridReading, stack_limits
from agent.energy.model import SITE, ConnectorInput, Limit, Limits, Policy, ScopeLimits
from drivers.contract import Setpoint


def site(fuse=(32.0, 32.0, 32.0), circuits=None, **kw) -> Limits:
    return stack_limits(fuses=FuseTree(tuple(fuse), circuits or {}), **kw)


def ev(cid, **kw) -> ConnectorInput:
    kw.setdefault("state", "C")
    kw.setdefault("max_current", 32.0)
    return ConnectorInput(cid, **kw)


def amps(result) -> dict[int, float]:
    return {cid: (a.amps if a.enabled else 0.0) for cid, a in result.allocations.items()}


def test_equal_share_of_the_site_fuse():
    r = allocate([ev(1), ev(2), ev(3)], site((30, 30, 30)))
    assert amps(r) == {1: 10.0, 2: 10.0, 3: 10.0}
    assert "share of site fuse L1, priority 1" in r.allocations[1].reason


def test_max_current_caps_and_the_rest_goes_to_others():
    r = allocate([ev(1, max_current=6), ev(2), ev(3)], site((30, 30, 30)))
    assert amps(r) == {1: 6.0, 2: 12.0, 3: 12.0}
    assert r.allocations[1].reason.startswith("its max 6 A")


def test_higher_priority_first():
    r = allocate([ev(1, priority=2, max_current=20), ev(2), ev(3)], site((32, 32, 32)))
    assert amps(r) == {1: 20.0, 2: 6.0, 3: 6.0}
    assert r.allocations[1].reason == "its max 20 A, priority 2"


def test_below_minimum_pauses_one_and_the_others_get_its_share():
    # 16 A for three: 5.3 A each is below 6 A -> one pauses, two get 8 A
    inputs = [ev(1, setpoint=Setpoint(8)), ev(2, setpoint=Setpoint(8)), ev(3, setpoint=Setpoint(0, enabled=False))]
    r = allocate(inputs, site((16, 16, 16)))
    assert amps(r) == {1: 8.0, 2: 8.0, 3: 0.0}
    assert not r.allocations[3].enabled
    assert "paused: share of site fuse L1 would be 5.3 A, below its minimum 6 A" in r.allocations[3].reason


def test_the_connector_that_was_not_running_is_paused_first():
    inputs = [ev(1, setpoint=Setpoint(0, enabled=False)), ev(2, setpoint=Setpoint(8)), ev(3, setpoint=Setpoint(8))]
    r = allocate(inputs, site((16, 16, 16)))
    assert amps(r) == {1: 0.0, 2: 8.0, 3: 8.0}


def test_every_connector_paused_when_even_one_minimum_does_not_fit():
    r = allocate([ev(1), ev(2)], site((5, 5, 5)))
    assert amps(r) == {1: 0.0, 2: 0.0}


def test_one_phase_charger_loads_only_its_phase():
    # a 1-phase charger on L2 and a 3-phase one share L2 only
    inputs = [ev(1, wiring=(1,), phases=1), ev(2)]
    r = allocate(inputs, site((32, 20, 32)))
    assert amps(r) == {1: 10.0, 2: 10.0}
    assert r.allocations[1].footprint == (1,)
    load = [sum(a.load()[p] for a in r.allocations.values()) for p in range(3)]
    assert load == [10.0, 20.0, 10.0]


def test_one_phase_chargers_on_different_phases_do_not_compete():
    inputs = [ev(1, wiring=(0,), phases=1), ev(2, wiring=(1,), phases=1), ev(3, wiring=(2,), phases=1)]
    r = allocate(inputs, site((16, 16, 16)))
    assert amps(r) == {1: 16.0, 2: 16.0, 3: 16.0}


def test_circuit_fuse_binds_inside_a_bigger_site():
    circuits = {"garage": ((16.0, 16.0, 16.0), SITE)}
    inputs = [ev(1, circuit="garage"), ev(2, circuit="garage"), ev(3)]
    r = allocate(inputs, site((63, 63, 63), circuits))
    assert amps(r) == {1: 8.0, 2: 8.0, 3: 32.0}
    assert "share of circuit garage fuse L1" in r.allocations[1].reason


def test_nested_circuits_respect_every_breaker_on_the_path():
    circuits = {"depot": ((20.0, 20.0, 20.0), SITE), "row-a": ((32.0, 32.0, 32.0), "depot")}
    r = allocate([ev(1, circuit="row-a"), ev(2, circuit="row-a")], site((63, 63, 63), circuits))
    assert amps(r) == {1: 10.0, 2: 10.0}
    assert "circuit depot fuse" in r.allocations[1].reason


def test_unknown_circuit_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown circuit 'nope'"):
        allocate([ev(1, circuit="nope")], site())


def test_duplicate_connector_is_a_clear_error():
    with pytest.raises(ValueError, match="connector 1 appears twice"):
        allocate([ev(1), ev(1)], site())


def test_unplugged_faulted_and_not_allowed_get_nothing():
    inputs = [ev(1, state="A"), ev(2, state="E"), ev(3, allowed=False), ev(4)]
    r = allocate(inputs, site((32, 32, 32)))
    assert amps(r) == {1: 0.0, 2: 0.0, 3: 0.0, 4: 32.0}
    assert r.allocations[1].reason == "unplugged"
    assert r.allocations[2].reason == "fault (state E)"


def test_stale_charger_counted_at_its_failsafe_current():
    inputs = [ev(1, stale=True, failsafe_current=6.0), ev(2)]
    r = allocate(inputs, site((20, 20, 20)))
    assert amps(r) == {1: 6.0, 2: 14.0}
    assert r.allocations[1].reason == "stale: counted at its failsafe 6 A"


def test_stale_charger_without_failsafe_register_counted_at_its_max():
    inputs = [ev(1, stale=True, max_current=16.0, failsafe_current=None), ev(2)]
    r = allocate(inputs, site((20, 20, 20)))
    assert amps(r)[2] == 0.0  # 20 - 16 = 4 A is below the minimum
    assert "counted at its max 16 A" in r.allocations[1].reason


def test_stale_one_phase_charger_counted_on_its_phase_only():
    inputs = [ev(1, wiring=(2,), phases=1, stale=True, failsafe_current=10.0), ev(2, wiring=(0,), phases=1)]
    r = allocate(inputs, site((16, 16, 16)))
    assert amps(r) == {1: 10.0, 2: 16.0}


def test_csms_connector_cap_and_station_limit():
    r = allocate([ev(1), ev(2)], site((63, 63, 63), station_amps=30.0, connector_amps={1: 10.0}))
    assert amps(r) == {1: 10.0, 2: 20.0}
    assert r.allocations[1].reason.startswith("csms limit 10 A")
    assert "share of site csms L1" in r.allocations[2].reason


def test_csms_cap_below_minimum_pauses():
    r = allocate([ev(1)], site(connector_amps={1: 4.0}))
    assert not r.allocations[1].enabled
    assert "csms limit 4 A is below its minimum 6 A" in r.allocations[1].reason


def test_setpoints_are_rounded_down_to_the_resolution():
    r = allocate([ev(1), ev(2), ev(3)], site((20, 20, 20)))
    assert amps(r) == {1: 6.6, 2: 6.6, 3: 6.6}
    r = allocate([ev(1), ev(2), ev(3)], site((20, 20, 20)), Policy(resolution=1.0))
    assert amps(r) == {1: 6.0, 2: 6.0, 3: 6.0}


def test_same_input_same_output_and_state_not_modified():
    inputs = [ev(1, measured=(3.0, 3.0, 3.0), setpoint=Setpoint(16)), ev(2)]
    state = AllocatorState()
    a = allocate(inputs, site(), Policy(settle_time=0), 5.0, state)
    b = allocate(inputs, site(), Policy(settle_time=0), 5.0, state)
    assert a.allocations == b.allocations
    assert state.connectors == {}


# ---------------------------------------------------------------- released current

def test_ev_drawing_less_releases_the_difference_after_settle_time():
    pol = Policy(settle_time=30, release_margin=2)
    limits = site((32, 32, 32))
    slow = dict(measured=(7.0, 7.0, 7.0), setpoint=Setpoint(16))
    inputs = [ev(1, **slow), ev(2, measured=(16.0, 16.0, 16.0), setpoint=Setpoint(16))]
    r = allocate(inputs, limits, pol, 0.0)
    assert amps(r) == {1: 16.0, 2: 16.0}
    r = allocate(inputs, limits, pol, 29.0, r.state)
    assert amps(r) == {1: 16.0, 2: 16.0}  # not settled yet
    r = allocate(inputs, limits, pol, 30.0, r.state)
    assert amps(r) == {1: 9.0, 2: 23.0}
    assert r.allocations[1].reason.startswith("EV draws 7.0 A, rest released")


def test_released_ev_gets_its_share_back_when_it_draws_more():
    pol = Policy(settle_time=0, release_margin=2)
    limits = site((32, 32, 32))
    r = allocate([ev(1, measured=(7.0,) * 3, setpoint=Setpoint(16)), ev(2)], limits, pol, 0.0)
    assert amps(r)[1] == 9.0
    r = allocate([ev(1, measured=(8.9,) * 3, setpoint=Setpoint(9)), ev(2)], limits, pol, 1.0, r.state)
    assert amps(r) == {1: 16.0, 2: 16.0}


def test_plugged_but_idle_ev_keeps_its_minimum():
    pol = Policy(settle_time=0)
    r = allocate([ev(1, state="B", measured=(0.0,) * 3, setpoint=Setpoint(16)), ev(2)], site(), pol, 0.0)
    assert amps(r) == {1: 6.0, 2: 26.0}


def test_a_raise_restarts_the_settle_timer():
    pol = Policy(settle_time=10)
    limits = site((32, 32, 32))
    r = allocate([ev(1, measured=(2.0,) * 3, setpoint=Setpoint(10))], limits, pol, 0.0)
    r = allocate([ev(1, measured=(2.0,) * 3, setpoint=Setpoint(20))], limits, pol, 8.0, r.state)
    r = allocate([ev(1, measured=(2.0,) * 3, setpoint=Setpoint(20))], limits, pol, 12.0, r.state)
    assert amps(r)[1] == 32.0  # 4 s since the raise, not 12
    r = allocate([ev(1, measured=(2.0,) * 3, setpoint=Setpoint(20))], limits, pol, 18.0, r.state)
    assert amps(r)[1] == 6.0


# ---------------------------------------------------------------- 1p/3p switching

def test_switches_to_one_phase_when_three_phases_would_be_paused():
    pol = Policy(switch_delay=10, switch_dwell=60)
    r = allocate([ev(1, can_switch_phases=True)], site((5, 5, 5)), pol, 0.0)
    r = allocate([ev(1, can_switch_phases=True)], site((5, 5, 5)), pol, 20.0, r.state)
    assert r.allocations[1].phases == 3  # 5 A on one phase is below 6 A too: no point switching
    inputs = [ev(1, can_switch_phases=True)]
    r = allocate(inputs, site((20, 5, 5)), pol, 0.0)
    assert r.allocations[1].phases == 3 and not r.allocations[1].enabled
    r = allocate(inputs, site((20, 5, 5)), pol, 9.0, r.state)
    assert r.allocations[1].phases == 3  # condition held 9 s < switch_delay
    r = allocate(inputs, site((20, 5, 5)), pol, 10.0, r.state)
    a = r.allocations[1]
    assert a.phases == 1 and a.enabled and a.amps == 20.0 and a.footprint == (0,)
    assert "1p on L1" in a.reason


def test_back_to_three_phases_with_margin_and_dwell():
    pol = Policy(switch_delay=0, switch_dwell=60, switch_margin=1.0)
    sw = dict(can_switch_phases=True)
    r = allocate([ev(1, **sw)], site((20, 5, 5)), pol, 0.0)
    assert r.allocations[1].phases == 1
    r = allocate([ev(1, **sw)], site((20, 6.5, 6.5)), pol, 10.0, r.state)
    assert r.allocations[1].phases == 1  # 6.5 A on 3p is under min + margin: stays 1p
    r = allocate([ev(1, **sw)], site((20, 16, 16)), pol, 30.0, r.state)
    assert r.allocations[1].phases == 1  # would switch, but dwell (60 s since the last) holds it
    r = allocate([ev(1, **sw)], site((20, 16, 16)), pol, 60.0, r.state)
    assert r.allocations[1].phases == 3 and r.allocations[1].amps == 16.0


def test_no_switching_for_chargers_that_cannot():
    r = allocate([ev(1)], site((20, 5, 5)), Policy(switch_delay=0), 0.0)
    assert r.allocations[1].phases == 3 and not r.allocations[1].enabled


# ---------------------------------------------------------------- explanation

def test_explanation_names_every_limit_and_what_decided_each_connector():
    inputs = [ev(2, measured=(10.0, 10.0, 10.0), setpoint=Setpoint(10)), ev(3, state="A")]
    limits = stack_limits(fuses=FuseTree((63.0, 63.0, 63.0)), connectors=inputs,
                          grid=GridReading((20.0, 31.8, 25.0), 1.0), connector_amps={2: 30.0})
    r = allocate(inputs, limits)
    lines = render(r.explanation)
    # CP2's own csms cap decides, so no site limit binds
    assert lines[1] == "L2: site fuse 63 A, headroom 41.2 A; EVs 30 A"
    assert "CP2 30 A: csms limit 30 A, priority 1" in lines
    assert "CP3 0 A: unplugged" in lines
    assert all(p.binding is None for p in r.explanation.phases)


def test_binding_headroom_is_marked():
    inputs = [ev(1, measured=(10.0, 10.0, 10.0), setpoint=Setpoint(10), max_current=63)]
    limits = stack_limits(fuses=FuseTree((63.0, 63.0, 63.0)), connectors=inputs, grid=GridReading((30.0, 31.8, 20.0), 1.0))
    r = allocate(inputs, limits)
    lines = render(r.explanation)
    assert lines[1] == "L2: site fuse 63 A, headroom 41.2 A (binds); EVs 41.2 A"
    assert lines[3] == "CP1 41.2 A: share of site headroom L2, priority 1"
    assert r.explanation.as_dict()["phases"][1]["binding"] == "headroom"


def test_limits_without_a_finite_value_do_not_constrain():
    limits = Limits({SITE: ScopeLimits(SITE, None, (Limit("site fuse", (math.inf,) * 3),))})
    r = allocate([ev(1, max_current=16)], limits)
    assert amps(r) == {1: 16.0}
