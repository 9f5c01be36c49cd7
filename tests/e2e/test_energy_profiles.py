"""CSMS charging profiles on a real agent process (issue 4, "Done when" 2): the test CSMS
sends SetChargingProfile 16 A, the charger's register holds the new setpoint within one
poll cycle (rig ground truth, to the write), and GetCompositeSchedule reports 16 A.

Site: 32 A chargers with 32 A EVs, a 100 A fuse that does not bind. First a
TxDefaultProfile of 16 A on connector 1 (connector 2 keeps its 32 A), then a
ChargePointMaxProfile of 16 A for the station: both EVs together 16 A, 8 A each.

"Within one cycle": the profile counts from the moment the agent answers Accepted; the
next poll tick starts at most one interval later, and its reads and writes take a few
tens of milliseconds, allowed for in ``TICK_WORK``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agent.timefmt import utc_text
from hil.harness import Harness
from tests.e2e.energy_kit import POLL, describe, drawing, ev, first, now, samples, wait_truth, write_energy_site

pytestmark = pytest.mark.e2e

#: the reads, allocation and writes of one poll tick (s)
TICK_WORK = 0.25


def profile(profile_id: int, purpose: str, amps: float, *, start: bool = True) -> dict:
    """An Absolute profile of ``amps`` from a minute ago (``start=False``: no startSchedule)."""
    schedule = {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": amps}]}
    if start:
        schedule["startSchedule"] = utc_text(datetime.now(timezone.utc) - timedelta(minutes=1))
    return {"chargingProfileId": profile_id, "stackLevel": 0, "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Absolute", "chargingSchedule": schedule}


def limits_of(answer: dict) -> list[float]:
    return [p["limit"] for p in answer["chargingSchedule"]["chargingSchedulePeriod"]]


async def test_set_charging_profile_applies_within_a_cycle_and_the_composite_schedule_reports_it(tmp_path):
    async with Harness(write_energy_site(tmp_path, fuse=100, charger_max=32), tmp_path / "w") as h:
        await h.wait_message("StatusNotification", match={"connectorId": 2})
        await h.plug("c1", **ev(max_current=32))
        await h.plug("c2", **ev(max_current=32))
        await wait_truth(h, lambda t: drawing(t, 32, "c1", "c2"), what="both EVs at 32 A")
        mark = await h.rig("trace_start")

        # TxDefaultProfile 16 A on connector 1
        sent = now()
        answer = await h.csms_call("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": profile(
            1, "TxDefaultProfile", 16)})
        assert answer == {"status": "Accepted"}
        await wait_truth(h, lambda t: drawing(t, 16, "c1") and drawing(t, 32, "c2"), what="c1 at 16 A")
        trace = [s for s in await samples(h, mark) if s["wall"] >= sent]
        applied = first(trace, lambda s: s["chargers"]["c1"]["setpoint"] == 16)
        assert applied is not None and applied["why"] == "write c1 current"
        took = applied["wall"] - sent
        assert took <= POLL + TICK_WORK, f"c1 at 16 A {took:.2f} s after the call: {describe(applied)}"
        assert all(s["chargers"]["c2"]["setpoint"] == 32 for s in trace), "a connector-1 profile moved c2"
        schedule = await h.csms_call("GetCompositeSchedule", {"connectorId": 1, "duration": 600, "chargingRateUnit": "A"})
        assert schedule["status"] == "Accepted" and schedule["connectorId"] == 1
        assert limits_of(schedule) == [16]

        # ChargePointMaxProfile 16 A for the whole station
        sent = now()
        answer = await h.csms_call("SetChargingProfile", {"connectorId": 0, "csChargingProfiles": profile(
            2, "ChargePointMaxProfile", 16)})
        assert answer == {"status": "Accepted"}
        await wait_truth(h, lambda t: drawing(t, 8, "c1", "c2"), what="both EVs at 8 A")
        trace = [s for s in await samples(h, mark) if s["wall"] >= sent]
        applied = first(trace, lambda s: s["chargers"]["c1"]["setpoint"] + s["chargers"]["c2"]["setpoint"] <= 16)
        assert applied is not None and applied["why"].startswith("write c")
        took = applied["wall"] - sent
        assert took <= POLL + TICK_WORK, f"station at 16 A {took:.2f} s after the call: {describe(applied)}"
        schedule = await h.csms_call("GetCompositeSchedule", {"connectorId": 0, "duration": 600, "chargingRateUnit": "A"})
        assert schedule["status"] == "Accepted" and limits_of(schedule) == [16]
        watts = await h.csms_call("GetCompositeSchedule", {"connectorId": 0, "duration": 600, "chargingRateUnit": "W"})
        assert limits_of(watts) == [pytest.approx(16 * 230 * 3)]

        energy = (await h.agent_status())["energy"]
        assert energy["profiles"] == 2
        assert next(p for p in energy["phases"] if p["phase"] == "L1")["binding"] == "csms", energy["lines"]


async def test_an_absolute_profile_without_start_schedule_starts_when_received(tmp_path):
    """OCPP 1.6 makes startSchedule optional; agent/energy/profile_shape.py says adapters
    fill it in with the time received."""
    async with Harness(write_energy_site(tmp_path, fuse=100, charger_max=32), tmp_path / "w") as h:
        await h.wait_message("StatusNotification", match={"connectorId": 2})
        answer = await h.csms_call("SetChargingProfile", {"connectorId": 0, "csChargingProfiles": profile(
            3, "ChargePointMaxProfile", 16, start=False)})
        assert answer == {"status": "Accepted"}
