"""The busy site and its day, shared by the simulated-day tests (issue 4, "Done when" 2):
tests/e2e/test_energy_day.py runs it in-process on a SimClock, and
tests/e2e/test_energy_day_processes.py runs it through real processes (rig, CSMS and
agent at the same ``--speed``). One site, one way to make visits, one reading of the
limits and of the fairness bound, so both tests ask the same questions.

Site: 50 A main fuse with a grid meter; eight ABB Terra AC wallboxes, c1 at priority 2,
c2 and c3 with a 16 A maximum, c7 and c8 single-phase on L1 and L3; c5..c8 behind a
20 A breaker (circuit "row"). The base load follows a working day (night 4 A, a morning
and an evening peak) in steps with a different value per phase.

Visits: each EV takes the first free charger when it arrives (waiting for one if none
is), stays a random time and leaves, full or not; random battery, state of charge,
on-board charger current and phases.

Fairness, on the allocator's decision (``Explanation.as_dict()`` in-process, the
``energy`` section of ``evsite status`` from a process; the same shape): a connector
held by a shared limit ("share of site headroom L1") has at least as much as every
other enabled connector of its priority on that limit, within 1 A. A connector with less
is explained by its max, its EV's draw, its own phase or circuit (its reason then is not
a share); a paused one (below its minimum, or taking turns) is not compared, nor one the
allocator did not choose (stale or ignoring its setpoint: counted at what it may draw).
Nothing is enabled below its 6 A minimum.
"""

from __future__ import annotations

import math
import random
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hil.model import PHASES
from hil.scenario import Event, Scenario

DAY = 24 * 3600.0
HOUR = 3600.0
#: seconds of site time between two control cycles
POLL = 30.0
FUSE = 50.0
ROW_FUSE = 20.0
ROW = ("c5", "c6", "c7", "c8")
MIN_CURRENT = 6.0
#: amps by which two shares of the same limit and priority may differ
FAIRNESS = 1.0
#: amps of float rounding a comparison allows
TOL = 0.01
EVS = 20
SEED = 20260101

CHARGERS = {   # id: (max_current, phases, wiring, priority, circuit); connector_id is the position
    "c1": (32, 3, ("L1", "L2", "L3"), 2, ""),
    "c2": (16, 3, ("L1", "L2", "L3"), 1, ""),
    "c3": (16, 3, ("L1", "L2", "L3"), 1, ""),
    "c4": (32, 3, ("L1", "L2", "L3"), 1, ""),
    "c5": (32, 3, ("L1", "L2", "L3"), 1, "row"),
    "c6": (32, 3, ("L1", "L2", "L3"), 1, "row"),
    "c7": (32, 1, ("L1",), 1, "row"),
    "c8": (32, 1, ("L3",), 1, "row"),
}
#: connector id -> charger id
CONNECTORS = {n: cid for n, cid in enumerate(CHARGERS, 1)}


def site_text(*, free_charging: bool = False, uplink: str = "enabled = false", bus_timeout: float | None = None) -> str:
    """The site config. ``free_charging``: every charger starts a session by itself when
    an EV plugs in (the agent lets energy flow only inside a transaction); ``uplink``: the
    body of the [uplink] table; ``bus_timeout``: the Modbus bus's timeout (real seconds)."""
    devices = []
    for n, (cid, (amps, phases, wiring, prio, circuit)) in enumerate(CHARGERS.items(), 1):
        tag = f'free_charging_tag = "FREE-{n}"\n' if free_charging else ""
        devices.append(textwrap.dedent(f"""
            [[devices]]
            id = "{cid}"
            role = "charger"
            profile = "abb-terra-ac"
            bus = "lan"
            unit_id = {n}
            connector_id = {n}
            max_current = {amps}
            phases = {phases}
            wiring = {list(wiring)!r}
            priority = {prio}
            circuit = "{circuit}"
            failsafe_timeout = {4 * POLL}
            """).replace("'", '"') + tag)
    timeout = "" if bus_timeout is None else f"timeout = {bus_timeout}\n"
    return textwrap.dedent(f"""
        [site]
        name = "a day on a busy site"
        poll_interval = {POLL}
        state_dir = "state"

        [uplink]
        {uplink}

        [limits]
        fuse_amps = {FUSE}
        grid_stale_after = {3 * POLL}

        [[limits.circuits]]
        id = "row"
        fuse_amps = {ROW_FUSE}

        [[buses]]
        id = "lan"
        type = "tcp"
        host = "127.0.0.1"
        port = 1502
        """) + timeout + textwrap.dedent("""
        [[devices]]
        id = "grid"
        role = "grid_meter"
        profile = "eastron-sdm630"
        bus = "lan"
        unit_id = 100
        """) + "".join(devices)


