"""The load-management controller: the poller's setpoint policy, with memory.

The allocator and the transition planner are pure; this is the small stateful shell
around them that the supervisor wires in. Each poll it turns the ``SiteState`` and the
config into allocator inputs and a limits stack, allocates, plans a safe step from the
setpoints in force, keeps both memories for the next poll, and returns the setpoints.
It also takes the outside commands that change limits (CSMS charging profiles, the
grid operator's dim contact, transactions for TxProfiles) and logs each with its time,
source and effect. The binding limit is logged when it changes, not every poll.

It also notices a charger that ignores its setpoint: one measured more than
``OVERDRAW_MARGIN`` above it for longer than ``Policy.lower_timeout`` (the time an EV
gets to follow a lower) is no longer steered but counted at the most it can draw, so
the other chargers make room; logged once, and once when it follows its setpoint again.

No IO here apart from reading device profile files once at construction (to know which
chargers have a failsafe register and can switch phases).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.clock import Clock
from agent.config.model import PHASE_NAMES, SiteConfig
from agent.energy.allocator import AllocationResult, AllocatorState, allocate
from agent.energy.explain import binding_summary, render
from agent.energy.limits import FuseTree, GridReading, dim_amps, stack_limits
from agent.energy.model import ConnectorInput, Explanation, Limits, Policy
from agent.energy.profiles import (
    ChargingProfile,
    CompositeSchedule,
    ProfileError,
    composite_schedule,
    connector_limit,
    parse_profile,
    station_limit,
)
from agent.energy.transitions import TransitionPlan, TransitionState, plan_transition
from agent.site.state import SiteState
from agent.timefmt import utc_text
from drivers.contract import ChargerReading, Measurement, Setpoint

log = logging.getLogger("evsite.energy")

ProfilesSource = Callable[[], Iterable[Mapping[str, Any]]]

#: amps a charger may draw above its setpoint (meter noise) before it counts as ignoring it
OVERDRAW_MARGIN = 2.0


@dataclass(frozen=True)
class ChargerSpec:
    """What the config (and the device profile) say about one connector."""

    connector_id: int
    device_id: str
    wiring: tuple[int, ...]
    phases: int
    min_current: float
    max_current: float
    priority: int
    circuit: str
    can_switch_phases: bool
    #: None: the profile has no failsafe register, a stale charger counts at its max
    failsafe_current: float | None


def policy_of(config: SiteConfig) -> Policy:
    """The allocator's tuning from ``[limits.policy]`` (every key optional; the loader
    has checked types and ranges, ``Policy`` checks them again for hand-built configs)."""
    section = config.limits.policy
    return Policy(**{f.name: getattr(section, f.name) for f in dataclasses.fields(Policy)})


def _profile_writes(profile_name: str) -> set[str]:
    try:
        from drivers.profile import load_profile

        return set(load_profile(profile_name).writes)
    except Exception:  # unknown profile: assume no abilities (config checks report it)
        return set()


def charger_specs(config: SiteConfig) -> dict[int, ChargerSpec]:
    specs = {}
    for d in config.chargers():
        writes = _profile_writes(d.profile)
        specs[d.connector_id] = ChargerSpec(
            connector_id=d.connector_id, device_id=d.id,
            wiring=tuple(PHASE_NAMES.index(p) for p in d.wiring[:d.phases]),
            phases=d.phases, min_current=d.min_current, max_current=d.max_current, priority=d.priority,
            circuit=d.circuit, can_switch_phases=d.can_switch_phases and "phases" in writes and d.phases == 3,
            failsafe_current=d.failsafe_current if "failsafe_current" in writes else None,
        )
    return specs


class EnergyController:
    """``policy(state)`` is the poller's ``SetpointPolicy``; see module doc."""

    def __init__(self, config: SiteConfig, clock: Clock, profiles_source: ProfilesSource | None = None, *,
                 tuning: Policy | None = None) -> None:
        self.config = config
        self.clock = clock
        self.tuning = tuning or policy_of(config)
        self.voltage = config.limits.nominal_voltage
        self.fuses = FuseTree.from_config(config.limits)
        self.specs = charger_specs(config)
        self._source = profiles_source
        self._raw_profiles: list[dict[str, Any]] = []
        self._profiles: list[ChargingProfile] = []
        self._bad_source_profiles: set[Any] = set()
        self._tx: dict[int, tuple[datetime, int | None]] = {}
        self.dim_active = False
        self.dim_source = ""
        self._alloc_state = AllocatorState()
        self._trans_state = TransitionState()
        self.last_limits: Limits | None = None
        self.last_result: AllocationResult | None = None
        self.last_plan: TransitionPlan | None = None
        self._binding: Any = None
        #: the sessions' verdict per connector (an authorized transaction runs); None = all may
        self.may_draw: Callable[[int], bool] | None = None
        #: connectors drawing well above their setpoint: since when, and those past lower_timeout
        self._over_since: dict[int, float] = {}
        self.ignoring: set[int] = set()

    # ---------------------------------------------------------------- commands in
    def set_profiles(self, profiles: Iterable[Mapping[str, Any]]) -> None:
        """Replace the charging profiles in force (the store's list after a Set/Clear).
        All or nothing: one bad profile raises ``ProfileError`` and nothing changes."""
        raw = [dict(p) for p in profiles]
        problems: list[str] = []
        parsed = []
        for i, p in enumerate(raw):
            try:
                parsed.append(parse_profile(p))
            except ProfileError as exc:
                problems.append(f"[{i}] {exc}")
        if problems:
            raise ProfileError(problems)
        self._raw_profiles, self._profiles = raw, parsed
        log.info("charging profiles: %d in force (%s)", len(parsed),
                 ", ".join(f"{p.purpose} {p.id} on {p.connector_id} stack {p.stack_level}" for p in parsed) or "none")

    def profiles(self) -> list[ChargingProfile]:
        if self._source is None:
            return list(self._profiles)
        raw = [dict(p) for p in self._source()]
        if raw != self._raw_profiles:
            parsed = []
            for p in raw:
                try:
                    parsed.append(parse_profile(p))
                except ProfileError as exc:
                    key = p.get("chargingProfileId")
                    if key not in self._bad_source_profiles:
                        log.warning("ignoring %s", exc)
                        self._bad_source_profiles.add(key)
            self._raw_profiles, self._profiles = raw, parsed
        return list(self._profiles)

    def set_transaction(self, connector_id: int, started_at: datetime, tx_id: int | None = None) -> None:
        """A transaction runs on the connector: TxProfiles apply, Relative ones start here."""
        self._tx[connector_id] = (started_at, tx_id)

    def end_transaction(self, connector_id: int) -> None:
        self._tx.pop(connector_id, None)

    def set_dim(self, active: bool, source: str) -> None:
        """The grid operator's dim signal (GPIO contact, or a remote command). Every call
        is logged with time, source and effect."""
        at = utc_text(self.clock.now())
        n = len(self.specs)
        if active:
            power = n * self.config.gpio.dim_power_w
            effect = (f"EVs held to {n} x {self.config.gpio.dim_power_w:g} W = {power:g} W "
                      f"({dim_amps(self.config.gpio.dim_power_w, n, self.voltage):.1f} A per phase)")
        else:
            effect = "dim limit lifted"
        if active == self.dim_active:
            effect = "no change, " + ("already dimmed" if active else "not dimmed")
        log.info("dim signal %s at %s from %s: %s", "ACTIVE" if active else "released", at, source, effect)
        self.dim_active, self.dim_source = bool(active), source

    # ---------------------------------------------------------------- the poll
    def policy(self, state: SiteState) -> dict[int, Setpoint]:
        """The poller's setpoint policy: setpoints for every charger of the config."""
        inputs = [self._input(spec, state) for spec in self.specs.values()]
        limits = self._limits(state, inputs)
        result = allocate(inputs, limits, self.tuning, state.monotonic, self._alloc_state)
        plan = plan_transition(result.allocations, inputs, result.network, self.tuning, state.monotonic,
                               self._trans_state)
        self._alloc_state, self._trans_state = result.state, plan.state
        self.last_limits, self.last_result, self.last_plan = limits, result, plan
        key = result.explanation.binding_key()
        if key != self._binding:
            self._binding = key
            log.info("binding limits now: %s", binding_summary(result.explanation))
            for line in render(result.explanation):
                log.info("  %s", line)
        return plan.setpoints

    def _input(self, spec: ChargerSpec, state: SiteState) -> ConnectorInput:
        health = state.health.get(spec.device_id)
        reading = health.last_good if health is not None and isinstance(health.last_good, ChargerReading) else None
        stale = health is None or health.stale or reading is None
        measured = None
        if reading is not None:
            cur = reading.current
            if all(cur[i] is not None for i in range(len(spec.wiring))):
                m = [0.0, 0.0, 0.0]
                for i, p in enumerate(spec.wiring):
                    m[p] = max(0.0, float(cur[i]))  # type: ignore[arg-type]
                measured = (m[0], m[1], m[2])
        sp = state.setpoints.get(spec.connector_id)
        phases = spec.phases
        if spec.can_switch_phases:
            seen = reading.phases if reading is not None else None
            phases = seen if seen in (1, 3) else sp.phases if sp is not None else spec.phases
        return ConnectorInput(
            connector_id=spec.connector_id, state=reading.state.value if reading is not None else "A",
            wiring=spec.wiring, phases=phases, measured=measured, min_current=spec.min_current,
            max_current=spec.max_current, priority=spec.priority, can_switch_phases=spec.can_switch_phases,
            setpoint=sp, stale=stale, failsafe_current=spec.failsafe_current, circuit=spec.circuit,
            allowed=self.may_draw is None or self.may_draw(spec.connector_id),
            ignores_setpoint=self._ignores_setpoint(spec, measured, sp, stale, state.monotonic),
        )

    def _ignores_setpoint(self, spec: ChargerSpec, measured: tuple[float, float, float] | None,
                          sp: Setpoint | None, stale: bool, now: float) -> bool:
        cid = spec.connector_id
        if stale or measured is None or sp is None:
            self._over_since.pop(cid, None)
            return False                     # a stale charger is counted as such meanwhile
        allowed = sp.amps if sp.enabled else 0.0
        draw = max(measured[p] for p in spec.wiring)
        if draw <= allowed + OVERDRAW_MARGIN:
            self._over_since.pop(cid, None)
            if cid in self.ignoring:
                self.ignoring.discard(cid)
                log.info("connector %d (%s) follows its setpoint again: draws %.1f A, setpoint %.1f A",
                         cid, spec.device_id, draw, allowed)
            return False
        since = self._over_since.setdefault(cid, now)
        if cid not in self.ignoring and now - since >= self.tuning.lower_timeout:
            self.ignoring.add(cid)
            log.warning("connector %d (%s) draws %.1f A with its setpoint at %.1f A for %.0f s: it ignores its "
                        "setpoint; counted at up to %.1f A until it follows it again", cid, spec.device_id, draw,
                        allowed, now - since, max(spec.max_current, draw))
        return cid in self.ignoring

    def _grid(self, state: SiteState) -> GridReading | None:
        g = self.config.grid_meter()
        if g is None:
            return None
        health = state.health.get(g.id)
        m = health.last_good if health is not None and isinstance(health.last_good, Measurement) else None
        age = state.age(g.id) if health is not None else None
        late = health is None or health.stale or health.consecutive_failures > 0
        return GridReading(None if m is None else m.current, None if m is None else age, late)

    def _limits(self, state: SiteState, inputs: list[ConnectorInput]) -> Limits:
        now = state.taken_at
        profiles = self.profiles()
        station = station_limit(profiles, now, nominal_voltage=self.voltage) if profiles else None
        caps: dict[int, float] = {}
        sources = []
        for cid in self.specs:
            if not profiles:
                break
            tx = self._tx.get(cid)
            eff = connector_limit(profiles, cid, now, tx_start=tx[0] if tx else None, tx_id=tx[1] if tx else None,
                                  nominal_voltage=self.voltage)
            if eff is not None:
                caps[cid] = eff.amps
                sources.append(f"CP{cid} {eff.source}")
        dim = None
        if self.dim_active:
            dim = dim_amps(self.config.gpio.dim_power_w, len(self.specs), self.voltage)
        return stack_limits(
            fuses=self.fuses, connectors=inputs, grid=self._grid(state),
            grid_stale_after=self.config.limits.grid_stale_after, failsafe_amps=self.config.limits.failsafe_amps,
            dim=dim, dim_detail=f"{len(self.specs)} x {self.config.gpio.dim_power_w:g} W from {self.dim_source}",
            station_amps=None if station is None else station.amps, connector_amps=caps,
            csms_detail=station.source if station is not None else "; ".join(sources) or "charging profile",
        )

    # ---------------------------------------------------------------- views
    def explanation(self) -> Explanation | None:
        """The last decision (None before the first poll)."""
        return None if self.last_result is None else self.last_result.explanation

    def status(self) -> dict[str, Any]:
        """JSON-ready section for the control API (``evsite status``)."""
        expl = self.explanation()
        out: dict[str, Any] = {
            "dim": {"active": self.dim_active, "source": self.dim_source or None},
            "profiles": len(self._profiles),
            "policy": dataclasses.asdict(self.tuning),
        }
        if expl is not None:
            out.update(expl.as_dict())
            out["lines"] = render(expl)
            out["held"] = {str(k): v for k, v in sorted((self.last_plan.held if self.last_plan else {}).items())}
        return out

    def composite_schedule(self, connector_id: int, duration: int, unit: str = "A", *,
                           start: datetime | None = None) -> CompositeSchedule:
        """GetCompositeSchedule from ``start`` (default now), with this controller's
        profiles and transactions."""
        if connector_id != 0 and connector_id not in self.specs:
            raise ValueError(f"no connector {connector_id} (connectors: {sorted(self.specs)})")
        tx = self._tx.get(connector_id)
        return composite_schedule(self.profiles(), connector_id, start or self.clock.now(), duration, unit,
                                  tx[0] if tx else None, tx_id=tx[1] if tx else None, nominal_voltage=self.voltage)
