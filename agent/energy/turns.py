"""Taking turns: when a limit cannot run every EV of one priority at its minimum, the
paused ones get a turn after ``Policy.rotation_interval`` instead of waiting until a
running one leaves.

Why: pausing alone keeps whoever runs running (``fill`` pauses the newcomers first, so
shares do not hop between cars every poll). On a squeezed site that left an EV with
nothing for its whole stay. Turns keep the no-hopping property (a turn lasts a whole
interval) and bound every EV's wait to about one interval while others of its priority
run.

The rule, per connector of a tier (priority):

- A connector *runs* while its setpoint in force is enabled; its turn started when it
  was first seen running (``run_since``). A turn lasts ``rotation_interval``. At its
  end the connector yields if someone is waiting for the same limit, else it simply
  starts another turn (so a newcomer waits at most one interval, never "until the
  others are full").
- A connector *waits* from the poll the allocator first pauses it for lack of room
  (``wait_since``) until its setpoint in force is enabled again.
- Who runs is decided by the pausing order ``fill`` uses (``rank``): running connectors
  within their turn first, as before; then, in order of their claim, those waiting
  (claim: when they started waiting) and those whose turn is over (claim: when it
  ended). So the one that has waited longest gets the next turn that ends, and a
  connector just paused does not bump the one that was kept in its place. Received
  energy is not used: waiting time is what a driver notices, needs no meter, and keeps
  the decision explainable ("runs in about 7 min").
- An EV that has released its current because it draws (almost) nothing, a full battery
  say (``idle``), holds no turn: it yields to the first waiting one at once and queues
  behind everyone waiting. Given a turn again, it releases again after ``settle_time``.

Everything lives in the allocator's ``ConnectorMemory``: pure, same input and state give
the same output. ``rotation_interval = 0`` turns this off (the old order exactly).
While the grid reading is late (``Limits.hold``) nothing is raised, so turns are frozen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from agent.energy.model import Allocation, ConnectorInput, Policy


#: an EV that released its current and draws less than this holds no turn (A)
IDLE_AMPS = 1.0


class TurnMemory(Protocol):
    run_since: float | None
    wait_since: float | None
    release_draw: float | None


def idle(mem: TurnMemory) -> bool:
    """Its EV was offered current and draws (almost) none of it (see module doc)."""
    return mem.release_draw is not None and mem.release_draw < IDLE_AMPS


def running(c: ConnectorInput) -> bool:
    """Its setpoint in force lets it draw."""
    return c.setpoint is not None and c.setpoint.enabled


def rank(c: ConnectorInput, mem: TurnMemory, policy: Policy, now: float) -> tuple[object, ...]:
    """Pausing order for ``fill``: smaller is kept running first (see module doc)."""
    on = running(c)
    base = (not on, not c.charging, c.connector_id)
    r = policy.rotation_interval
    if r <= 0:
        return (0, 0.0) + base
    if on and idle(mem):
        return (1, now) + base                      # holds no turn: behind everyone waiting
    if on and (mem.run_since is None or now - mem.run_since < r):
        return (0, 0.0) + base                      # within its turn
    if on:
        claim = mem.run_since + r                   # type: ignore[operator]  # its turn ended then
    else:
        claim = mem.wait_since if mem.wait_since is not None else now
    return (1, claim) + base


def remember(
    inputs: Sequence[ConnectorInput], allocs: Mapping[int, Allocation], squeezed: set[int],
    memory: Mapping[int, TurnMemory], policy: Policy, now: float, hold: bool,
) -> None:
    """Update each connector's turn after this poll's decision. ``squeezed``: the
    connectors paused because their share was below their minimum."""
    for c in inputs:
        mem = memory[c.connector_id]
        a = allocs[c.connector_id]
        if c.stale or c.ignores_setpoint or not c.plugged or not c.allowed:
            mem.run_since = mem.wait_since = None
            continue
        if hold:
            continue                                # nothing is raised: the queue stands still
        if running(c) and a.enabled:
            mem.wait_since = None
            r = policy.rotation_interval
            if mem.run_since is None or (r > 0 and now - mem.run_since >= r):
                mem.run_since = now                 # first seen running, or kept past its turn: a new one
        elif a.enabled or c.connector_id in squeezed:
            mem.run_since = None                    # waiting (an allocated raise may still be held)
            if mem.wait_since is None:
                mem.wait_since = now
        else:
            mem.run_since = mem.wait_since = None   # paused by its own cap: not in the queue


def eta(
    waiting: Sequence[tuple[int, float]], turn_ends: Sequence[float], interval: float,
) -> dict[int, float]:
    """When each waiting connector should get its turn: ``waiting`` is (cid, claim),
    ``turn_ends`` when each connector running on the same limit ends its turn. The i-th
    in the queue gets the i-th turn that ends (after one full round of turns, the next).
    An estimate for the explanation, not a promise: limits move."""
    ends = sorted(turn_ends)
    out: dict[int, float] = {}
    if not ends:
        return out
    for i, (cid, _) in enumerate(sorted(waiting, key=lambda w: (w[1], w[0]))):
        rounds, slot = divmod(i, len(ends))
        out[cid] = ends[slot] + rounds * interval
    return out


def minutes(seconds: float) -> str:
    """``7 min``, ``under a minute``: how long until a turn, for the reason text."""
    if seconds < 60:
        return "under a minute"
    return f"about {round(seconds / 60):d} min"
