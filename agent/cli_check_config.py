"""`evsite check-config FILE...`: what an installer runs before starting the agent.

Prints every problem of every file, one per line in file order (``file:line: key:
message``, the form editors can jump to), or a one-line summary of a good file. Exit
status: 0 all good (warnings allowed), 1 some file has errors, 2 some file could not be
read at all (or bad arguments).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from agent.config.issues import ConfigUnreadable
from agent.config.load import ConfigReport, inspect_config

EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="check site config files and list every problem",
        description="Check site config files: types, ranges, unknown or missing keys, and the rules "
                    "between keys (buses, unit ids, profiles, fuse tree, uplink). Exit 0 if all are "
                    "valid, 1 if any has errors, 2 if a file cannot be read.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="site config (TOML)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return check_files(args.files, sys.stdout, sys.stderr)


def check_files(files: list[str], out: TextIO, err: TextIO) -> int:
    status = EXIT_OK
    for name in files:
        try:
            report = inspect_config(name)
        except ConfigUnreadable as exc:
            print(f"evsite check-config: {exc}", file=err)
            status = EXIT_UNREADABLE
            continue
        for issue in report.issues:
            print(issue, file=out)
        if report.ok:
            print(summary(report), file=out)
        else:
            print(f"{name}: {_count(len(report.errors), 'error')}"
                  + (f", {_count(len(report.warnings), 'warning')}" if report.warnings else ""), file=out)
            status = max(status, EXIT_INVALID)
    return status


def summary(report: ConfigReport) -> str:
    """``demo.toml: ok: "evsite demo", 4 devices, 3 chargers, buses lan (tcp), rs485 (rtu)``."""
    cfg = report.config
    assert cfg is not None
    buses = ", ".join(f"{b.id} ({b.type})" for b in cfg.buses) or "none"
    text = (f'{report.file}: ok: "{cfg.site.name}", {_count(len(cfg.devices), "device")}, '
            f'{_count(len(cfg.chargers()), "charger")}, buses {buses}')
    if report.warnings:
        text += f"; {_count(len(report.warnings), 'warning')}"
    return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
