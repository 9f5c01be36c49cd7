"""Safe transitions between setpoint sets: lower first, raise after the lowered chargers
follow (or after a timeout, within what is left), hysteresis, minimum interval."""

from __future__ import annotations

from agent.energy.limits import FuseTree, stack_limits
from agent.energy.model import Allocation, ConnectorInput, Policy
from agent.energy.network import Network
from agent.energy.transitions import plan_transition
from drivers.contract import Setpoint

NET = Network(stack_limits(fuses=FuseTree((32.0, 32.0, 32.0))))
POL = Policy(lower_timeout=15, min_interval=0, hysteresis=1.0)


def cin(cid, sp, measured=None, **kw):
    m = None if measured is None else (measured,) * 3
    return ConnectorInput(cid, state="C", max_current=32, setpoint=sp, measured=m, **kw)


def want(cid, amps, enabled=True, phases=3):
    return Allocation(cid, amps, phases, enabled, "test", footprint=(0, 1, 2)[:phases])


def test_lower_first_then_raise_once_the_lowered_charger_follows():
    inputs = [cin(1, Setpoint(20), 20.0), cin(2, Setpoint(10), 10.0)]
    targets = {1: want(1, 10), 2: want(2, 20)}
    plan = plan_transition(targets, inputs, NET, POL, 0.0)
    assert plan.setpoints == {1: Setpoint(10), 2: Setpoint(10)}
    assert plan.held[2] == "waiting for lowered connector(s) 1 to follow"
    # next poll: CP1 written, still measured at 20 A -> CP2 still waits
    inputs = [cin(1, Setpoint(10), 20.0), cin(2, Setpoint(10), 10.0)]
    plan = plan_transition(targets, inputs, NET, POL, 1.0, plan.state)
    assert plan.setpoints[2] == Setpoint(10)
    # CP1 follows -> CP2 raised
    inputs = [cin(1, Setpoint(10), 10.2), cin(2, Setpoint(10), 10.0)]
    plan = plan_transition(targets, inputs, NET, POL, 2.0, plan.state)
    assert plan.setpoints == {1: Setpoint(10), 2: Setpoint(20)}
    assert plan.held == {} and plan.state.pending == {}


def test_after_the_timeout_a_laggard_is_counted_at_its_old_value():
    inputs = [cin(1, Setpoint(20), 20.0), cin(2, Setpoint(6), 6.0)]
    targets = {1: want(1, 6), 2: want(2, 26)}
    plan = plan_transition(targets, inputs, NET, POL, 0.0)
    inputs = [cin(1, Setpoint(6), 20.0), cin(2, Setpoint(6), 6.0)]  # CP1 ignores its new setpoint
    plan = plan_transition(targets, inputs, NET, POL, 14.9, plan.state)
    assert plan.setpoints[2] == Setpoint(6)
    plan = plan_transition(targets, inputs, NET, POL, 15.0, plan.state)
    assert plan.setpoints[2] == Setpoint(12)  # 32 A - CP1 counted at its old 20 A
    assert plan.held[2] == "raised to 12 of 26 A: no more room yet"
    assert max(plan.counted) <= 32.0


def test_a_raise_that_would_land_below_the_minimum_is_held():
    inputs = [cin(1, Setpoint(28), 28.0), cin(2, Setpoint(0, enabled=False), 0.0)]
    targets = {1: want(1, 16), 2: want(2, 16)}
    plan = plan_transition(targets, inputs, NET, Policy(lower_timeout=0, min_interval=0), 0.0)
    # lowered CP1 is counted at 28 A (timeout 0: no waiting), 4 A left < 6 A minimum
    assert plan.setpoints == {1: Setpoint(16), 2: Setpoint(0, enabled=False)}
    assert plan.held[2] == "no room yet (4.0 A free)"


def test_small_raises_are_not_commanded():
    inputs = [cin(1, Setpoint(10), 10.0)]
    plan = plan_transition({1: want(1, 10.8)}, inputs, NET, POL, 0.0)
    assert plan.setpoints[1] == Setpoint(10)
    assert plan.held[1] == "raise below hysteresis 1 A"
    plan = plan_transition({1: want(1, 11)}, inputs, NET, POL, 0.0)
    assert plan.setpoints[1] == Setpoint(11)


