"""The load manager's inputs and outputs, as plain frozen data.

Everything the allocator decides from is in these types, and nothing else: no config
object, no clock, no device. That is what lets the allocator be a pure function that the
property tests can drive with random sites, and what lets ``evsite status`` show exactly
the numbers a decision was made from.

Conventions used throughout ``agent.energy``:

- Site phases are indices 0, 1, 2 (``PHASE_NAMES`` gives "L1", "L2", "L3").
- A charger's ``wiring`` lists the site phase of each of its own phases: ``(1,)`` is a
  1-phase charger on L2, ``(1, 2, 0)`` a 3-phase charger with rotated wiring. When it
  runs on one phase it uses ``wiring[0]``.
- Amps are per phase. A setpoint of 10 A on 3 phases loads each wired phase with 10 A.
- A limit is "the most total EV current per site phase this limit allows" in its scope
  (the site, or one circuit of the fuse tree); ``math.inf`` where it does not limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from drivers.contract import Setpoint

PHASE_NAMES = ("L1", "L2", "L3")
Triple = tuple[float, float, float]
#: the scope id of the site main (circuits use their config id)
SITE = ""
IEC_STATES = frozenset("ABCDEF")
INF3: Triple = (math.inf, math.inf, math.inf)


def phase_name(p: int) -> str:
    return PHASE_NAMES[p]


def scope_name(scope: str) -> str:
    """How explanations name a scope: ``site`` or ``circuit row-a``."""
    return "site" if scope == SITE else f"circuit {scope}"


def fmt_amps(a: float) -> str:
    """``63``, ``41.2``, ``inf``: amps as people read them."""
    if math.isinf(a):
        return "unlimited"
    return f"{a:.1f}".rstrip("0").rstrip(".") if abs(a - round(a)) > 1e-9 else f"{round(a):d}"


@dataclass(frozen=True, slots=True)
class ConnectorInput:
    """One connector as the allocator sees it at one poll."""

    connector_id: int
    #: IEC 61851 control-pilot state letter: A unplugged, B plugged, C/D charging, E/F fault
    state: str = "A"
    #: site phase index of each charger phase (see module docstring)
    wiring: tuple[int, ...] = (0, 1, 2)
    #: phases in use now (1 = wiring[0] only); a switchable charger's mode is kept by the
    #: allocator after the first call, this seeds it
    phases: int = 3
    #: amps drawn per SITE phase now; None when the charger reports no current
    measured: Triple | None = None
    min_current: float = 6.0
    max_current: float = 16.0
    #: higher is served first
    priority: int = 1
    can_switch_phases: bool = False
    #: the setpoint in force (last written to the charger); None = never written
    setpoint: Setpoint | None = None
    #: the charger stopped answering: it is not commanded, it is counted at failsafe/max
    stale: bool = False
    #: what the charger falls back to by itself when evsite goes silent; None = it has no
    #: failsafe register, so a stale charger is counted at its max
    failsafe_current: float | None = None
    #: circuit of the fuse tree it is behind; "" = directly behind the site main fuse
    circuit: str = SITE
    #: sessions allow it to charge (authorized, operative); False = 0 A, disabled
    allowed: bool = True
    #: it answers, but draws well above its setpoint for longer than an EV takes to follow
    #: one (broken firmware): like a stale charger it is not steered, it is counted at
    #: the most it can draw
    ignores_setpoint: bool = False

    def __post_init__(self) -> None:
        where = f"connector {self.connector_id}"
        if self.state not in IEC_STATES:
            raise ValueError(f"{where}: state must be an IEC 61851 letter A-F, got {self.state!r}")
        w = tuple(self.wiring)
        if len(w) not in (1, 3) or len(set(w)) != len(w) or any(p not in (0, 1, 2) for p in w):
            raise ValueError(f"{where}: wiring must be 1 or 3 distinct site phases 0..2 (L1..L3), got {self.wiring!r}")
        object.__setattr__(self, "wiring", w)
        if self.phases not in (1, 3) or self.phases > len(w):
            raise ValueError(f"{where}: phases must be 1 or 3 and at most the {len(w)} wired, got {self.phases!r}")
        if not (0 <= self.min_current <= self.max_current) or not math.isfinite(self.max_current):
            raise ValueError(f"{where}: need 0 <= min_current <= max_current (finite), "
                             f"got {self.min_current!r}..{self.max_current!r}")
        if self.measured is not None:
            m = tuple(float(x) for x in self.measured)
            if len(m) != 3 or any(not math.isfinite(x) or x < 0 for x in m):
                raise ValueError(f"{where}: measured must be 3 finite amps >= 0 per site phase, got {self.measured!r}")
            object.__setattr__(self, "measured", m)
        if self.failsafe_current is not None and not (0 <= self.failsafe_current):
            raise ValueError(f"{where}: failsafe_current must be >= 0 A, got {self.failsafe_current!r}")

    @property
    def plugged(self) -> bool:
        return self.state in ("B", "C", "D")

    @property
    def charging(self) -> bool:
        return self.state in ("C", "D")

    @property
    def counted_amps(self) -> float:
        """What a stale charger is assumed to draw: its failsafe current, else its max;
        one that ignores its setpoint: its max (or more, if it is measured above it)."""
        if self.ignores_setpoint and not self.stale:
            return max(self.max_current, *(self.measured or (0.0,)))
        return self.max_current if self.failsafe_current is None else self.failsafe_current

    def footprint(self, phases: int) -> tuple[int, ...]:
        """Site phases loaded when running on ``phases`` phases."""
        return self.wiring[:phases]


@dataclass(frozen=True, slots=True)
class Limit:
    """One named limit in a scope: the most total EV current per site phase it allows."""

    name: str
    amps: Triple
    #: how it was derived, for logs and status (e.g. "fuse 63 A - other load 21.8 A")
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Cap:
    """A limit on one connector alone (amps per phase): a CSMS TxProfile, a hold."""

    name: str
    amps: float
    detail: str = ""


@dataclass(frozen=True)
class ScopeLimits:
    """The limits of one scope: the site (``SITE``) or a circuit of the fuse tree."""

    scope: str
    #: enclosing scope; None for the site
    parent: str | None
    limits: tuple[Limit, ...]

    def budget(self, phase: int) -> tuple[float, Limit | None]:
        """The smallest limit on ``phase`` (it binds) and which one it is."""
        best: tuple[float, Limit | None] = (math.inf, None)
        for lim in self.limits:
            if lim.amps[phase] < best[0]:
                best = (lim.amps[phase], lim)
        return best


@dataclass(frozen=True)
class Limits:
    """The whole limits stack at one moment (built by ``agent.energy.limits``)."""

    scopes: Mapping[str, ScopeLimits]
    connector_caps: Mapping[int, tuple[Cap, ...]] = field(default_factory=dict)
    #: grid reading late (not yet failsafe): no connector is raised above its setpoint
    hold: bool = False
    #: remarks shown with the explanation ("grid meter stale 12 s: failsafe")
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if SITE not in self.scopes:
            raise ValueError("Limits.scopes needs the site scope (key '')")
        for sid, s in self.scopes.items():
            if s.scope != sid:
                raise ValueError(f"Limits.scopes[{sid!r}] holds scope {s.scope!r}")
            if sid != SITE and (s.parent is None or s.parent not in self.scopes):
                raise ValueError(f"circuit {sid!r}: parent {s.parent!r} is not a known scope")
        object.__setattr__(self, "scopes", MappingProxyType(dict(self.scopes)))
        object.__setattr__(self, "connector_caps", MappingProxyType(dict(self.connector_caps)))

    def chain(self, scope: str) -> tuple[str, ...]:
        """``scope`` and every scope enclosing it, up to the site."""
        if scope not in self.scopes:
            known = ", ".join(sorted(s for s in self.scopes if s)) or "none"
            raise ValueError(f"unknown circuit {scope!r} (circuits: {known})")
        out = [scope]
        while out[-1] != SITE:
            parent = self.scopes[out[-1]].parent
            if parent is None or parent in out or len(out) > len(self.scopes):
                raise ValueError(f"circuit {scope!r}: parents do not lead to the site (cycle?)")
            out.append(parent)
        return tuple(out)


@dataclass(frozen=True)
class Policy:
    """Tuning of the allocator and of safe transitions (seconds and amps)."""

    #: setpoints are rounded DOWN to this step
    resolution: float = 0.1
    #: an EV drawing less than offered for this long releases the difference
    settle_time: float = 60.0
    #: amps kept above what such an EV draws
    release_margin: float = 2.0
    #: 1p/3p: the condition must hold this long before switching
    switch_delay: float = 60.0
    #: 1p/3p: at least this long between two switches of one charger
    switch_dwell: float = 300.0
    #: 1p -> 3p only when 3 phases would get at least min + this
    switch_margin: float = 1.0
    #: raises smaller than this (and lowers that still fit) are not commanded
    hysteresis: float = 1.0
    #: at least this long between two raises of one charger
    min_interval: float = 10.0
    #: a lowered charger not measured at its new setpoint after this is counted at its
    #: old value, and raises go ahead within what is left
    lower_timeout: float = 15.0
    #: measured current within this of the setpoint counts as "following it"
    comply_tolerance: float = 0.5
    #: EVs of one priority paused for lack of room take turns with the running ones
    #: after this long (agent.energy.turns); 0 = no turns, the running ones keep running
    rotation_interval: float = 900.0

    def __post_init__(self) -> None:
        for name in ("resolution",):
            if not getattr(self, name) > 0:
                raise ValueError(f"Policy.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("settle_time", "release_margin", "switch_delay", "switch_dwell", "switch_margin",
                     "hysteresis", "min_interval", "lower_timeout", "comply_tolerance", "rotation_interval"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"Policy.{name} must be >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class Allocation:
    """What the allocator wants for one connector, and why."""

    connector_id: int
    amps: float
    phases: int
    enabled: bool
    #: e.g. "share of site headroom L2, priority 1"
    reason: str
    #: site phases this allocation loads (a stale charger: every wired phase)
    footprint: tuple[int, ...] = (0, 1, 2)

    def setpoint(self) -> Setpoint:
        return Setpoint(amps=self.amps if self.enabled else 0.0, phases=self.phases, enabled=self.enabled)

    def load(self) -> Triple:
        """Amps per site phase this allocation may draw."""
        a = self.amps if self.enabled else 0.0
        return tuple(a if p in self.footprint else 0.0 for p in range(3))  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class LimitLine:
    name: str
    amps: float
    binds: bool = False
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PhaseExplanation:
    """One phase of one scope: every limit in force, which binds, what EVs got."""

    scope: str
    phase: int
    limits: tuple[LimitLine, ...]
    #: total EV current allocated on this phase in this scope (stale chargers included)
    allocated: float
    #: the smallest limit's name when it is exhausted (it decided some share), else None
    binding: str | None


@dataclass(frozen=True)
class Explanation:
    phases: tuple[PhaseExplanation, ...]
    allocations: Mapping[int, Allocation]
    priorities: Mapping[int, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def binding_key(self) -> tuple[tuple[str, str, str | None], ...]:
        """What changes when "the binding limit changes": per scope and phase, the name of
        the limit that binds (amounts left out, so a moving headroom is not a change)."""
        return tuple((p.scope, phase_name(p.phase), p.binding) for p in self.phases) + tuple(
            ("note", n.split(":")[0], None) for n in self.notes)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the control API (``evsite status --json``)."""
        return {
            "phases": [
                {"scope": scope_name(p.scope), "phase": phase_name(p.phase), "allocated": round(p.allocated, 2),
                 "binding": p.binding,
                 "limits": [{"name": ln.name, "amps": None if math.isinf(ln.amps) else round(ln.amps, 2),
                             "binds": ln.binds, "detail": ln.detail} for ln in p.limits]}
                for p in self.phases
            ],
            "connectors": [
                {"connector_id": a.connector_id, "amps": a.amps, "phases": a.phases, "enabled": a.enabled,
                 "reason": a.reason, "priority": self.priorities.get(a.connector_id)}
                for a in sorted(self.allocations.values(), key=lambda a: a.connector_id)
            ],
            "notes": list(self.notes),
        }
