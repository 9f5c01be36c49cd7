"""The limits stack: every limit in force, per scope and site phase; the smallest wins.

Each limit says how much current all EVs in its scope may draw together per phase:

- ``site fuse`` / circuit ``fuse``: the fuse tree from the config. Without a grid meter
  this is all we know, so EVs may use the whole fuse.
- ``headroom``: site fuse minus the measured other load, where other load = grid
  reading minus what the (answering) chargers measure. Other loads in the building are
  respected; PV export (negative other load) does not lift EVs above the fuse, which
  stays in the stack.
- ``failsafe``: the grid meter has no good reading for longer than
  ``limits.grid_stale_after`` (or never had one, or lacks a phase): all EVs together get
  ``limits.failsafe_amps`` per phase. While its reading is late but not that old, the
  last reading is used and nothing is raised (``Limits.hold``): a late meter counts as
  "could be anything", never as "nothing changed".
- ``dim``: the grid operator's dim contact (e.g. §14a EnWG) holds the EVs to
  ``gpio.dim_power_w`` per controllable device; the total power is split evenly over
  the three phases, so whatever the wiring the site stays at or under it.
- ``csms``: the station-wide charging-profile limit (ChargePointMaxProfile), in amps per
  phase; per-connector profile limits (TxProfile / TxDefaultProfile) are connector caps.

A charger that stopped answering is counted by the allocator at its failsafe current (or
its max) on every wired phase. Its real draw is also inside the grid reading, because
we cannot tell how much of the grid reading is its: counting both is what keeps the
bound true whatever that charger does, so it is done on purpose.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.energy.model import SITE, Cap, ConnectorInput, Limit, Limits, ScopeLimits, Triple, fmt_amps


def _triple(value: float | Sequence[float], what: str) -> Triple:
    if isinstance(value, (int, float)):
        t = (float(value),) * 3
    else:
        v = list(value)
        if len(v) != 3:
            raise ValueError(f"{what}: one number or [L1, L2, L3], got {value!r}")
        t = (float(v[0]), float(v[1]), float(v[2]))
    if any(not math.isfinite(x) or x < 0 for x in t):
        raise ValueError(f"{what}: amps must be finite and >= 0, got {value!r}")
    return t  # type: ignore[return-value]


@dataclass(frozen=True)
class FuseTree:
    """Site main fuse and circuits (id -> (fuse per phase, parent id; "" = site main))."""

    site: Triple
    circuits: Mapping[str, tuple[Triple, str]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, limits: Any) -> FuseTree:
        """From ``SiteConfig.limits`` (``fuse_amps``, ``circuits[].fuse_amps/parent``)."""
        circuits = {c.id: (_triple(c.fuse_amps, f"limits.circuits {c.id}: fuse_amps"), c.parent or SITE)
                    for c in limits.circuits}
        return cls(_triple(limits.fuse_amps, "limits.fuse_amps"), circuits)


@dataclass(frozen=True)
class GridReading:
    """The grid meter as the limits need it."""

    #: last good current per site phase (None on a phase it did not give)
    current: tuple[float | None, float | None, float | None] | None
    #: seconds since the last good reading; None = never read
    age: float | None
    #: the poller says it is not answering now (its reading is late)
    late: bool = False


def dim_amps(power_w: float, devices: int, nominal_voltage: float) -> float:
    """Amps per phase for ``devices`` x ``power_w`` spread over three phases."""
    if devices < 0 or power_w < 0 or nominal_voltage <= 0:
        raise ValueError(f"dim: need power >= 0 W, devices >= 0, voltage > 0 V; got {power_w}, {devices}, {nominal_voltage}")
    return devices * power_w / (3 * nominal_voltage)


def stack_limits(
    *,
    fuses: FuseTree,
    connectors: Sequence[ConnectorInput] = (),
    grid: GridReading | None = None,
    grid_stale_after: float = 10.0,
    failsafe_amps: float = 6.0,
    dim: float | None = None,
    dim_detail: str = "",
    station_amps: float | None = None,
    connector_amps: Mapping[int, float] | None = None,
    csms_detail: str = "charging profile",
) -> Limits:
    """Build the stack. ``grid`` None = the site has no grid meter; ``dim`` = amps per
    phase while the dim contact is active (``dim_amps``); ``station_amps`` and
    ``connector_amps`` = CSMS profile limits in amps per phase."""
    site: list[Limit] = [Limit("site fuse", fuses.site, "main fuse")]
    notes: list[str] = []
    hold = False
    if grid is not None:
        reading = grid.current
        usable = reading is not None and all(x is not None and math.isfinite(x) for x in reading)
        if grid.age is None or grid.age > grid_stale_after or not usable:
            if grid.age is None:
                why = "grid meter never read"
            elif not usable:
                why = "grid meter reading incomplete"
            else:
                why = f"grid meter stale {grid.age:.0f} s (> {grid_stale_after:g} s)"
            site.append(Limit("failsafe", (failsafe_amps,) * 3, why))  # type: ignore[arg-type]
            notes.append(f"failsafe: {why}, all EVs together {fmt_amps(failsafe_amps)} A per phase")
        else:
            ev = [0.0, 0.0, 0.0]
            for c in connectors:
                if not c.stale and c.measured is not None:
                    for p in range(3):
                        ev[p] += c.measured[p]
            head = []
            details = []
            for p in range(3):
                other = float(reading[p]) - ev[p]  # type: ignore[index, arg-type]
                head.append(fuses.site[p] - other)
                details.append(f"L{p + 1} other load {other:.1f} A")
            site.append(Limit("headroom", tuple(head), "site fuse minus other load: " + ", ".join(details)))  # type: ignore[arg-type]
            if grid.late:
                hold = True
                notes.append(f"hold: grid meter reading {grid.age:.0f} s old, nothing raised until it answers "
                             f"(failsafe after {grid_stale_after:g} s)")
    if dim is not None:
        site.append(Limit("dim", (dim,) * 3, dim_detail or "grid operator dim signal"))  # type: ignore[arg-type]
        notes.append(f"dim: grid operator signal active, EVs {fmt_amps(round(dim, 1))} A per phase")
    if station_amps is not None:
        site.append(Limit("csms", (station_amps,) * 3, csms_detail))  # type: ignore[arg-type]
    scopes: dict[str, ScopeLimits] = {SITE: ScopeLimits(SITE, None, tuple(site))}
    for cid, (fuse, parent) in fuses.circuits.items():
        scopes[cid] = ScopeLimits(cid, parent or SITE, (Limit("fuse", fuse, f"circuit {cid} breaker"),))
    caps = {cid: (Cap("csms", amps, csms_detail),) for cid, amps in (connector_amps or {}).items()}
    return Limits(scopes, caps, hold=hold, notes=tuple(notes))
