"""hil/netns.py: a namespace behind a veth pair drops the share of packets it is told to,
in both directions, and leaves nothing behind (also when a test fails inside it)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from hil.netns import Netns, bpf_drop_program, unavailable_reason

NO_NETNS = unavailable_reason()

# in the namespace: echo every datagram back (the reply crosses the link the other way),
# then print how many arrived
ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
print(s.getsockname()[1], flush=True)
n = 0
while True:
    data, peer = s.recvfrom(64)
    if data == b"end":
        break
    n += 1
    s.sendto(data, peer)
print(n, flush=True)
"""


def echo_through(ns: Netns, count: int) -> tuple[int, int, int]:
    """(datagrams that reached the namespace, replies that came back, packets the filters dropped)."""
    server = subprocess.Popen([*ns.exec_prefix, sys.executable, "-c", ECHO, ns.ns_addr], stdout=subprocess.PIPE,
                              text=True)
    assert server.stdout is not None
    port = int(server.stdout.readline())
    replies = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.001)                 # paced: a burst would overflow socket buffers, not the link
        for _ in range(count):
            s.sendto(b"x", (ns.ns_addr, port))
            replies += _drain(s)
        s.settimeout(0.5)
        replies += _drain(s)
        loss, dropped = ns.loss_percent, ns.dropped_packets()
        ns.loss(0)                          # the end marker must get through
        s.sendto(b"end", (ns.ns_addr, port))
        if loss:
            ns.loss(loss)
    arrived = int(server.communicate(timeout=10)[0].split()[-1])
    return arrived, replies, dropped


def _drain(s: socket.socket) -> int:
    n = 0
    try:
        while True:
            s.recvfrom(64)
            n += 1
    except OSError:
        return n


def test_drop_programs_match_the_asked_share():
    assert bpf_drop_program(100) == "1,6 0 0 4294967295"
    threshold = int(bpf_drop_program(20).split(",")[2].split()[3])
    assert threshold == int(0.2 * 2**32)
    with pytest.raises(ValueError, match="loss must be"):
        bpf_drop_program(0)


@pytest.mark.skipif(bool(NO_NETNS), reason=str(NO_NETNS))
def test_loss_in_both_directions_and_clean_removal():
    ns = Netns()
    with ns:
        assert f"netns {ns.name}" in ns.leftovers() and f"link {ns.host_if}" in ns.leftovers()
        assert echo_through(ns, 50) == (50, 50, 0)

        ns.loss(100)
        arrived, replies, dropped = echo_through(ns, 20)
        assert (arrived, replies) == (0, 0) and dropped >= 20

        ns.loss(20)
        arrived, replies, _ = echo_through(ns, 500)
        # ~20 % lost each way: ~400 arrive, ~320 replies come back
        assert 340 <= arrived <= 460 and 260 <= replies <= 380, (arrived, replies)
    assert ns.leftovers() == []
    ns.close()                              # idempotent


@pytest.mark.skipif(bool(NO_NETNS), reason=str(NO_NETNS))
def test_a_failure_inside_leaves_nothing_behind():
    ns = Netns()
    with pytest.raises(RuntimeError, match="boom"), ns:
        ns.loss(50)
        raise RuntimeError("boom")
    assert ns.leftovers() == []
