"""Notices the wall clock jumping (NTP after a long offline spell, an RTC battery gone
flat, someone running `date -s`).

Intervals and timeouts in evsite run on the monotonic clock, so a jump changes no timer;
but every stored and sent time is wall time, and a CSMS reading a transaction that
"lasted" minus three hours should know why. A jump larger than ``threshold`` is logged
once and queued as the security event SettingSystemTime (both OCPP versions have it).
"""

from __future__ import annotations

import logging
from typing import Any

from agent.site.state import SiteState

log = logging.getLogger("evsite.clock")


class ClockWatch:
    def __init__(self, sessions: Any, *, threshold: float = 30.0) -> None:
        self.sessions = sessions
        self.threshold = threshold
        self._offset: float | None = None
        self.jumps: list[float] = []

    async def on_site_state(self, state: SiteState) -> None:
        offset = state.taken_at.timestamp() - state.monotonic
        if self._offset is not None:
            jump = offset - self._offset
            if abs(jump) >= self.threshold:
                self.jumps.append(jump)
                log.warning("wall clock jumped %+.0f s (now %s); timers are unaffected, stored times follow the new clock",
                            jump, state.taken_at.isoformat())
                if self.sessions is not None:
                    await self.sessions.security_event("SettingSystemTime", f"wall clock jumped {jump:+.0f} s")
        self._offset = offset
