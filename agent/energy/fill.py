"""Sharing within one priority: max-min fair water-filling with pausing.

Every running connector of the tier gets the same amps, raised together until either a
connector reaches its own cap (its max, a CSMS limit, what its EV really draws) or a
constraint (scope, phase) is exhausted; those are frozen and the rest keep rising. The
result is the fairest split the constraints allow: equal shares unless a cap or a
constraint a connector sits behind explains the difference.

A connector whose share ends below its minimum is paused rather than run below it, and
the tier is filled again so the others get what it freed. Among connectors held down by
the same constraint only as many are paused as needed (those that were not running
before go first, so shares do not hop between cars every poll), one constraint per round,
most squeezed first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class Candidate:
    """One connector of a tier, reduced to what filling needs."""

    cid: int
    #: constraint indices it loads
    keys: tuple[int, ...]
    cap: float
    #: name of the cap, e.g. "its max 16 A"
    cap_reason: str
    minimum: float
    #: smaller sorts first = kept running first when pausing
    rank: tuple[object, ...]


@dataclass(slots=True)
class Share:
    amps: float
    #: ("cap", None) or ("share", constraint index) or ("paused", constraint index | None)
    why: str
    key: int | None = None


def waterfill(cands: list[Candidate], residual: list[float]) -> dict[int, Share]:
    """Equal level for all, frozen at their cap or when a constraint runs out.

    ``residual[k]`` is what constraint k still allows for this tier. Not modified."""
    n_active = [0] * len(residual)
    members: list[list[int]] = [[] for _ in residual]
    for i, c in enumerate(cands):
        for k in c.keys:
            n_active[k] += 1
            members[k].append(i)
    used = [0.0] * len(residual)
    active = [True] * len(cands)
    left = len(cands)
    by_cap = sorted(range(len(cands)), key=lambda i: cands[i].cap)
    ptr = 0
    out: dict[int, Share] = {}

    def freeze(i: int, x: float, why: str, key: int | None) -> None:
        nonlocal left
        active[i] = False
        left -= 1
        for k in cands[i].keys:
            n_active[k] -= 1
            used[k] += x
        out[cands[i].cid] = Share(x, why, key)

    while left:
        while ptr < len(by_cap) and not active[by_cap[ptr]]:
            ptr += 1
        x_cap = cands[by_cap[ptr]].cap if ptr < len(by_cap) else math.inf
        x_con, k_best = math.inf, -1
        for k, n in enumerate(n_active):
            if n:
                x = (residual[k] - used[k]) / n
                if x < x_con:
                    x_con, k_best = x, k
        if x_cap <= x_con:  # a tie goes to the cap: "its max" explains more than a share
            freeze(by_cap[ptr], max(0.0, x_cap), "cap", None)
        else:
            x = max(0.0, x_con)
            for i in members[k_best]:
                if active[i]:
                    freeze(i, x, "share", k_best)
    return out


def fill_tier(cands: list[Candidate], residual: list[float]) -> dict[int, Share]:
    """Water-fill, pausing whoever ends below their minimum, until everyone left runs at
    or above their minimum.

    A paused connector's ``Share`` has ``why`` "paused" (squeezed by constraint ``key``)
    or "paused-cap" (its own cap is below its minimum); its ``amps`` is the share it
    would have had, for the explanation: the caller runs it at 0 A, disabled."""
    running = [c for c in cands if c.cap >= c.minimum - 1e-9]
    paused: dict[int, Share] = {c.cid: Share(c.cap, "paused-cap", None) for c in cands if c.cap < c.minimum - 1e-9}
    while True:
        shares = waterfill(running, residual)
        below = [c for c in running if shares[c.cid].amps < c.minimum - 1e-9]
        if not below:
            break
        # Only the most squeezed group is paused from per round: it cannot fit everyone at
        # their minimum whatever happens elsewhere, while other groups may recover once
        # its paused connectors free their other phases.
        worst = min(below, key=lambda c: (shares[c.cid].amps, shares[c.cid].key if shares[c.cid].key is not None else -1))
        key = shares[worst.cid].key
        group = sorted((c for c in below if shares[c.cid].key == key), key=lambda c: c.rank)
        pool = sum(shares[c.cid].amps for c in group)
        keep, need = 0, 0.0
        for c in group:
            if need + c.minimum > pool + 1e-9:
                break
            need += c.minimum
            keep += 1
        keep = min(keep, len(group) - 1)  # at least one is paused
        drop = {c.cid for c in group[keep:]}
        for c in group[keep:]:
            paused[c.cid] = Share(shares[c.cid].amps, "paused", key)
        running = [c for c in running if c.cid not in drop]
    shares.update(paused)
    return shares
