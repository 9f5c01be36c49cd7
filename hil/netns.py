"""A network namespace joined to this one by a veth pair, whose packets a test can drop.

On loopback nothing is ever lost or late, so a test that wants the agent's own TCP stack
to meet a lossy or dead link puts the CSMS in a namespace of its own (``ip netns exec``)
behind a veth pair, and drops packets on the pair:

- namespace ``evs<id>`` with its own loopback; veth ``evs<id>h`` here (``host_addr``)
  and ``evs<id>n`` in the namespace (``ns_addr``), a /30 of 10.250.0.0/16 chosen from
  the id. Nothing routes that subnet anywhere else: packets to it go down the veth and
  never leave the machine.
- ``loss(percent)`` drops that share of the IP packets in both directions (each end's
  egress). With the kernel's netem qdisc it is ``tc qdisc ... netem loss P%``. Kernels
  built without netem (this project's VMs: CONFIG_NET_SCH_NETEM is unset) get the same
  effect from what they have: a classic-BPF classifier on a clsact qdisc matches P % of
  the packets by the kernel's per-packet random number (``ld rand``) and a mirred action
  redirects them to an ifb device that is kept down, where they are discarded.
  ``mechanism`` says which one is in use; 100 % is a half-open link.

Names carry the process id and a counter, so parallel runs never collide. ``close()``
removes everything this object made (namespace, both veth ends, the ifb devices, the
filters with them), is idempotent, and runs from ``__exit__`` and from the creating
code's ``except`` path, so a failed test leaves nothing behind.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess

_counter = itertools.count()

#: classic BPF, as ``tc ... bpf bytecode`` reads it: "count,code jt jf k,..."
_LD_RAND = "32 0 0 4294963256"        # BPF_LD|BPF_W|BPF_ABS, k = SKF_AD_OFF + SKF_AD_RANDOM
_MATCH = "6 0 0 4294967295"           # ret -1: match (the action runs)
_NO_MATCH = "6 0 0 0"                 # ret 0: no match


class NetnsError(RuntimeError):
    """A namespace command failed; the message has the command and its stderr."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here (None: they can): not root, no ``ip``
    or ``tc``, or the kernel refuses ``ip netns add``."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"no {tool!r} command (Debian: apt install iproute2)"
    probe = f"evsprobe{os.getpid() % 100000}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add refused: {made.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return None


def bpf_drop_program(percent: float) -> str:
    """``tc`` bytecode matching ``percent`` % of packets at random (100: all)."""
    if not 0 < percent <= 100:
        raise ValueError(f"loss must be > 0 and <= 100 %, got {percent!r}")
    if percent >= 100:
        return f"1,{_MATCH}"
    threshold = int(percent / 100 * 2**32)
    # A = random u32; if A >= threshold: no match, else match
    return f"4,{_LD_RAND},53 0 1 {threshold},{_NO_MATCH},{_MATCH}"