def base_load(hour: float, rnd: random.Random) -> list[float]:
    """A working day: 4 A at night, a morning and an evening peak; phases differ."""
    shape = math.exp(-((hour - 10) / 2.5) ** 2) + 0.8 * math.exp(-((hour - 18.5) / 2.0) ** 2)
    return [round(4 + 16 * shape * w + rnd.uniform(-1.5, 1.5), 1) for w in (1.0, 0.7, 1.2)]


@dataclass(frozen=True)
class Stretch:
    """Which part of the day to play, in hours of the day, and how the visits look.
    Event times are seconds from ``start``."""

    start: float = 0.0
    end: float = 24.0
    #: hours of the day between base-load steps
    step: float = 1.0
    #: arrivals are uniform in this window (hours of the day)
    arrive: tuple[float, float] = (5.5, 19.0)
    #: a stay is uniform in this range (hours)
    stay: tuple[float, float] = (1.0, 8.0)
    #: every EV has left this many seconds before the end
    margin: float = 600.0
    evs: int = EVS

    @property
    def duration(self) -> float:
        return (self.end - self.start) * HOUR


#: the whole day (the in-process test, and the long variant through processes)
WHOLE_DAY = Stretch()
#: the morning peak, 08:00 to 10:00: 20 short visits arriving in the first hour, the
#: base load rising to its peak in 20-minute steps (the quick variant through processes)
MORNING_PEAK = Stretch(start=8.0, end=10.0, step=1 / 3, arrive=(8.0, 9.0), stay=(0.25, 1.0), margin=300.0)


def make_visits(rnd: random.Random, stretch: Stretch = WHOLE_DAY) -> tuple[Scenario, list[str]]:
    """Base-load steps and ``stretch.evs`` visits, seconds from the stretch's start; the
    EVs' names in order. With the same seed the same stretch is the same scenario (the
    draws come in a fixed order)."""
    events: list[Event] = []
    steps = round((stretch.end - stretch.start) / stretch.step)
    for k in range(steps):
        hour = stretch.start + k * stretch.step
        events.append(Event(0, k * stretch.step * HOUR + 1.0, "base_load",
                            params={"amps": dict(zip(PHASES, base_load(hour, rnd)))}))
    span = stretch.duration
    free_at = dict.fromkeys(CHARGERS, 0.0)
    names = [f"ev{n + 1:02d}" for n in range(stretch.evs)]
    arrivals = sorted(rnd.uniform((stretch.arrive[0] - stretch.start) * HOUR, (stretch.arrive[1] - stretch.start) * HOUR)
                      for _ in range(stretch.evs))
    for name, arrive in zip(names, arrivals):
        cid = min(free_at, key=lambda c: (max(free_at[c], arrive), c))
        at = max(free_at[cid] + 120.0, arrive)
        stay = rnd.uniform(stretch.stay[0] * HOUR, stretch.stay[1] * HOUR)
        leave = min(at + stay, span - stretch.margin)
        free_at[cid] = leave
        ev = {"name": name, "capacity_kwh": rnd.choice([30, 40, 60, 77, 100]), "soc": round(rnd.uniform(0.1, 0.7), 2),
              "max_current": rnd.choice([10, 13, 16, 16, 20, 32]), "phases": rnd.choice([3, 3, 3, 1]),
              "ramp_delay": 2.0, "taper_soc": 0.8}
        events.append(Event(0, at, "plug", device=cid, params={"ev": ev}))
        events.append(Event(0, leave, "unplug", device=cid))
    events = [Event(i + 1, e.at, e.action, e.device, e.note, e.params) for i, e in enumerate(events)]
    base = dict(zip(PHASES, base_load(stretch.start, rnd)))
    return Scenario("busy day", tuple(events), base_load=base, duration=span), names


# ---------------------------------------------------------------- the checks

def _on_constraint(connector: Mapping[str, Any], scope: str, phase: str) -> bool:
    """Does this connector's allocation load the limit of ``scope`` on ``phase``? A
    connector loads the site on the phases its allocation uses (the first ``phases`` of
    its wiring), and its circuit too."""
    _, _, wiring, _, circuit = CHARGERS[CONNECTORS[connector["connector_id"]]]
    return phase in wiring[:connector["phases"]] and (scope == "site" or scope == f"circuit {circuit}")