def test_small_lowers_are_skipped_only_while_the_old_value_still_fits():
    inputs = [cin(1, Setpoint(16), 16.0), cin(2, Setpoint(16), 16.0)]
    plan = plan_transition({1: want(1, 15.5), 2: want(2, 16)}, inputs, NET, POL, 0.0)
    assert plan.setpoints[1] == Setpoint(16)  # 32 A still fits
    assert plan.held[1] == "kept at 16 A: change below hysteresis 1 A"
    small = Network(stack_limits(fuses=FuseTree((31.5, 31.5, 31.5))))
    plan = plan_transition({1: want(1, 15.5), 2: want(2, 16)}, inputs, small, POL, 0.0)
    assert plan.setpoints[1] == Setpoint(15.5)  # 32 A would not fit 31.5 A


def test_minimum_interval_between_changes_of_one_charger():
    pol = Policy(min_interval=10, lower_timeout=0)
    inputs = [cin(1, Setpoint(16), 16.0)]
    plan = plan_transition({1: want(1, 8)}, inputs, NET, pol, 0.0)
    assert plan.setpoints[1] == Setpoint(8)  # lowers never wait
    inputs = [cin(1, Setpoint(8), 8.0)]
    plan = plan_transition({1: want(1, 16)}, inputs, NET, pol, 5.0, plan.state)
    assert plan.setpoints[1] == Setpoint(8)
    assert plan.held[1] == "last change 5 s ago (min interval 10 s)"
    plan = plan_transition({1: want(1, 16)}, inputs, NET, pol, 10.0, plan.state)
    assert plan.setpoints[1] == Setpoint(16)


def test_a_never_written_charger_is_counted_at_its_max_until_measured():
    inputs = [cin(1, None, None), cin(2, Setpoint(0, enabled=False), 0.0)]
    plan = plan_transition({1: want(1, 16), 2: want(2, 16)}, inputs, NET, POL, 0.0)
    assert plan.setpoints[1] == Setpoint(16)
    assert plan.setpoints[2] == Setpoint(0, enabled=False)
    inputs = [cin(1, Setpoint(16), 16.0), cin(2, Setpoint(0, enabled=False), 0.0)]
    plan = plan_transition({1: want(1, 16), 2: want(2, 16)}, inputs, NET, POL, 1.0, plan.state)
    assert plan.setpoints[2] == Setpoint(16)


def test_a_stale_charger_is_counted_at_its_last_setpoint_too():
    # the allocator counts it at its failsafe 6 A, but it may still run on 20 A
    inputs = [cin(1, Setpoint(20), 20.0, stale=True, failsafe_current=6.0), cin(2, Setpoint(6), 6.0)]
    stale = Allocation(1, 6.0, 3, True, "stale", footprint=(0, 1, 2))
    plan = plan_transition({1: stale, 2: want(2, 26)}, inputs, NET, POL, 0.0)
    assert plan.setpoints[1] == Setpoint(20)  # not written anyway: it does not answer
    assert plan.setpoints[2] == Setpoint(12)


def test_phase_switch_to_one_phase_counts_the_old_phases_until_they_drop():
    inputs = [cin(1, Setpoint(10), 10.0, can_switch_phases=True), cin(2, Setpoint(10), 10.0)]
    targets = {1: want(1, 16, phases=1), 2: want(2, 16)}
    plan = plan_transition(targets, inputs, NET, POL, 0.0)
    # CP1 first (same priority, lower id): L1 room 32 - 20 + 10 = 22 -> 16 A on L1;
    # CP2 then finds 32 - 26 + 10 = 16 A on L1
    assert plan.setpoints == {1: Setpoint(16, phases=1), 2: Setpoint(16)}
    assert plan.counted == [32.0, 26.0, 26.0]
    assert plan.state.pending[1].high == (16, 10, 10)  # L2/L3 counted until measured off
    # next poll: CP1 still draws on all three phases -> nothing else may be raised
    inputs = [ConnectorInput(1, state="C", max_current=32, setpoint=Setpoint(16, phases=1), measured=(16.0, 10.0, 10.0),
                             can_switch_phases=True), cin(2, Setpoint(16), 16.0)]
    plan = plan_transition({1: want(1, 16, phases=1), 2: want(2, 16)}, inputs, NET, POL, 1.0, plan.state)
    assert 1 in plan.state.pending
    inputs[0] = ConnectorInput(1, state="C", max_current=32, setpoint=Setpoint(16, phases=1),
                               measured=(16.0, 0.0, 0.0), can_switch_phases=True)
    plan = plan_transition({1: want(1, 16, phases=1), 2: want(2, 16)}, inputs, NET, POL, 2.0, plan.state)
    assert plan.state.pending == {}
