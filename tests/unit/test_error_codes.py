"""CALLERROR codes leave the station in its OCPP version's spelling."""

import json

from agent.uplink.error_codes import spelled_for


def test_1_6_keeps_its_errata_spellings():
    frame = json.dumps([4, "m-1", "FormatViolation", "bad", {}])
    assert json.loads(spelled_for("1.6", frame))[2] == "FormationViolation"
    frame = json.dumps([4, "m-2", "OccurrenceConstraintViolation", "", {}])
    assert json.loads(spelled_for("1.6", frame))[2] == "OccurenceConstraintViolation"


def test_2_0_1_uses_format_violation_and_the_old_occurence():
    assert json.loads(spelled_for("2.0.1", json.dumps([4, "x", "FormationViolation", "", {}])))[2] == "FormatViolation"
    assert json.loads(spelled_for("2.0.1", json.dumps([4, "x", "OccurrenceConstraintViolation", "", {}])))[2] \
        == "OccurenceConstraintViolation"


def test_other_frames_and_codes_pass_unchanged():
    for frame in (json.dumps([2, "1", "Heartbeat", {}]), json.dumps([3, "1", {"status": "FormatViolation"}]),
                  json.dumps([4, "1", "NotSupported", "", {}]), "[4, not json"):
        assert spelled_for("1.6", frame) == frame
