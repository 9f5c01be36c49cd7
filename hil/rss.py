"""The agent's resident memory over a run, from ``/proc/PID/status`` (VmRSS).

A gateway runs the agent for months: memory that grows with every session, every
reconnect or every stored event ends in the OOM killer. The soak samples the agent's RSS
every few seconds while it works and judges the samples with one stated rule
(``RssSamples.verdict``):

- the first ``warmup`` seconds of a process are left out (imports, caches, the SQLite
  page cache and the allocator's arenas fill up there);
- after that, the median of the last five samples may exceed the median of the first
  five by at most ``bound_kib`` (default 8 MiB) and ``bound_ratio`` (default 10 %),
  whichever is larger. Medians, so one sample taken mid-burst decides nothing.

Processes killed with -9 are new processes: samples carry the pid, and the verdict is
taken over the longest-lived one (the soak's steady phase runs one agent for that).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB, or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None   # a zombie has no VmRSS


@dataclass(frozen=True)
class Sample:
    t: float            # seconds since the sampler started
    pid: int
    rss_kib: int


@dataclass
class RssSamples:
    samples: list[Sample] = field(default_factory=list)

    def by_pid(self) -> dict[int, list[Sample]]:
        out: dict[int, list[Sample]] = {}
        for s in self.samples:
            out.setdefault(s.pid, []).append(s)
        return out

    def longest(self) -> list[Sample]:
        """The samples of the process that was watched the longest."""
        runs = list(self.by_pid().values())
        return max(runs, key=lambda r: r[-1].t - r[0].t) if runs else []

    def verdict(self, warmup: float, bound_kib: int = 8192, bound_ratio: float = 0.10) -> tuple[bool, str]:
        """(grew beyond the bound, a sentence with the numbers) for the longest-lived
        process; see the module docstring for the rule."""
        run = self.longest()
        if not run:
            return False, "no RSS samples"
        after = [s for s in run if s.t - run[0].t >= warmup]
        if len(after) < 10:
            return False, (f"pid {run[0].pid}: {len(after)} samples after a {warmup:g} s warm-up, too few to judge "
                           f"(RSS {run[0].rss_kib // 1024} -> {run[-1].rss_kib // 1024} MiB)")
        start = statistics.median(s.rss_kib for s in after[:5])
        end = statistics.median(s.rss_kib for s in after[-5:])
        bound = max(bound_kib, bound_ratio * start)
        grew = end - start > bound
        text = (f"pid {run[0].pid}: RSS {start / 1024:.1f} MiB after warm-up -> {end / 1024:.1f} MiB at the end "
                f"({(end - start) / 1024:+.1f} MiB over {after[-1].t - after[0].t:.0f} s; bound "
                f"{bound / 1024:.1f} MiB)")
        return grew, text

    def summary(self) -> dict[str, object]:
        """First, last and peak RSS of the whole run, and per process at its end."""
        if not self.samples:
            return {"samples": 0}
        ends = [run[-1].rss_kib for run in self.by_pid().values()]
        return {"samples": len(self.samples), "processes": len(ends),
                "first_mib": round(self.samples[0].rss_kib / 1024, 1),
                "last_mib": round(self.samples[-1].rss_kib / 1024, 1),
                "peak_mib": round(max(s.rss_kib for s in self.samples) / 1024, 1),
                "process_end_mib_first_last": [round(ends[0] / 1024, 1), round(ends[-1] / 1024, 1)]}


class RssSampler:
    """Samples ``pid()`` (the current agent process, None while it is down) every
    ``period`` seconds until ``stop()``."""

    def __init__(self, pid: Callable[[], int | None], period: float = 2.0) -> None:
        self.pid = pid
        self.period = period
        self.result = RssSamples()
        self._t0 = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> RssSampler:
        self._task = asyncio.create_task(self._run(), name="rss sampler")
        return self

    def sample(self) -> Sample | None:
        pid = self.pid()
        kib = rss_kib(pid) if pid else None
        if pid is None or kib is None:
            return None
        s = Sample(round(time.monotonic() - self._t0, 3), pid, kib)
        self.result.samples.append(s)
        return s

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.period)

    async def stop(self) -> RssSamples:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        return self.result
