"""``evsite profiles``: which device models this build can drive.

An installer writing a site config needs the exact profile names, what kind of device
each is and which buses it may sit on; this lists the shipped profile files, loading each
one through the same validator the agent uses, so a broken file shows up here too.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from drivers.profile import ProfileError, load_profile, profile_names


def register(sub: Any) -> None:
    p = sub.add_parser("profiles", help="list known device profiles",
                       description="List the device profiles (drivers/profiles/*.toml) with kind and transports.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--kind", choices=("meter", "charger"), help="only profiles of this kind")
    p.set_defaults(func=run)


def collect(kind: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, errors): one row per loadable profile, one message per broken one."""
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for name in profile_names():
        try:
            prof = load_profile(name)
        except ProfileError as exc:
            errors.append(str(exc))
            continue
        if kind and prof.kind != kind:
            continue
        rows.append({"name": prof.name, "kind": prof.kind, "transports": list(prof.transports), "title": prof.title})
    return rows, errors


def run(args: argparse.Namespace) -> int:
    rows, errors = collect(args.kind)
    if args.json:
        print(json.dumps({"profiles": rows, "errors": errors}, indent=2))
    else:
        headers = ("PROFILE", "KIND", "TRANSPORTS", "TITLE")
        table = [(r["name"], r["kind"], ",".join(r["transports"]), r["title"]) for r in rows]
        widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(headers)]
        for line in [headers, *table]:
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
        for e in errors:
            print(f"evsite: broken profile: {e}", file=sys.stderr)
    return 1 if errors else 0
