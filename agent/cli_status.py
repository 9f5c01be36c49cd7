"""``evsite status``: what the running agent sees, as a table an installer can read.

It asks the agent over the control socket (``GET /status``) rather than reading devices
itself: the agent owns the buses (one owner per RS-485 line), and what matters when
commissioning is what the agent believes, with the age of each reading.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.control.client import AgentUnreachable, ControlAPIError, call

DEFAULT_CONFIG = "/etc/evsite/site.toml"
DEFAULT_SOCKET = "/var/lib/evsite/control.sock"


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="show what the running agent sees",
                       description="Ask the running agent for every device and connector.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", metavar="FILE", help=f"site config naming the control socket (default {DEFAULT_CONFIG} if present)")
    where.add_argument("--socket", metavar="PATH", help=f"control socket (default {DEFAULT_SOCKET})")
    p.add_argument("--json", action="store_true", help="print the agent's JSON answer")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the agent (default 5)")
    p.set_defaults(func=run)


def socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return args.socket
    config = args.config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    if config is None:
        return DEFAULT_SOCKET
    from agent.config import load_config

    return load_config(config).control_socket


def run(args: argparse.Namespace) -> int:
    from agent.config import ConfigError

    try:
        path = socket_path(args)
    except ConfigError as exc:
        print(f"evsite status: {exc}", file=sys.stderr)
        return 2
    try:
        status = call(path, "GET", "/status", timeout=args.timeout)
    except (AgentUnreachable, ControlAPIError) as exc:
        print(f"evsite status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(render(status))
    return 0


# ---------------------------------------------------------------- rendering

def _num(v: Any, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _triple(v: Any) -> str:
    if not v:
        return "-"
    return "/".join(_num(x) for x in v)


def _age(v: Any) -> str:
    if v is None:
        return "never"
    if v < 120:
        return f"{v:.1f} s"
    if v < 7200:
        return f"{v / 60:.0f} min"
    return f"{v / 3600:.1f} h"


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [headers, *rows]]


def render(status: dict[str, Any]) -> str:
    """The status answer as text: header, devices, connectors, grid, extra sections."""
    site = status.get("site") or {}
    agent = status.get("agent") or {}
    head = f"site {site.get('name', '?')}: tick {status.get('tick', '?')} at {status.get('taken_at', '?')}"
    if agent:
        head += f" (evsite {agent.get('version', '?')}, up {_age(agent.get('uptime_s'))})"
    out = [head, ""]

    dev_rows = []
    for d in status.get("devices", []):
        if d.get("error"):
            state = ("STALE: " if d.get("stale") else "failing: ") + str(d["error"])
            if d.get("failing_since"):
                state += f" (since {d['failing_since']})"
        else:
            state = "STALE" if d.get("stale") else "ok"
        dev_rows.append((
            str(d.get("id")), str(d.get("role") or "-"), str(d.get("profile") or "-"),
            f"{d.get('bus') or '-'}/{d.get('unit_id') if d.get('unit_id') is not None else '-'}",
            _age(d.get("age_s")), state,
        ))
    out += _table(("DEVICE", "ROLE", "PROFILE", "BUS/UNIT", "AGE", "STATUS"), dev_rows) if dev_rows else ["no devices"]

    con_rows = []
    for c in status.get("connectors", []):
        sp = c.get("setpoint")
        sp_text = "-" if not sp else (f"{sp['amps']:.1f} A {sp['phases']}p" + ("" if sp.get("enabled", True) else " off"))
        energy = c.get("energy_wh")
        con_rows.append((
            str(c.get("connector_id")), str(c.get("device")), str(c.get("status") or c.get("state") or "-")
            + (" (stale)" if c.get("stale") else ""),
            _triple(c.get("current")), _num(None if energy is None else energy / 1000, "{:.3f}"), sp_text,
        ))
    if con_rows:
        out += [""] + _table(("CONNECTOR", "DEVICE", "STATE", "CURRENT A", "ENERGY kWh", "SETPOINT"), con_rows)

    grid = site.get("grid")
    if grid:
        line = f"grid {grid.get('device')}: current {_triple(grid.get('current'))} A"
        if grid.get("power_w") is not None:
            line += f", power {grid['power_w'] / 1000:.2f} kW"
        line += f", age {_age(grid.get('age_s'))}" + (" STALE" if grid.get("stale") else "")
        out += ["", line]

    out += _sessions(status.get("sessions"))
    out += _energy(status.get("energy"))
    out += _uplink(status.get("uplink"))
    known = ("site", "agent", "devices", "connectors", "taken_at", "tick", "sessions", "energy", "uplink")
    for name in sorted(k for k in status if k not in known):
        value = status[name]
        if isinstance(value, dict):
            out += ["", f"{name}: " + ", ".join(f"{k}={v}" for k, v in value.items())]
        else:
            out += ["", f"{name}: {value}"]
    return "\n".join(out)


def _sessions(sec: Any) -> list[str]:
    if not isinstance(sec, dict) or not sec.get("connectors"):
        return []
    rows = []
    for c in sec["connectors"]:
        tx = "-"
        if c.get("tx_id"):
            tx = f"{c['tx_id'][:8]} {c.get('id_tag') or ''}".strip()
            if c.get("meter_start_wh") is not None and c.get("energy_wh") is not None:
                tx += f" {(c['energy_wh'] - c['meter_start_wh']) / 1000:.2f} kWh"
        rows.append((str(c["connector_id"]), str(c.get("status") or "-") + ("" if c.get("operative", True) else " (inoperative)"),
                     tx, str(c["reservation"]) if c.get("reservation") is not None else "-"))
    lines = ["", f"sessions (CSMS link {'up' if sec.get('link_online') else 'down'}"
             + (f", {sec['unwritten_events']} events waiting for the store" if sec.get("unwritten_events") else "") + ")"]
    return lines + _table(("CONNECTOR", "STATUS", "TRANSACTION", "RESERVED"), rows)


def _energy(sec: Any) -> list[str]:
    """Every limit in force per phase, which binds, and each connector's reason."""
    if not isinstance(sec, dict):
        return []
    lines = ["", "load management" + (f" (DIMMED by {sec['dim'].get('source')})" if (sec.get("dim") or {}).get("active") else "")]
    lines += ["  " + line for line in sec.get("lines") or ["no decision yet"]]
    for cid, why in (sec.get("held") or {}).items():
        lines.append(f"  CP{cid} held: {why}")
    return lines


def _uplink(sec: Any) -> list[str]:
    if not isinstance(sec, dict):
        return []
    state = sec.get("state", "?")
    line = f"uplink {sec.get('station_id', '?')} -> {sec.get('url', '?')}: {state}"
    if sec.get("version"):
        line += f" (OCPP {sec['version']}, boot {sec.get('boot') or '?'})"
    if sec.get("last_error") and state != "connected":
        line += f"; last error: {sec['last_error']}"
    out = ["", line]
    if sec.get("delivered") is not None:
        out.append(f"  delivered {sec['delivered']}, refused {sec.get('refused', 0)}, dropped {sec.get('dropped', 0)}, "
                   f"timeouts {sec.get('timeouts', 0)}")
    return out
