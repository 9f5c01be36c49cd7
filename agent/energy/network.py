"""The limits stack as a list of linear constraints: one per (scope, site phase).

The allocator fills connectors into these, and the transition planner checks every
intermediate step against the same ones, so "the bound" means the same thing in both.
A connector loads constraint (scope, p) when the scope is its circuit or encloses it and
p is one of the site phases it runs on; its load there is its amps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from agent.energy.model import SITE, Limit, Limits, Triple


@dataclass(frozen=True, slots=True)
class Constraint:
    scope: str
    phase: int
    #: the smallest limit in force: most total EV current allowed here
    budget: float
    limit: Limit


class Network:
    """Constraints with a finite budget, indexed for fast lookup."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.constraints: list[Constraint] = []
        self.index: dict[tuple[str, int], int] = {}
        order = [SITE] + sorted(s for s in limits.scopes if s != SITE)
        for scope in order:
            sl = limits.scopes[scope]
            for p in range(3):
                budget, lim = sl.budget(p)
                if lim is None or math.isinf(budget):
                    continue
                self.index[(scope, p)] = len(self.constraints)
                self.constraints.append(Constraint(scope, p, budget, lim))
        self._chains: dict[str, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self.constraints)

    def chain(self, circuit: str) -> tuple[str, ...]:
        c = self._chains.get(circuit)
        if c is None:
            c = self._chains[circuit] = self.limits.chain(circuit)
        return c

    def keys(self, circuit: str, footprint: Iterable[int]) -> tuple[int, ...]:
        """Indices of the constraints a connector on ``circuit`` loads on ``footprint``."""
        fp = tuple(footprint)
        return tuple(self.index[(s, p)] for s in self.chain(circuit) for p in fp if (s, p) in self.index)

    def loads(self, items: Iterable[tuple[str, Triple]]) -> list[float]:
        """Total load per constraint of (circuit, amps per site phase) items."""
        out = [0.0] * len(self.constraints)
        for circuit, load in items:
            for s in self.chain(circuit):
                for p in range(3):
                    k = self.index.get((s, p))
                    if k is not None and load[p]:
                        out[k] += load[p]
        return out

    def violations(self, loads: list[float], tolerance: float = 1e-6) -> list[str]:
        """Constraints the loads exceed, as text (empty = all kept)."""
        return [f"{c.scope or 'site'} L{c.phase + 1} {c.limit.name}: {load:.3f} A > {c.budget:.3f} A"
                for c, load in zip(self.constraints, loads) if load > c.budget + tolerance]
