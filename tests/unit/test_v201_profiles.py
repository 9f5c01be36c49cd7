"""2.0.1 charging profiles <-> the profile book's 1.6 shape (agent/uplink/v201/profiles.py)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from agent.energy.profile_shape import parse_profile
from agent.energy.wiring import energy_shape
from agent.uplink.v201.profiles import ConversionError, composite_to_v201, from_book, to_book

NOW = datetime(2026, 5, 1, 8, 30, tzinfo=timezone.utc)


def profile(**kw) -> dict:
    base = {"id": 4, "stackLevel": 2, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Recurring",
            "recurrencyKind": "Daily", "validFrom": "2026-05-01T00:00:00.000Z",
            "chargingSchedule": [{"id": 40, "startSchedule": "2026-05-01T22:00:00.000Z", "duration": 28800,
                                  "chargingRateUnit": "W", "minChargingRate": 1400.0,
                                  "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0, "numberPhases": 3},
                                                             {"startPeriod": 3600, "limit": 3700.0, "numberPhases": 1,
                                                              "phaseToUse": 2}]}]}
    base.update(kw)
    return base


def test_round_trip_keeps_everything_a_2_0_1_csms_set():
    book, extras = to_book(profile(), NOW)
    assert book["chargingSchedule"]["chargingSchedulePeriod"][1] == {"startPeriod": 3600, "limit": 3700.0,
                                                                     "numberPhases": 1}
    assert extras == {"scheduleId": 40, "phaseToUse": {"1": 2}}
    entry = dict(book, id=4, connector_id=1)          # as the ProfileBook stores it
    assert from_book(entry, extras) == profile()
    parse_profile(energy_shape(entry))                # load management takes the converted profile as it is


def test_station_max_profile_is_the_1_6_charge_point_max_profile():
    book, _ = to_book(profile(chargingProfilePurpose="ChargingStationMaxProfile"), NOW)
    assert book["chargingProfilePurpose"] == "ChargePointMaxProfile"
    assert from_book(dict(book, id=4, connector_id=0), None)["chargingProfilePurpose"] == "ChargingStationMaxProfile"


def test_an_absolute_profile_without_start_starts_when_received():
    p = profile(chargingProfileKind="Absolute")
    del p["recurrencyKind"]
    del p["chargingSchedule"][0]["startSchedule"]
    book, _ = to_book(p, NOW)
    assert book["chargingSchedule"]["startSchedule"] == "2026-05-01T08:30:00.000Z"


def test_a_tx_profile_keeps_the_station_transaction_id_outside_the_1_6_field():
    book, extras = to_book(profile(chargingProfilePurpose="TxProfile", transactionId="tx-9"), NOW)
    assert "transactionId" not in book and extras["transactionId"] == "tx-9"
    assert from_book(dict(book, id=4, connector_id=1), extras)["transactionId"] == "tx-9"
    assert from_book(dict(book, id=4, connector_id=1, evsite_tx_id="tx-9"), None)["transactionId"] == "tx-9"


@pytest.mark.parametrize("change, why", [
    ({"chargingProfilePurpose": "ChargingStationExternalConstraints"}, "cannot be set by the CSMS"),
    ({"chargingSchedule": profile()["chargingSchedule"] * 2}, "2 charging schedules"),
])
def test_what_the_agent_cannot_take_is_refused_with_a_reason(change, why):
    with pytest.raises(ConversionError, match=why):
        to_book(profile(**change), NOW)


def test_composite_schedule_in_2_0_1_words():
    one_six = {"duration": 600, "startSchedule": "2026-05-01T08:30:00.000Z", "chargingRateUnit": "A",
               "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}, {"startPeriod": 300, "limit": 6.0,
                                                                                "numberPhases": 1}]}
    got = composite_to_v201(one_six, 2, NOW, 600, "A")
    assert got == {"evseId": 2, "duration": 600, "scheduleStart": "2026-05-01T08:30:00.000Z", "chargingRateUnit": "A",
                   "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0},
                                              {"startPeriod": 300, "limit": 6.0, "numberPhases": 1}]}
