"""``evsite run --config FILE``: the production entry point (what systemd starts).

Exit codes follow what systemd's ``Restart=on-failure`` needs: 0 after a clean stop
(no restart), 1 after a crash (restart), 2 for a config that cannot work (printed like
``evsite check-config``; restarting would not help, and the unit's
``RestartPreventExitStatus=2`` says so).

Test only: ``EVSITE_CLOCK_SPEED=N`` runs the whole runtime on a clock N times faster
than real time (agent/clock.py ``clock_from_env``), so an end-to-end test can run a
simulated day against the rig at the same ``--speed``; anything but a positive number is
refused with exit 2, and the agent logs a warning at start while it is set.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

DEFAULT_CONFIG = "/etc/evsite/site.toml"
EXIT_CONFIG = 2


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the site agent (systemd's entry point)",
                       description="Load the site config, then poll devices, record sessions and serve the "
                                   "control socket until SIGTERM.")
    p.add_argument("--config", metavar="FILE", default=DEFAULT_CONFIG, help=f"site config (default {DEFAULT_CONFIG})")
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="stdout log level (default: site.log_level from the config)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent.clock import ClockSpeedError, clock_from_env
    from agent.config.issues import ConfigErrors, ConfigUnreadable
    from agent.config.load import load_config
    from agent.logsetup import setup_logging
    from agent.supervisor import run_agent

    try:
        clock, speed = clock_from_env()
    except ClockSpeedError as exc:
        print(f"evsite run: {exc}; not starting", file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = load_config(args.config)
    except ConfigUnreadable as exc:
        print(f"evsite run: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigErrors as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        for warning in exc.warnings:
            print(warning, file=sys.stderr)
        count = len(exc.issues)
        print(f"evsite run: {args.config}: {count} error{'s' if count != 1 else ''}; not starting", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(args.log_level or config.site.log_level, state_dir=config.site.state_dir)
    if speed is not None:
        logging.getLogger("evsite.supervisor").warning(
            "EVSITE_CLOCK_SPEED=%g: the agent's clock runs %g times faster than real time (polls, "
            "staleness, sessions, uplink timers; I/O timeouts stay real). Test only: never set on a gateway",
            speed, speed)
    return asyncio.run(run_agent(config, clock))
