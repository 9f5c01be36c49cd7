"""Reconnect delays: capped exponential growth with full jitter.

Hundreds of sites lose their CSMS at the same moment when the CSMS restarts; if they
all came back on the same schedule they would hammer it in waves. Full jitter (a delay
drawn uniformly between ``minimum`` and the current ceiling) spreads them out, and the
ceiling doubles per failed attempt up to ``maximum`` so a long outage costs little.

Pure: no clock, no IO. The caller sleeps; the random source is injected so tests can
seed it and check exact sequences.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """``next_delay()`` after each failed attempt, ``reset()`` after a connection that
    proved itself (stayed up long enough; see ``UplinkConnection``)."""

    initial: float = 1.0
    maximum: float = 300.0
    multiplier: float = 2.0
    minimum: float = 0.0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    attempt: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not self.initial > 0:
            raise ValueError(f"backoff initial delay must be > 0, got {self.initial}")
        if self.maximum < self.initial:
            raise ValueError(f"backoff maximum ({self.maximum}) must be >= initial ({self.initial})")
        if self.multiplier < 1:
            raise ValueError(f"backoff multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.minimum <= self.initial:
            raise ValueError(f"backoff minimum must be between 0 and initial ({self.initial}), got {self.minimum}")

    def ceiling(self, attempt: int | None = None) -> float:
        """The largest delay attempt number ``attempt`` (0-based) may draw."""
        n = self.attempt if attempt is None else attempt
        # compare exponents before computing, so a long outage cannot overflow a float
        if n > 1000 or self.initial * self.multiplier**min(n, 1000) >= self.maximum:
            return self.maximum
        return self.initial * self.multiplier**n

    def next_delay(self) -> float:
        """Draw the delay before the next attempt and count this attempt."""
        top = self.ceiling()
        self.attempt += 1
        return self.minimum + self.rng.random() * (top - self.minimum)

    def reset(self) -> None:
        self.attempt = 0
