"""A charger that ignores its setpoint (broken firmware): it answers every poll, but its
EV draws more than it was told. Load management notices it once the charger has had
the time an EV gets to follow a lower setpoint (``Policy.lower_timeout``), logs it once,
stops steering it and counts it at the most it can draw, so the other charger makes
room and the site's fuse holds by the rig's ground truth; when the charger follows its
setpoint again, that is logged once and the other EV gets its share back.

There is no CSMS status for this: the connector still charges, its draw is in every
MeterValues, and a Faulted would tell the CSMS the session had stopped.

The rig's hook: ``ChargerModel.ignore_setpoint(amps, now)`` (hil/model.py).
"""

from __future__ import annotations

import dataclasses
import logging

from tests.integration.test_device_faults import (
    BASE_LOAD, FUSE, GroundTruth, charge, fault_site, lines, polls, reason_of, repeated,
)
from tests.integration.test_uplink_v16 import STATION, wait_until

#: seconds a charger may take to follow a lower setpoint before it counts as ignoring it
FOLLOW = 1.0


async def test_a_charger_drawing_more_than_its_setpoint(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    # terra may draw up to 24 A: that is what it is counted at once it ignores its setpoint
    async with fault_site(tmp_path, terra_max=24) as (rt, rig, csms):
        rt.energy.tuning = dataclasses.replace(rt.energy.tuning, lower_timeout=FOLLOW)
        await charge(rt, rig, csms, "terra", 1, "T-1", max_current=32)
        await charge(rt, rig, csms, "evcc", 2, "T-2", max_current=32)
        share = (FUSE - BASE_LOAD) / 2                                  # 14 A each
        await wait_until(lambda: rig.charger("terra").offered() == share == rig.charger("evcc").offered())
        mark = len(caplog.records)
        terra = rig.charger("terra")
        terra.ignore_setpoint(24, rig.site.model.now)
        assert terra.currents[0] == 24                                  # 4 + 24 + 14 > 32: over the fuse
        # detected after FOLLOW seconds, counted at its 24 A: the other EV is paused (4 A left < 6 A)
        await wait_until(lambda: 1 in rt.energy.ignoring, timeout=FOLLOW + 3, what="overdraw noticed")
        await wait_until(lambda: rig.charger("evcc").offered() == 0, timeout=2, what="room made")
        assert reason_of(rt, 1) == "ignores its setpoint: counted at 24 A"
        with GroundTruth(rig) as truth:
            await polls(rt, 10)
        assert truth.grid_max <= FUSE + 0.1, truth.grid_max             # the fuse holds meanwhile
        assert rt.poller.setpoints[1].amps == share                     # its setpoint is left alone
        found = lines(caplog, "connector 1 (terra) draws 24.0 A with its setpoint at 14.0 A", mark)
        assert len(found) == 1 and "ignores its setpoint; counted at up to 24.0 A" in found[0]
        assert repeated(caplog, mark) == []
        assert rt.sessions.connectors[1].tx is not None and rt.sessions.connectors[2].tx is not None
        # it follows again: logged once, the other EV gets its share back
        mark2 = len(caplog.records)
        terra.ignore_setpoint(None, rig.site.model.now)
        await wait_until(lambda: 1 not in rt.energy.ignoring, timeout=3)
        with GroundTruth(rig) as truth:
            await wait_until(lambda: rig.charger("evcc").offered() == share, timeout=10, what="share back")
        assert truth.grid_max <= FUSE + 0.1, truth.grid_max
        assert len(lines(caplog, "connector 1 (terra) follows its setpoint again", mark2)) == 1
        assert not csms.messages(STATION, "StopTransaction")
