"""Noticing a charger that forgot its setpoint without ever missing a poll.

A charger that reboots between two polls answers the next one as if nothing happened,
but with its power-on settings: no setpoint (or its default), no failsafe settings.
Where the profile reads the current the charger applies, that shows it: two readings
in a row that differ from what was written (one may predate the write taking effect)
mean the settings are gone, and the driver does its init writes and the setpoint again.
Logged once per episode, and once when the charger applies its setpoint again. If a
re-init does not help (a register that means something else on this firmware), the
next one waits ``REINIT_BACKOFF`` seconds, so a misfit profile cannot flood its bus.
"""

from __future__ import annotations

import logging

from agent.clock import Clock

log = logging.getLogger("drivers.modbus.device")

#: seconds before a charger that still applies something else is re-initialized again
REINIT_BACKOFF = 30.0
#: amps an applied current may differ from the one written (register rounding)
TOLERANCE = 0.5


class AppliedWatch:
    def __init__(self, name: str, clock: Clock) -> None:
        self.name = name
        self.clock = clock
        self._mismatches = 0
        self._episode = False
        self._reinit_at: float | None = None

    def written(self) -> None:
        """A setpoint was written: the next reading may still show the old one."""
        self._mismatches = 0

    def check(self, expected: float | None, applied: float | None) -> bool:
        """True when the charger should be re-initialized now."""
        if expected is None or applied is None:
            return False
        if abs(applied - expected) <= TOLERANCE:
            if self._episode:
                log.info("%s: applies its setpoint (%.1f A) again", self.name, expected)
                self._episode = False
            self._mismatches = 0
            return False
        self._mismatches += 1
        if self._mismatches < 2:
            return False
        now = self.clock.monotonic()
        if self._reinit_at is not None and now - self._reinit_at < REINIT_BACKOFF:
            return False
        if not self._episode:
            log.warning("%s: applies %.1f A, not the %.1f A written: it lost its settings (rebooted?); "
                        "writing them again", self.name, applied, expected)
            self._episode = True
        self._reinit_at = now
        self._mismatches = 0
        return True
