"""``python -m hil.csms``: the test CSMS as a process, for end-to-end tests and the demo.

Prints one line ``listening on <url>`` on stdout once it accepts connections (a parent
process waits for that line instead of sleeping), then serves until SIGTERM or SIGINT.
With ``--log FILE`` every frame is appended to FILE as JSON lines. With ``--control
SOCKET`` another process drives it (CSMS calls, waits on the log, tags, faults) through
the JSON-lines channel of hil/control.py; the ``listening on`` line comes after that
socket is up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from hil.csms.rules import TagRule
from hil.csms.server import ServerTls, TestCsms


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hil.csms", description="evsite test CSMS (OCPP 1.6J and 2.0.1)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=9000, help="TCP port; 0 picks a free one (default: 9000)")
    p.add_argument("--ocpp", choices=("1.6", "2.0.1", "both"), default="both", help="versions served (default: both)")
    p.add_argument("--prefer", choices=("1.6", "2.0.1"), help="version chosen when a station offers both")
    p.add_argument("--log", metavar="FILE", help="append every frame to FILE as JSON lines")
    p.add_argument("--tags", default="all", metavar="RULE", help="'all', 'only:TAG,TAG' or 'reject-prefix:P,...' (default: all)")
    p.add_argument("--boot-status", choices=("Accepted", "Pending", "Rejected"), default="Accepted")
    p.add_argument("--heartbeat", type=int, default=300, metavar="SECONDS", help="heartbeat interval sent at boot")
    p.add_argument("--password-file", metavar="FILE", help="require HTTP Basic auth with this password (file mode 0600)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve wss:// with this certificate (needs --tls-key)")
    p.add_argument("--tls-key", metavar="PEM")
    p.add_argument("--client-ca", metavar="PEM", help="require client certificates signed by this CA")
    p.add_argument("--control", metavar="SOCKET", help="serve the hil/control.py command channel on this Unix socket")
    p.add_argument("-v", "--verbose", action="store_true", help="log every frame on stderr")
    args = p.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        p.error("--client-ca needs --tls-cert and --tls-key")
    try:
        args.tag_rule = TagRule.parse(args.tags)
    except ValueError as exc:
        p.error(str(exc))
    return args


async def serve(args: argparse.Namespace) -> None:
    password = None
    if args.password_file:
        from agent.uplink.security import read_password_file

        password = read_password_file(args.password_file)
    tls = ServerTls(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    csms = TestCsms(
        host=args.host, port=args.port, ocpp=args.ocpp, prefer=args.prefer, tags=args.tag_rule,
        boot_status=args.boot_status, heartbeat_interval=args.heartbeat, log_path=args.log,
        passwords=password, tls=tls,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with csms, contextlib.AsyncExitStack() as stack:
        if args.control:
            from hil.control import ControlChannel, csms_commands

            await stack.enter_async_context(ControlChannel(args.control, csms_commands(csms)))
        print(f"listening on {csms.url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("ocpp").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"hil.csms: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"hil.csms: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
