"""Property tests (hypothesis) over random sites, readings and limits.

The bound is checked from the limits themselves, not from the allocator's own
constraint list: for every scope (site, each circuit) and site phase, what the answering
connectors are given plus what stale ones are counted at plus the measured other load
stays within every limit, whenever that is possible at all.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.energy.allocator import AllocatorState, allocate, limit_label, round_up
from agent.energy.limits import FuseTree, GridReading, stack_limits
from agent.energy.model import SITE, ConnectorInput, Policy, phase_name
from agent.energy.transitions import load_of, plan_transition
from drivers.contract import Setpoint

TOL = 1e-6
amps = st.floats(0, 80, allow_nan=False).map(lambda x: round(x, 1))


@st.composite
def sites(draw, *, with_grid=True, stale_ok=True):
    n_circ = draw(st.integers(0, 3))
    circuits = {}
    for i in range(n_circ):
        parent = draw(st.sampled_from([SITE] + list(circuits)))
        circuits[f"c{i}"] = ((draw(amps), draw(amps), draw(amps)), parent)
    fuse = (draw(amps), draw(amps), draw(amps))
    conns = []
    for cid in range(1, draw(st.integers(1, 10)) + 1):
        three = draw(st.booleans())
        wiring = tuple(draw(st.permutations([0, 1, 2]))) if three else (draw(st.integers(0, 2)),)
        lo = draw(st.sampled_from([0.0, 6.0, 6.0, 8.0, draw(st.floats(0, 10).map(lambda x: round(x, 2)))]))
        hi = max(lo, draw(st.floats(1, 40).map(lambda x: round(x, 1))))
        state = draw(st.sampled_from("ABBCCCDEF"))
        sp = draw(st.none() | st.builds(Setpoint, amps=st.floats(0, 40).map(lambda x: round(x, 1)),
                                        phases=st.sampled_from([1, 3] if three else [1]), enabled=st.booleans()))
        measured = draw(st.none() | st.tuples(amps, amps, amps))
        conns.append(ConnectorInput(
            cid, state=state, wiring=wiring, phases=draw(st.sampled_from([1, 3])) if three else 1,
            measured=measured, min_current=lo, max_current=hi, priority=draw(st.integers(0, 2)),
            can_switch_phases=three and draw(st.booleans()), setpoint=sp,
            stale=stale_ok and draw(st.integers(0, 5)) == 0,
            failsafe_current=draw(st.none() | st.floats(0, 16).map(lambda x: round(x, 1))),
            circuit=draw(st.sampled_from([SITE] + list(circuits))), allowed=draw(st.integers(0, 7)) > 0,
        ))
    grid = None
    if with_grid and draw(st.booleans()):
        grid = GridReading(
            (draw(amps), draw(amps), draw(amps)), draw(st.none() | st.floats(0, 30)), late=draw(st.booleans()))
    limits = stack_limits(
        fuses=FuseTree(fuse, circuits), connectors=conns, grid=grid, grid_stale_after=10.0,
        failsafe_amps=draw(st.floats(0, 30).map(lambda x: round(x, 1))),
        dim=draw(st.none() | st.floats(0, 40)),
        station_amps=draw(st.none() | st.floats(0, 60)),
        connector_amps={c.connector_id: draw(st.floats(0, 40)) for c in conns if draw(st.integers(0, 3)) == 0},
    )
    policy = Policy(resolution=draw(st.sampled_from([0.1, 0.5, 1.0])), settle_time=draw(st.sampled_from([0.0, 30.0])),
                    switch_delay=draw(st.sampled_from([0.0, 30.0])), switch_dwell=draw(st.sampled_from([0.0, 300.0])))
    return conns, limits, policy


def chain(limits, circuit):
    return limits.chain(circuit)


def check_bound(conns, limits, result):
    """Sum of fresh setpoints <= max(0, smallest limit - stale counted) per scope/phase."""
    by_id = {c.connector_id: c for c in conns}
    for scope, sl in limits.scopes.items():
        for p in range(3):
            budget = min((lim.amps[p] for lim in sl.limits), default=math.inf)
            fresh = stale = 0.0
            for cid, a in result.allocations.items():
                c = by_id[cid]
                if scope not in chain(limits, c.circuit):
                    continue
                if c.stale:
                    stale += a.load()[p]
                else:
                    fresh += a.load()[p]
            assert fresh <= max(0.0, budget - stale) + TOL, (scope, p, fresh, stale, budget)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sites(), st.floats(0, 1000))
def test_no_limit_exceeded_no_enabled_connector_below_min_same_input_same_output(site, now):
    conns, limits, policy = site
    first = allocate(conns, limits, policy, now)
    result = allocate(conns, limits, policy, now + 40.0, first.state)  # with memory: released, switched
    check_bound(conns, limits, result)
    again = allocate(conns, limits, policy, now + 40.0, first.state)
    assert again.allocations == result.allocations
    for c in conns:
        a = result.allocations[c.connector_id]
        if c.stale:
            continue
        if a.enabled:
            assert a.amps >= round_up(c.min_current, policy.resolution) - TOL
            assert a.amps <= c.max_current + TOL
            for cap in limits.connector_caps.get(c.connector_id, ()):
                assert a.amps <= cap.amps + TOL
            assert c.plugged and c.allowed
        else:
            assert a.amps == 0.0


def _share_members(conns, limits, result, label):
    """Connectors loading the constraint named ``label`` (e.g. 'site headroom L2')."""
    for scope, sl in limits.scopes.items():
        for p in range(3):
            budget = min(lim.amps[p] for lim in sl.limits)
            smallest = next(lim for lim in sl.limits if lim.amps[p] == budget)
            if f"{limit_label(scope, smallest.name)} {phase_name(p)}" == label:
                return [c for c in conns if scope in chain(limits, c.circuit)
                        and p in result.allocations[c.connector_id].footprint]
    raise AssertionError(f"no constraint {label!r}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sites(stale_ok=False))
def test_fair_shares(site):
    """A connector held by a shared limit has at least as much as every other connector of
    its priority on that limit (within the rounding step); lower priorities there get at
    most the rounding crumbs."""
    conns, limits, policy = site
    result = allocate(conns, limits, policy, 0.0)
    by_id = {c.connector_id: c for c in conns}
    for cid, a in result.allocations.items():
        if not (a.enabled and a.reason.startswith("share of ")):
            continue
        label = a.reason[len("share of "):].split(",")[0]
        members = _share_members(conns, limits, result, label)
        prio = by_id[cid].priority
        crumbs = 0.0
        tier = 0
        for m in members:
            other = result.allocations[m.connector_id]
            if m.priority == prio:
                tier += 1
                assert other.amps <= a.amps + policy.resolution + TOL, (cid, m.connector_id, label)
            elif m.priority < prio and other.enabled:
                crumbs += other.amps
        assert crumbs <= (tier + len(members)) * policy.resolution + TOL


@st.composite
def sequences(draw):
    conns, limits, policy = draw(sites(with_grid=False, stale_ok=False))
    policy = Policy(resolution=policy.resolution, lower_timeout=draw(st.sampled_from([0.0, 5.0, 15.0])),
                    min_interval=draw(st.sampled_from([0.0, 10.0])), hysteresis=draw(st.sampled_from([0.0, 1.0])),
                    settle_time=0.0, switch_delay=0.0, switch_dwell=0.0)
    steps = []
    for _ in range(draw(st.integers(1, 8))):
        changes = {c.connector_id: (draw(st.sampled_from("ABCC")), draw(st.floats(6, 40).map(round)),
                                    draw(st.integers(0, 2)), draw(st.booleans()))
                   for c in conns}
        follows = {c.connector_id: draw(st.integers(0, 3)) for c in conns}  # 0 = this one never follows a lower
        steps.append((changes, follows, draw(st.floats(1, 20))))
    return conns, limits, policy, steps


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences())
def test_every_transition_step_keeps_the_bound(seq):
    """Chargers follow raises at once and lowers late or never (worst case), EVs draw all
    they are allowed; the real load is within every limit after every step."""
    conns, limits, policy, steps = seq
    by_id = {c.connector_id: c for c in conns}
    applied = {c.connector_id: (0.0, 0.0, 0.0) for c in conns}  # what each charger lets its EV draw
    in_force = {c.connector_id: Setpoint(0.0, phases=c.phases, enabled=False) for c in conns}
    alloc_state, trans_state, now = AllocatorState(), None, 0.0
    never = {cid for cid, f in steps[0][1].items() if f == 0}
    for changes, follows, dt in steps:
        now += dt
        inputs = []
        for c in conns:
            state, mx, prio, allowed = changes[c.connector_id]
            inputs.append(ConnectorInput(
                c.connector_id, state=state, wiring=c.wiring, phases=c.phases, measured=applied[c.connector_id],
                min_current=min(c.min_current, mx), max_current=mx, priority=prio, setpoint=in_force[c.connector_id],
                circuit=c.circuit, allowed=allowed, can_switch_phases=c.can_switch_phases))
        result = allocate(inputs, limits, policy, now, alloc_state)
        plan = plan_transition(result.allocations, inputs, result.network, policy, now, trans_state)
        alloc_state, trans_state = result.state, plan.state
        for cid, sp in plan.setpoints.items():
            new = load_of(sp, by_id[cid])
            old = applied[cid]
            lag = cid in never or follows[cid] == 1
            applied[cid] = tuple(n if n >= o or not lag else o for n, o in zip(new, old))
            in_force[cid] = sp
        for scope, sl in limits.scopes.items():
            for p in range(3):
                budget = min(lim.amps[p] for lim in sl.limits)
                load = sum(applied[c.connector_id][p] for c in conns if scope in chain(limits, c.circuit))
                assert load <= max(budget, 0.0) + TOL, (scope, p, load, budget, plan.held)
