"""The allocator's decision as text an installer can read (``evsite status``, the log).

Per phase (and per circuit phase) every limit in force with its amps, the one that
binds marked, and what all EVs there got; then every connector with its setpoint and
the reason::

    L2: site fuse 63 A, headroom 41.2 A (binds), csms 48 A; EVs 41.2 A
    circuit row-a L1: fuse 32 A; EVs 20 A
    CP2 10 A: share of site headroom L2, priority 1
    CP3 0 A: paused: share of site headroom L2 would be 4.3 A, below its minimum 6 A, priority 1
"""

from __future__ import annotations

from agent.energy.model import SITE, Explanation, PhaseExplanation, fmt_amps, phase_name, scope_name


def phase_line(p: PhaseExplanation) -> str:
    head = phase_name(p.phase) if p.scope == SITE else f"{scope_name(p.scope)} {phase_name(p.phase)}"
    parts = [f"{ln.name} {fmt_amps(round(ln.amps, 1))} A" + (" (binds)" if ln.binds else "") for ln in p.limits]
    return f"{head}: " + ", ".join(parts) + f"; EVs {fmt_amps(round(p.allocated, 1))} A"


def connector_lines(expl: Explanation) -> list[str]:
    out = []
    for cid in sorted(expl.allocations):
        a = expl.allocations[cid]
        amps = fmt_amps(a.amps) if a.enabled else "0"
        out.append(f"CP{cid} {amps} A: {a.reason}")
    return out


def render(expl: Explanation) -> list[str]:
    """Every line: phases, connectors, then notes (failsafe, hold, dim)."""
    return [phase_line(p) for p in expl.phases] + connector_lines(expl) + list(expl.notes)


def binding_summary(expl: Explanation) -> str:
    """One line naming what binds where, for the log when it changes:
    ``L1 headroom, L2 headroom, L3 none; circuit row-a L1 fuse``."""
    site = [f"{phase_name(p.phase)} {p.binding or 'none'}" for p in expl.phases if p.scope == SITE]
    circuits = [f"{scope_name(p.scope)} {phase_name(p.phase)} {p.binding}"
                for p in expl.phases if p.scope != SITE and p.binding]
    text = ", ".join(site)
    if circuits:
        text += "; " + ", ".join(circuits)
    if expl.notes:
        text += " [" + "; ".join(expl.notes) + "]"
    return text
