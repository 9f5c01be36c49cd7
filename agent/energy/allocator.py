"""The allocator: (connectors, limits, policy, time, memory) -> setpoints and reasons.

Pure: no IO, no clock, no config. Everything it remembers between polls (how long an EV
has drawn less than offered, a switchable charger's 1p/3p mode and its timers, whose turn
it is) lives in an ``AllocatorState`` that the caller hands back in on the next call; the
input state is never modified, so the same inputs always give the same output.

One call:

1. Chargers that stopped answering are counted at their failsafe current (or max) on
   every wired phase; they are not commanded. Unplugged, faulted and not-allowed
   connectors get 0 A, disabled.
2. Each remaining connector's own cap is the smallest of its max, CSMS limits, a hold
   (grid reading late: nothing is raised) and, for an EV that has drawn well below its
   offer for ``settle_time``, what it draws plus ``release_margin``.
3. Priorities from high to low: each tier is water-filled (``agent.energy.fill``) into
   what the higher tiers left; below-minimum connectors are paused. Who is paused
   follows ``agent.energy.turns``: after ``rotation_interval`` the paused ones take
   turns with the running ones, the one waiting longest first.
4. Switchable chargers whose 1p/3p condition has held for ``switch_delay`` and whose
   last switch is ``switch_dwell`` ago switch, and the allocation is done again.
5. Setpoints are rounded down to ``resolution``; each gets its reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from agent.energy.fill import Candidate, Share, fill_tier
from agent.energy.model import (
    SITE,
    Allocation,
    ConnectorInput,
    Explanation,
    LimitLine,
    Limits,
    PhaseExplanation,
    Policy,
    fmt_amps,
    phase_name,
    scope_name,
)
from agent.energy.network import Network
from agent.energy.turns import eta, idle, minutes, rank, remember
from drivers.contract import Setpoint


@dataclass(slots=True)
class ConnectorMemory:
    """What the allocator carries for one connector from one call to the next."""

    #: switchable chargers: the 1p/3p mode chosen
    phases: int | None = None
    want_phases: int | None = None
    want_since: float | None = None
    last_switch: float | None = None
    #: since when the EV has drawn well below its offer
    under_since: float | None = None
    #: the offer that timer runs against (a raise restarts it)
    offered: float | None = None
    #: amps the EV keeps after releasing the rest, and what it drew then
    release_cap: float | None = None
    release_draw: float | None = None
    #: taking turns (agent.energy.turns): since when it runs its turn, or waits for one
    run_since: float | None = None
    wait_since: float | None = None


@dataclass
class AllocatorState:
    connectors: dict[int, ConnectorMemory] = field(default_factory=dict)

    def copy(self) -> AllocatorState:
        return AllocatorState({cid: replace(m) for cid, m in self.connectors.items()})


@dataclass(frozen=True)
class AllocationResult:
    allocations: Mapping[int, Allocation]
    explanation: Explanation
    #: hand this to the next ``allocate`` call
    state: AllocatorState
    #: the constraints the allocations were made against (for the transition planner)
    network: Network

    def setpoints(self) -> dict[int, Setpoint]:
        return {cid: a.setpoint() for cid, a in self.allocations.items()}


def round_down(amps: float, step: float) -> float:
    """Down to a multiple of ``step``; a hair below a step (float error) counts as on it."""
    return round(math.floor(amps / step + 1e-6) * step, 6)


def round_up(amps: float, step: float) -> float:
    return round(math.ceil(amps / step - 1e-6) * step, 6)


def limit_label(scope: str, name: str) -> str:
    """``site headroom``, ``site fuse``, ``circuit row-a fuse``."""
    s = scope_name(scope)
    return name if name.startswith(s) else f"{s} {name}"


def allocate(
    inputs: Sequence[ConnectorInput],
    limits: Limits,
    policy: Policy = Policy(),
    now: float = 0.0,
    state: AllocatorState | None = None,
) -> AllocationResult:
    """Setpoints for every connector of ``inputs`` under ``limits`` (see module doc).

    ``now`` is monotonic seconds (only differences matter). Raises ``ValueError`` for
    duplicate connector ids or a connector behind an unknown circuit."""
    seen: set[int] = set()
    for c in inputs:
        if c.connector_id in seen:
            raise ValueError(f"connector {c.connector_id} appears twice in the allocator's input")
        seen.add(c.connector_id)
    net = Network(limits)
    for c in inputs:
        net.chain(c.circuit)  # unknown circuit: a clear error before anything else
    st = state.copy() if state is not None else AllocatorState()
    st.connectors = {cid: m for cid, m in st.connectors.items() if cid in seen}
    for c in inputs:
        mem = st.connectors.setdefault(c.connector_id, ConnectorMemory())
        if mem.phases is None or not _switchable(c):
            mem.phases = c.phases
        _track_release(c, mem, policy, now)
    allocs, shares, residual = _allocate_once(inputs, limits, net, policy, st, now)
    if not limits.hold and _switch_phases(inputs, allocs, residual, net, policy, st, now):
        allocs, shares, residual = _allocate_once(inputs, limits, net, policy, st, now)
    squeezed = {cid for cid, (s, _) in shares.items() if not allocs[cid].enabled and s.why in ("paused", "share")}
    remember(inputs, allocs, squeezed, st.connectors, policy, now, limits.hold)
    if policy.rotation_interval > 0 and squeezed and not limits.hold:
        allocs = _turn_reasons(inputs, allocs, shares, squeezed, st, policy, now)
    explanation = _explain(inputs, limits, net, allocs, shares, policy)
    return AllocationResult(allocs, explanation, st, net)


def _switchable(c: ConnectorInput) -> bool:
    return c.can_switch_phases and len(c.wiring) == 3


def _active(c: ConnectorInput) -> bool:
    return not c.stale and c.plugged and c.allowed


def _track_release(c: ConnectorInput, mem: ConnectorMemory, policy: Policy, now: float) -> None:
    """EVs drawing less than offered: after ``settle_time`` keep draw + margin for them."""
    sp = c.setpoint
    if not _active(c) or c.measured is None or sp is None or not sp.enabled:
        mem.under_since = mem.offered = mem.release_cap = mem.release_draw = None
        return
    fp = c.footprint(min(sp.phases, len(c.wiring)))
    draw = max(c.measured[p] for p in fp)
    if mem.release_cap is not None and draw > mem.release_cap - policy.release_margin / 2:
        mem.release_cap = mem.release_draw = mem.under_since = None  # it wants more again
    if mem.offered is not None and sp.amps > mem.offered + 1e-9:
        mem.under_since = None  # a raise: give the EV time to follow it
    mem.offered = sp.amps
    if draw < sp.amps - policy.release_margin:
        if mem.under_since is None:
            mem.under_since = now
        if now - mem.under_since >= policy.settle_time:
            mem.release_cap = max(round_up(draw + policy.release_margin, policy.resolution),
                                  round_up(c.min_current, policy.resolution))
            mem.release_draw = draw
            mem.under_since = None
    else:
        mem.under_since = None


def _caps(c: ConnectorInput, limits: Limits, mem: ConnectorMemory) -> list[tuple[float, str]]:
    caps = [(c.max_current, f"its max {fmt_amps(c.max_current)} A")]
    for cap in limits.connector_caps.get(c.connector_id, ()):
        caps.append((cap.amps, f"{cap.name} limit {fmt_amps(cap.amps)} A"))
    if limits.hold:
        sp = c.setpoint
        held = sp.amps if sp is not None and sp.enabled else 0.0
        caps.append((held, f"held at {fmt_amps(held)} A while the grid reading is late"))
    if mem.release_cap is not None:
        caps.append((mem.release_cap, f"EV draws {mem.release_draw:.1f} A, rest released"))
    return caps


def _allocate_once(
    inputs: Sequence[ConnectorInput], limits: Limits, net: Network, policy: Policy, st: AllocatorState, now: float,
) -> tuple[dict[int, Allocation], dict[int, tuple[Share, Candidate]], list[float]]:
    allocs: dict[int, Allocation] = {}
    residual = [con.budget for con in net.constraints]
    tiers: dict[int, list[tuple[ConnectorInput, Candidate]]] = {}
    for c in inputs:
        mem = st.connectors[c.connector_id]
        phases = mem.phases or c.phases
        if c.stale or c.ignores_setpoint:
            amps = c.counted_amps
            why = (f"ignores its setpoint: counted at {fmt_amps(amps)} A" if not c.stale
                   else f"stale: counted at its failsafe {fmt_amps(amps)} A" if c.failsafe_current is not None
                   else f"stale: counted at its max {fmt_amps(amps)} A (no failsafe register)")
            phases = c.setpoint.phases if c.setpoint is not None and c.setpoint.phases <= len(c.wiring) else len(c.wiring)
            a = Allocation(c.connector_id, amps, phases, amps > 0, why, footprint=c.wiring)
            allocs[c.connector_id] = a
            for k in net.keys(c.circuit, c.wiring):
                residual[k] -= amps
            continue
        if not _active(c):
            why = ("unplugged" if c.state == "A" else f"fault (state {c.state})" if c.state in "EF"
                   else "not allowed to charge")
            allocs[c.connector_id] = Allocation(c.connector_id, 0.0, phases, False, why, footprint=c.footprint(phases))
            continue
        cap, cap_reason = min(_caps(c, limits, mem), key=lambda t: t[0])
        cand = Candidate(c.connector_id, net.keys(c.circuit, c.footprint(phases)), cap, cap_reason,
                         round_up(c.min_current, policy.resolution), rank(c, mem, policy, now))
        tiers.setdefault(c.priority, []).append((c, cand))
    shares: dict[int, tuple[Share, Candidate]] = {}
    for prio in sorted(tiers, reverse=True):
        tier = tiers[prio]
        got = fill_tier([cand for _, cand in tier], residual)
        for c, cand in tier:
            share = got[c.connector_id]
            shares[c.connector_id] = (share, cand)
            phases = st.connectors[c.connector_id].phases or c.phases
            fp = c.footprint(phases)
            amps = round_down(share.amps, policy.resolution) if share.why in ("cap", "share") else 0.0
            on = amps > 0 and amps >= cand.minimum - 1e-9
            if not on:
                amps = 0.0
            for k in cand.keys:
                residual[k] -= amps
            reason = _reason(share, cand, net, c.min_current) + f", priority {prio}"
            if phases == 1 and len(c.wiring) == 3:
                reason += f", 1p on {phase_name(c.wiring[0])}"
            allocs[c.connector_id] = Allocation(c.connector_id, amps, phases, on, reason, footprint=fp)
    return allocs, shares, residual


def _turn_reasons(
    inputs: Sequence[ConnectorInput], allocs: dict[int, Allocation], shares: Mapping[int, tuple[Share, Candidate]],
    squeezed: set[int], st: AllocatorState, policy: Policy, now: float,
) -> dict[int, Allocation]:
    """Say who is taking turns: a waiting connector when it should run, a running one on
    the same limit when its turn ends (``turns.eta``; an estimate, limits move)."""
    r = policy.rotation_interval
    prio = {c.connector_id: c.priority for c in inputs}
    out = dict(allocs)
    waiting_on: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for cid in squeezed:
        share, _ = shares[cid]
        mem = st.connectors[cid]
        if share.key is not None and mem.wait_since is not None:
            waiting_on.setdefault((prio[cid], share.key), []).append((cid, mem.wait_since))
    for (tier, key), waiting in waiting_on.items():
        runners = [cid for cid, a in allocs.items() if a.enabled and prio.get(cid) == tier and cid in shares
                   and key in shares[cid][1].keys]
        ends = {cid: now if idle(m := st.connectors[cid]) else (m.run_since if m.run_since is not None else now) + r
                for cid in runners}
        for cid, at in eta(waiting, list(ends.values()), r).items():
            a = out[cid]
            head, sep, tail = a.reason.rpartition(", priority ")
            out[cid] = replace(a, reason=f"{head}: taking turns, runs in {minutes(max(0.0, at - now))}{sep}{tail}")
        for cid, end in ends.items():
            a = out[cid]
            if "turn ends" in a.reason:
                continue
            head, sep, tail = a.reason.rpartition(", priority ")
            out[cid] = replace(a, reason=f"{head}, taking turns: turn ends in {minutes(max(0.0, end - now))}{sep}{tail}")
    return out


def _label(net: Network, key: int | None) -> str:
    if key is None:
        return "its own limits"
    con = net.constraints[key]
    return f"{limit_label(con.scope, con.limit.name)} {phase_name(con.phase)}"


def _reason(share: Share, cand: Candidate, net: Network, minimum: float) -> str:
    if share.why == "cap":
        return cand.cap_reason
    if share.why == "share":
        return f"share of {_label(net, share.key)}"
    if share.why == "paused-cap":
        return f"paused: {cand.cap_reason} is below its minimum {fmt_amps(minimum)} A"
    return (f"paused: share of {_label(net, share.key)} would be {share.amps:.1f} A, "
            f"below its minimum {fmt_amps(minimum)} A")


def _spare(net: Network, residual: list[float], circuit: str, phase: int) -> float:
    return min((residual[k] for k in net.keys(circuit, (phase,))), default=math.inf)


def _switch_phases(
    inputs: Sequence[ConnectorInput], allocs: Mapping[int, Allocation], residual: list[float], net: Network,
    policy: Policy, st: AllocatorState, now: float,
) -> bool:
    """1p/3p with hysteresis (a margin up, "paused" down), delay and dwell. True when
    some charger switched (the caller allocates again)."""
    switched = False
    for c in inputs:
        mem = st.connectors[c.connector_id]
        if not _switchable(c) or not _active(c):
            mem.want_phases = mem.want_since = None
            continue
        a = allocs[c.connector_id]
        minimum = round_up(c.min_current, policy.resolution)
        if mem.phases == 3:
            spare = min(_spare(net, residual, c.circuit, c.wiring[0]), c.max_current)
            want = 1 if not a.enabled and spare >= minimum - 1e-9 else 3
        else:
            own = a.amps if a.enabled else 0.0
            pot = min(_spare(net, residual, c.circuit, p) + (own if p == c.wiring[0] else 0.0) for p in c.wiring)
            want = 3 if min(pot, c.max_current) >= minimum + policy.switch_margin - 1e-9 else 1
        if want == mem.phases:
            mem.want_phases = mem.want_since = None
            continue
        if mem.want_phases != want or mem.want_since is None:
            mem.want_phases, mem.want_since = want, now
        dwell_ok = mem.last_switch is None or now - mem.last_switch >= policy.switch_dwell
        if now - mem.want_since >= policy.switch_delay and dwell_ok:
            mem.phases, mem.last_switch = want, now
            mem.want_phases = mem.want_since = None
            mem.under_since = mem.release_cap = mem.release_draw = None
            switched = True
    return switched


def _explain(
    inputs: Sequence[ConnectorInput], limits: Limits, net: Network, allocs: Mapping[int, Allocation],
    shares: Mapping[int, tuple[Share, Candidate]], policy: Policy,
) -> Explanation:
    """A limit binds where it decided someone's share or pause, or where it is used up
    (to within the rounding of the shares on it)."""
    decided = {s.key for s, _ in shares.values() if s.why in ("share", "paused") and s.key is not None}
    in_scope: dict[str, list[int]] = {}
    for c in inputs:
        for s in net.chain(c.circuit):
            in_scope.setdefault(s, []).append(c.connector_id)
    phases: list[PhaseExplanation] = []
    for scope in [SITE] + sorted(s for s in limits.scopes if s != SITE):
        sl = limits.scopes[scope]
        members = in_scope.get(scope, [])
        for p in range(3):
            k = net.index.get((scope, p))
            used = sum(allocs[cid].load()[p] for cid in members)
            on = sum(1 for cid in members if allocs[cid].enabled and p in allocs[cid].footprint)
            binding = None
            if k is not None:
                con = net.constraints[k]
                if k in decided or (on and con.budget - used <= on * policy.resolution + 1e-6):
                    binding = con.limit.name
            smallest = net.constraints[k].limit if k is not None else None
            lines = tuple(
                LimitLine(lim.name, lim.amps[p], binds=binding is not None and lim is smallest, detail=lim.detail)
                for lim in sl.limits if not math.isinf(lim.amps[p]))
            if not lines:
                continue
            phases.append(PhaseExplanation(scope, p, lines, used, binding))
    return Explanation(tuple(phases), dict(allocs), {c.connector_id: c.priority for c in inputs}, limits.notes)
