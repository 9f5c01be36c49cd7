"""``evsite authorize CONNECTOR TAG``: present a tag at a connector of the running agent.

For installers commissioning a site without cards at hand, and for end-to-end tests:
the tag goes through exactly what a card at the charger goes through (local list,
cache, the CSMS, the offline policy), so the answer printed is the one a driver would
get. Presenting the tag of a running session stops it, as at the charger.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.control.client import AgentUnreachable, ControlAPIError, call
from agent.control.server import ControlError, json_body


def register(sub: Any) -> None:
    from agent.cli_status import DEFAULT_CONFIG, DEFAULT_SOCKET

    p = sub.add_parser("authorize", help="present an idTag at a connector of the running agent",
                       description="Present TAG at CONNECTOR as if a card was held to the charger.")
    p.add_argument("connector", type=int, help="connector id (1..)")
    p.add_argument("tag", help="idTag (1..20 characters for OCPP 1.6, 36 for 2.0.1)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", metavar="FILE", help=f"site config naming the control socket (default {DEFAULT_CONFIG} if present)")
    where.add_argument("--socket", metavar="PATH", help=f"control socket (default {DEFAULT_SOCKET})")
    p.add_argument("--timeout", type=float, default=40.0, help="seconds to wait for the decision (default 40)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent.cli_status import socket_path
    from agent.config import ConfigError

    try:
        path = socket_path(args)
    except ConfigError as exc:
        print(f"evsite authorize: {exc}", file=sys.stderr)
        return 2
    try:
        answer = call(path, "POST", "/authorize", json={"connector": args.connector, "tag": args.tag}, timeout=args.timeout)
    except (AgentUnreachable, ControlAPIError) as exc:
        print(f"evsite authorize: {exc}", file=sys.stderr)
        return 1
    print(f"connector {args.connector}: {answer['status']} ({answer['source']})"
          + (f", {answer['effect']}" if answer.get("effect") else ""))
    return 0 if answer["status"] == "Accepted" else 3


def authorize_route(sessions: Any) -> Any:
    """The agent's side: ``POST /authorize {"connector": N, "tag": "..."}``."""

    async def handler(request: Any) -> dict[str, Any]:
        body = await json_body(request)
        connector, tag = body.get("connector"), body.get("tag")
        if not isinstance(connector, int) or isinstance(connector, bool):
            raise ControlError(400, "connector must be an integer")
        if not isinstance(tag, str) or not 1 <= len(tag) <= 36:
            raise ControlError(400, "tag must be a string of 1..36 characters")
        if connector not in sessions.connectors:
            raise ControlError(404, f"no connector {connector} (connectors: {sorted(sessions.connectors)})")
        had_tx = sessions.connectors[connector].tx
        result = await sessions.present_tag(connector, tag, source="control")
        c = sessions.connectors[connector]
        if had_tx is not None and c.tx is None:
            effect = "transaction stopped"
        elif c.tx is not None and had_tx is None:
            effect = "transaction started"
        elif c.pending is not None:
            effect = "waiting for the cable"
        else:
            effect = ""
        return {"status": result.status.value, "source": result.source.value, "effect": effect}

    return handler