class Netns:
    """``with Netns() as ns:`` then run a program in it with ``ns.exec_prefix``."""

    def __init__(self) -> None:
        n = next(_counter)
        ident = f"{os.getpid() % 0x10000:04x}{n % 0x100:02x}"
        self.name = f"evs{ident}"
        self.host_if, self.ns_if = f"{self.name}h", f"{self.name}n"
        self.host_ifb, self.ns_ifb = f"{self.name}x", f"{self.name}y"
        block = (os.getpid() * 8 + n) % 16384          # one /30 of 10.250.0.0/16
        third, fourth = divmod(block * 4, 256)
        self.host_addr, self.ns_addr = f"10.250.{third}.{fourth + 1}", f"10.250.{third}.{fourth + 2}"
        self.mechanism = ""
        self.loss_percent = 0.0
        self._made = False

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def create(self) -> Netns:
        try:
            self._made = True
            _run("ip", "netns", "add", self.name)
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _run("ip", "link", "set", self.ns_if, "netns", self.name)
            _run("ip", "addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            _run("ip", "-n", self.name, "addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if)
            _run("ip", "-n", self.name, "link", "set", self.ns_if, "up")
            _run("ip", "-n", self.name, "link", "set", "lo", "up")
            self.mechanism = "netem" if self._netem_works() else "bpf+mirred"
            if self.mechanism == "bpf+mirred":
                _run("ip", "link", "add", self.host_ifb, "type", "ifb")          # kept down: a sink
                _run("ip", "-n", self.name, "link", "add", self.ns_ifb, "type", "ifb")
                _run("tc", "qdisc", "add", "dev", self.host_if, "clsact")
                _run("tc", "-n", self.name, "qdisc", "add", "dev", self.ns_if, "clsact")
        except BaseException:
            self.close()
            raise
        return self

    def _netem_works(self) -> bool:
        probe = _run("tc", "qdisc", "add", "dev", self.host_if, "root", "netem", "loss", "0%", check=False)
        if probe.returncode != 0:
            return False
        _run("tc", "qdisc", "del", "dev", self.host_if, "root", check=False)
        return True

    def _ends(self) -> list[tuple[list[str], str, str]]:
        """(tc prefix, device, its sink ifb) for both directions."""
        return [(["tc"], self.host_if, self.host_ifb), (["tc", "-n", self.name], self.ns_if, self.ns_ifb)]

    def loss(self, percent: float) -> None:
        """Drop ``percent`` % of the IP packets in each direction from now on; 0 ends it."""
        if not self._made:
            raise NetnsError("Netns.loss before create()")
        for tc, dev, sink in self._ends():
            if self.mechanism == "netem":
                if percent > 0:
                    _run(*tc, "qdisc", "replace", "dev", dev, "root", "netem", "loss", f"{percent:g}%")
                else:
                    _run(*tc, "qdisc", "del", "dev", dev, "root", check=False)
                continue
            _run(*tc, "filter", "del", "dev", dev, "egress", check=False)
            if percent > 0:
                _run(*tc, "filter", "add", "dev", dev, "egress", "protocol", "ip", "bpf", "bytecode",
                     bpf_drop_program(percent), "action", "mirred", "egress", "redirect", "dev", sink)
        self.loss_percent = percent

    def dropped_packets(self) -> int:
        """Packets the drop filters discarded so far (bpf+mirred; netem: its drop counter)."""
        total = 0
        for tc, dev, _ in self._ends():
            what = ("qdisc", "show") if self.mechanism == "netem" else ("filter", "show")
            args = [*tc, "-s", *what, "dev", dev] + ([] if self.mechanism == "netem" else ["egress"])
            out = _run(*args, check=False).stdout
            for line in out.splitlines():
                line = line.strip()
                if line.startswith("Sent ") and "pkt" in line:
                    if self.mechanism == "netem":
                        total += int(line.split("dropped ")[1].split(",")[0])
                    else:   # the mirred action's packets: every one was dropped at the sink
                        total += int(line.split(" pkt")[0].rsplit(" ", 1)[1])
        return total

    def close(self) -> None:
        """Remove all of it (idempotent; safe after a half-made create())."""
        if not self._made:
            return
        self._made = False
        _run("ip", "link", "del", self.host_if, check=False)       # takes its peer with it
        _run("ip", "link", "del", self.host_ifb, check=False)
        _run("ip", "netns", "del", self.name, check=False)         # and the ns-side ifb

    def leftovers(self) -> list[str]:
        """What of this object still exists on the machine (for tests of close())."""
        found = []
        if self.name in _run("ip", "netns", "list", check=False).stdout.split():
            found.append(f"netns {self.name}")
        links = _run("ip", "-o", "link", "show", check=False).stdout
        found += [f"link {dev}" for dev in (self.host_if, self.host_ifb) if f" {dev}:" in links or f" {dev}@" in links]
        return found

    def __enter__(self) -> Netns:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()
