"""The wall clock jumps forwards and backwards while the agent runs: timers keep their
monotonic intervals, the jump is logged once and reported as SettingSystemTime, and
events carry the new wall time (RFC 3339 with a timezone)."""

from __future__ import annotations

from datetime import datetime, timedelta

from agent.clock import SystemClock
from hil.model import Ev
from tests.integration.test_uplink_v16 import STATION, site, wait_until


class JumpClock(SystemClock):
    """The system clock whose wall time a test can move; monotonic time never jumps."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return super().now() + self.offset


async def test_jumps_forward_and_back(tmp_path, caplog):
    clock = JumpClock()
    async with site(tmp_path, clock=clock) as (rt, rig, csms):
        await rt.settings.change("ConnectionTimeOut", "30")
        assert (await rt.sessions.present_tag(1, "EARLY")).accepted       # no cable yet: pending for 30 s
        clock.offset = timedelta(hours=3)                                 # NTP finally answers
        ev = await csms.wait_for("SecurityEventNotification", station=STATION, timeout=10)
        assert ev.payload["type"] == "SettingSystemTime" and "+10800" in ev.payload["techInfo"]
        # three wall hours passed, not 30 monotonic seconds: the authorization still holds
        assert rt.sessions.connectors[1].pending is not None
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        start = await csms.wait_for("StartTransaction", station=STATION, timeout=10)
        started = datetime.fromisoformat(start.payload["timestamp"].replace("Z", "+00:00"))
        assert abs((started - (SystemClock().now() + timedelta(hours=3))).total_seconds()) < 30
        clock.offset = timedelta(0)                                       # and back again
        n = len(csms.messages(STATION, "SecurityEventNotification", "in", "call"))
        await csms.wait_for("SecurityEventNotification", station=STATION, count=n + 1, timeout=10)
        assert rt.sessions.connectors[1].tx is not None                   # the session is untouched
        assert sum(r.name == "evsite.clock" and "wall clock jumped" in r.message for r in caplog.records) == 2
