"""Safe transitions: from the setpoints in force to the allocator's targets, one poll at
a time, without any intermediate step exceeding a limit.

The allocator's targets all fit together, but chargers do not change at the same
instant: if A is lowered and B raised in the same poll, B may ramp up before A's EV
has slowed down. So, per poll:

- Lowers are commanded at once (safety never waits). A lowered charger stays counted at
  its old value until it is measured at or below the new setpoint (one that already
  is, an idle EV say, is not waited for).
- Raises wait while any lowered charger has not followed, up to ``lower_timeout``;
  after that the laggard stays counted at its old value and raises go ahead only within
  the room that leaves. A raise is cut to the room there is, or held if that is below
  the connector's minimum.
- Against flapping: a raise smaller than ``hysteresis`` is not commanded, nor a lower
  smaller than it while the old value still fits; a charger is raised at most once per
  ``min_interval`` (counted from its last change either way).
- A charger that stopped answering is counted at the larger of its last setpoint and
  its failsafe/max until it answers: it may not have reached its failsafe yet. One that
  ignores its setpoint keeps it too, counted at what it may draw.
- A charger whose setpoint was never written is counted at its max on every wired
  phase until measured (it may still run on what a previous process told it).
- A charger is never counted below what it is measured drawing: "follows its
  setpoint" allows ``comply_tolerance`` of meter noise, the bound does not.

Keep-alives and validity rewrites are the drivers' business, not this module's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from agent.energy.allocator import round_down, round_up
from agent.energy.model import Allocation, ConnectorInput, Policy, Triple, fmt_amps
from agent.energy.network import Network
from drivers.contract import Setpoint


@dataclass(slots=True)
class Pending:
    """A lowered charger not yet measured at its new setpoint."""

    #: amps per site phase it is counted at meanwhile
    high: Triple
    since: float


@dataclass
class TransitionState:
    pending: dict[int, Pending] = field(default_factory=dict)
    #: monotonic time of each connector's last commanded change
    last_change: dict[int, float] = field(default_factory=dict)

    def copy(self) -> TransitionState:
        return TransitionState({k: replace(v) for k, v in self.pending.items()}, dict(self.last_change))


@dataclass(frozen=True)
class TransitionPlan:
    #: what to command now, every connector of the allocations
    setpoints: dict[int, Setpoint]
    state: TransitionState
    #: connectors not (fully) at their target this poll, and why
    held: dict[int, str]
    #: load per network constraint this step is counted at
    counted: list[float]


def load_of(sp: Setpoint | None, c: ConnectorInput) -> Triple:
    """Amps per site phase a setpoint allows (a never-written one: max on all wired)."""
    if sp is None:
        return tuple(c.max_current if p in c.wiring else 0.0 for p in range(3))  # type: ignore[return-value]
    if not sp.enabled:
        return (0.0, 0.0, 0.0)
    fp = c.footprint(min(sp.phases, len(c.wiring)))
    return tuple(sp.amps if p in fp else 0.0 for p in range(3))  # type: ignore[return-value]


def _vmax(a: Triple, b: Triple) -> Triple:
    return (max(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2]))


def _le(a: Triple, b: Triple) -> bool:
    return all(x <= y + 1e-9 for x, y in zip(a, b))


def plan_transition(
    allocations: Mapping[int, Allocation],
    inputs: Sequence[ConnectorInput],
    network: Network,
    policy: Policy = Policy(),
    now: float = 0.0,
    state: TransitionState | None = None,
) -> TransitionPlan:
    """The setpoints to command this poll (see module doc). Pure; ``state`` is not
    modified, the new one is in the plan."""
    st = state.copy() if state is not None else TransitionState()
    info = {c.connector_id: c for c in inputs}
    missing = sorted(set(allocations) - set(info))
    if missing:
        raise ValueError(f"allocations for connectors without input: {missing}")
    st.pending = {k: v for k, v in st.pending.items() if k in allocations}

    def follows(c: ConnectorInput, new: Triple) -> bool:
        """Measured at or below ``new`` already: nothing to wait for."""
        return (not c.stale and c.measured is not None
                and all(m <= a + policy.comply_tolerance for m, a in zip(c.measured, new)))

    for cid in list(st.pending):
        c = info[cid]
        if c.setpoint is not None and follows(c, load_of(c.setpoint, c)):
            del st.pending[cid]  # it follows: count it at its setpoint from now on

    out: dict[int, Setpoint] = {}
    held: dict[int, str] = {}
    counted: dict[int, Triple] = {}
    small_lowers: list[int] = []
    raises: list[int] = []

    def lower(cid: int, old: Triple, new: Triple) -> None:
        out[cid] = allocations[cid].setpoint()
        if follows(info[cid], new):
            st.pending.pop(cid, None)
        elif not _le(old, new):
            prev = st.pending.get(cid)
            high = _vmax(old, prev.high) if prev else old
            st.pending[cid] = Pending(high, prev.since if prev else now)
        counted[cid] = st.pending[cid].high if cid in st.pending else new
        # the first write, and a stop because no session may draw, are not load changes
        # to space out: the next session starts at once
        if info[cid].setpoint is not None and info[cid].setpoint != out[cid] and info[cid].allowed:
            st.last_change[cid] = now
        elif not info[cid].allowed:
            st.last_change.pop(cid, None)

    for cid, a in allocations.items():
        c = info[cid]
        old_sp = c.setpoint
        old = load_of(old_sp, c)
        if cid in st.pending:
            old = _vmax(old, st.pending[cid].high)
        new = a.load()
        target = a.setpoint()
        if c.stale or c.ignores_setpoint:
            out[cid] = old_sp if old_sp is not None else target
            counted[cid] = _vmax(old, new)
        elif old_sp == target:
            out[cid] = target
            counted[cid] = old
        elif _le(new, old):
            if (old_sp is not None and old_sp.enabled and target.enabled and old_sp.phases == target.phases
                    and old_sp.amps - target.amps < policy.hysteresis):
                out[cid] = old_sp
                counted[cid] = old
                small_lowers.append(cid)
            else:
                lower(cid, old, new)
        else:
            counted[cid] = old
            raises.append(cid)

    for cid, v in counted.items():  # what a charger measurably draws counts, whatever it was told
        c = info[cid]
        if not c.stale and c.measured is not None:
            counted[cid] = _vmax(v, c.measured)

    def loads() -> list[float]:
        return network.loads((info[cid].circuit, v) for cid, v in counted.items())

    now_loads = loads()
    if small_lowers and network.violations(now_loads):
        for cid in small_lowers:  # keeping the old values does not fit after all
            lower(cid, counted[cid], allocations[cid].load())
        now_loads = loads()
    for cid in small_lowers:
        if out[cid] != allocations[cid].setpoint():
            held[cid] = f"kept at {fmt_amps(out[cid].amps)} A: change below hysteresis {fmt_amps(policy.hysteresis)} A"

    waiting = sorted(cid for cid, p in st.pending.items() if now - p.since < policy.lower_timeout)
    for cid in sorted(raises, key=lambda i: (-info[i].priority, i)):
        c, a = info[cid], allocations[cid]
        old_sp = c.setpoint
        assert old_sp is not None  # a never-written setpoint counts at max: never a raise
        target = a.setpoint()
        last = st.last_change.get(cid)
        why = None
        if waiting:
            why = "waiting for lowered connector(s) " + ", ".join(map(str, waiting)) + " to follow"
        elif last is not None and now - last < policy.min_interval:
            why = f"last change {now - last:.0f} s ago (min interval {policy.min_interval:g} s)"
        elif (old_sp.enabled and old_sp.phases == target.phases
              and target.amps - old_sp.amps < policy.hysteresis):
            why = f"raise below hysteresis {fmt_amps(policy.hysteresis)} A"
        if why is None:
            own = counted[cid]
            room = target.amps
            for k in network.keys(c.circuit, a.footprint):
                con = network.constraints[k]
                room = min(room, con.budget - now_loads[k] + own[con.phase])
            amps = round_down(max(0.0, room), policy.resolution)
            if amps >= round_up(c.min_current, policy.resolution) - 1e-9 and amps > 0:
                out[cid] = Setpoint(amps, target.phases, True)
                counted[cid] = _vmax(own, load_of(out[cid], c))
                if not _le(own, load_of(out[cid], c)):  # a phase switch also drops phases
                    prev = st.pending.get(cid)
                    st.pending[cid] = Pending(counted[cid], prev.since if prev else now)
                now_loads = loads()
                st.last_change[cid] = now
                if amps < target.amps - 1e-9:
                    held[cid] = f"raised to {fmt_amps(amps)} of {fmt_amps(target.amps)} A: no more room yet"
                continue
            why = f"no room yet ({max(0.0, room):.1f} A free)"
        out[cid] = old_sp
        held[cid] = why
    return TransitionPlan(out, st, held, now_loads)