def _share_label(reason: str) -> tuple[str, str] | None:
    """("site", "L1") for "share of site headroom L1, priority 1"; None for other reasons."""
    if not reason.startswith("share of "):
        return None
    words = reason[len("share of "):].split(",")[0].split()
    scope = "site" if words[0] == "site" else " ".join(words[:2])
    return scope, words[-1]


def fairness_problems(decision: Mapping[str, Any]) -> list[str]:
    """The allocator's decision (``connectors`` with amps, phases, enabled, reason and
    priority) against the fairness bound (see module doc)."""
    connectors = decision["connectors"]
    problems = []
    for a in connectors:
        if a["enabled"] and a["amps"] < MIN_CURRENT - TOL:
            problems.append(f"CP{a['connector_id']} enabled at {a['amps']} A, below its minimum")
        label = _share_label(a["reason"]) if a["enabled"] else None
        if label is None:
            continue
        for b in connectors:
            if (b is not a and b["enabled"] and b["priority"] == a["priority"] and _on_constraint(b, *label)
                    and not b["reason"].startswith(("stale", "ignores its setpoint"))
                    and b["amps"] > a["amps"] + FAIRNESS + TOL):
                problems.append(f"CP{a['connector_id']} {a['amps']} A ({a['reason']}) but "
                                f"CP{b['connector_id']} {b['amps']} A ({b['reason']})")
    return problems


def paused(decision: Mapping[str, Any]) -> int:
    """Connectors paused for lack of current: their share would be below their minimum
    ("paused: share of ... would be 4.3 A, below its minimum 6 A", with ": taking turns,
    runs in 7 min" when they wait for a turn)."""
    return sum(1 for a in decision["connectors"] if a["reason"].startswith("paused: share"))


def binding(decision: Mapping[str, Any], scope: str | None = None) -> bool:
    """Some limit (of ``scope``: "site", "circuit row") decided this allocation."""
    return any(p["binding"] for p in decision["phases"] if scope is None or p["scope"] == scope)


def limit_problems(sample: Mapping[str, Any]) -> list[str]:
    """A ground-truth sample (hil/trace.py) over the fuse or the row's breaker, on any phase."""
    out = []
    for p, amps in enumerate(sample["meters"]["grid"]):
        if amps > FUSE + TOL:
            out.append(f"grid {PHASES[p]} {amps:.2f} A > fuse {FUSE:g} A")
    for p in range(3):
        row = sum(sample["chargers"][c]["current"][p] for c in ROW)
        if row > ROW_FUSE + TOL:
            out.append(f"row {PHASES[p]} {row:.2f} A > breaker {ROW_FUSE:g} A")
    return [f"t={sample['t']:.0f} s ({sample['why']}): {x}" for x in out]


def charged(start_soc: Mapping[str, float], last_soc: Mapping[str, float]) -> dict[str, float]:
    """State of charge each EV gained, by name."""
    return {name: round(last_soc[name] - soc, 3) for name, soc in start_soc.items() if name in last_soc}


def plugs(events: Iterable[Event]) -> dict[str, float]:
    """Each EV's state of charge when it plugs in, by name."""
    return {e.params["ev"]["name"]: e.params["ev"]["soc"] for e in events if e.action == "plug"}


class TurnWatch:
    """How long each connector waited, paused for lack of current ("paused: share ..."),
    while another enabled connector of its priority ran: with turns (Policy.
    rotation_interval) no wait should be much longer than one turn."""

    def __init__(self) -> None:
        self.since: dict[int, float] = {}
        self.longest: tuple[float, int | None, float] = (0.0, None, 0.0)   # wait, connector, at

    def update(self, decision: Mapping[str, Any], t: float) -> None:
        connectors = decision["connectors"]
        waiting = set()
        for a in connectors:
            if a["enabled"] or not a["reason"].startswith("paused: share"):
                continue
            if any(b["enabled"] and b["priority"] == a["priority"] for b in connectors):
                waiting.add(a["connector_id"])
        for cid in list(self.since):
            if cid not in waiting:
                del self.since[cid]
        for cid in waiting:
            start = self.since.setdefault(cid, t)
            if t - start > self.longest[0]:
                self.longest = (t - start, cid, t)
