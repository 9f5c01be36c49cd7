"""The `evsite` console script.

Each subcommand lives in its own module ``agent/cli_<name>.py`` exposing
``register(subparsers)``, which adds its parser and sets ``func`` (a callable taking the
parsed args and returning an exit code). Commands are listed here, in help order.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from agent import __version__

COMMANDS = [
    "run",           # production entry point (systemd)
    "check_config",  # validate a site config
    "status",        # ask the running agent
    "authorize",     # present an idTag at a connector of the running agent
    "demo",          # emulated site + local CSMS
    "hil",           # run an emulated site from a scenario
    "profiles",      # list device profiles
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evsite", description="EV charging site controller")
    parser.add_argument("--version", action="version", version=f"evsite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"agent.cli_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"agent.cli_{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
