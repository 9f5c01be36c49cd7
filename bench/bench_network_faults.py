"""Network faults between agent and CSMS: how long after each fault ends the CSMS has
every message of a session that ran during it.

The cases and their measurement are hil/netfaults.py's (the same as
tests/e2e/test_network_faults.py): connection drop, half-open (proxy black hole; 100 %
loss on a veth pair into a network namespace), 2 s latency, 20 % loss, CSMS restart, a
CSMS that answers nothing, TLS handshake failure. evsite: seconds from the session's end
(the unplug, during the fault) until its StopTransaction, its last message, is at the
CSMS. Floor: the same session on a clean link, measured in the same run. The note of
each figure has the detect, reconnect and delivered-after-the-fault times, messages lost
(must be 0), retransmitted and duplicated. The namespace cases need root; elsewhere they are left
out with a note on stderr.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from hil.netfaults import CASES, CLEAN, bench_lines, measure, table
from hil.netns import unavailable_reason


async def main() -> int:
    import logging
    logging.basicConfig(level=logging.ERROR)
    why = unavailable_reason()
    with tempfile.TemporaryDirectory(prefix="bench-netfaults-") as d:
        floor = await measure(CLEAN, Path(d) / "clean")
        results = []
        for case in CASES:
            if case.netns and why:
                print(f"bench_network_faults: {case.name} left out: {why}", file=sys.stderr)
                continue
            results.append(await measure(case, Path(d) / case.kind))
    print(table(results, floor), file=sys.stderr)
    for line in bench_lines(results, floor):
        print(json.dumps(line))
    bad = [f"{r.case}: lost {r.lost}, duplicated {r.duplicated}, {r.problems}" for r in [floor, *results]
           if r.lost or r.duplicated or r.problems]
    for b in bad:
        print(f"bench_network_faults: {b}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
