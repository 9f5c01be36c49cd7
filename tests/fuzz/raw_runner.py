"""Mutated raw frames thrown at a station, counted by outcome.

Shared by the 1.6 and 2.0.1 fuzzers so their long runs report the same figures: frames
sent, answers by kind and CALLERROR code, frames ignored, crashes (always 0: the first
one fails the run with its seed and frame number, which replays it).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def quiet_logging() -> Iterator[None]:
    """A million rejected frames log a million warnings, which pytest keeps in memory
    and formats: the long runs spent most of their time there. The answers are what is
    checked, so the long runs drop records below ERROR while they last."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def throw_frames(send: Callable[[str], Any], seeds: list[str], mutate: Callable[[random.Random, str], str],
                 n: int, seed: int, codes: set[str], progress_every: int = 0) -> Counter:
    """Send ``n`` mutated frames; every answer must be a CALLRESULT or a CALLERROR whose
    code is in ``codes``. Returns the outcome counts."""
    rng = random.Random(seed)
    seen: Counter = Counter()
    for k in range(n):
        frame = mutate(rng, rng.choice(seeds))
        try:
            answer = send(frame)
        except Exception as exc:   # the station must never raise
            raise AssertionError(f"seed {seed} frame {k}: {frame!r} raised {exc!r}") from exc
        if answer is None:
            seen["no answer"] += 1
        else:
            assert answer[0] in (3, 4), (seed, k, frame, answer)
            if answer[0] == 4:
                assert answer[2] in codes, (seed, k, frame, answer)
                seen[f"CALLERROR {answer[2]}"] += 1
            else:
                seen["CALLRESULT"] += 1
        if progress_every and (k + 1) % progress_every == 0:
            print(f"  {k + 1:,} frames, 0 crashes", flush=True)
    return seen


def summary(version: str, n: int, seed: int, seen: Counter) -> str:
    parts = ", ".join(f"{kind} {count:,}" for kind, count in sorted(seen.items()))
    return f"fuzz {version}: {n:,} mutated frames (seed {seed}), 0 crashes; {parts}"
