"""Inbound OCPP 2.0.1 frames the CSMS might send, valid and not: the station never
crashes, answers every CALL it can read with a CALLRESULT that passes the schema or with
the right CALLERROR, and a refused call leaves the store as it was.

The 2.0.1 twin of test_fuzz_ocpp16.py: valid payloads come from the OCA schemas in the
``ocpp`` package (hypothesis-jsonschema), broken ones are random JSON under real action
names, and raw frames are mutated bytes of valid ones. Quick size here; ``-m long``
runs a million raw frames (FUZZ_FRAMES to change it, FUZZ_SEED to replay one).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from ocpp.messages import Call, _validate_payload

from agent.uplink.v201.station_fields import out_of_int32
from tests.fuzz.ocpp201_harness import ACTIONS_201, Harness201
from tests.fuzz.raw_runner import quiet_logging, summary, throw_frames
from tests.fuzz.test_fuzz_ocpp16 import json_values, mutate
from tests.ocpp_schemas import CALLERROR_CODES, OcppSchemaError, schema_path, validate

pytestmark = pytest.mark.ocpp_unchecked

FAST = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None,
                max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")))
#: what a schema-valid call may be refused with: what the site cannot do or hold
REFUSALS = {"NotImplemented", "NotSupported", "PropertyConstraintViolation", "OccurenceConstraintViolation",
            "TypeConstraintViolation"}


@lru_cache(maxsize=None)
def request_schema(action: str) -> dict:
    schema = json.loads(schema_path("2.0.1", action, "call").read_text("utf-8-sig"))
    schema.pop("$id", None)   # a urn: $id makes local #/definitions refs unresolvable for the generator
    return schema


@lru_cache(maxsize=None)
def request_payloads(action: str):
    """The payload strategy of ``action``, built once: hypothesis-jsonschema resolves and
    canonicalises the schema on every ``from_schema`` call; per example that was about a
    third of this test's CPU time (it took up to 72 s of the suite's 120 s per-test limit
    on a loaded machine)."""
    return from_schema(request_schema(action))


def library_accepts(action: str, payload) -> bool:
    try:
        _validate_payload(Call("x", action, json.loads(json.dumps(payload))), "2.0.1")
    except Exception:
        return False
    return True


def schema_valid(action: str, payload) -> bool:
    try:
        validate("2.0.1", action, "call", payload)
    except (OcppSchemaError, Exception):
        return False
    return True


@pytest.fixture
def harness(tmp_path):
    loop = asyncio.new_event_loop()
    h = loop.run_until_complete(Harness201(tmp_path).start())
    h.loop = loop
    yield h
    loop.run_until_complete(h.close())
    loop.run_until_complete(cancel_leftovers())
    loop.close()


async def cancel_leftovers() -> None:
    """@after hooks run as tasks of their own: end them before the loop closes, or a
    pending one is destroyed with it (an unraisable-exception warning, a flaky failure)."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def run(h: Harness201, coro):
    return h.loop.run_until_complete(coro)


def settle(h: Harness201) -> None:
    """Let @after hooks and the tasks they spawn run (a few loop turns, no wall time)."""
    async def turns() -> None:
        for _ in range(5):
            await asyncio.sleep(0)
    run(h, turns())


@FAST
@given(data=st.data())
def test_schema_valid_calls_get_schema_valid_results(harness, data):
    action = data.draw(st.sampled_from(ACTIONS_201), label="action")
    payload = data.draw(request_payloads(action), label="payload")
    assume(library_accepts(action, payload))
    int32 = out_of_int32(payload) is None
    answer = run(harness, harness.send(json.dumps([2, "v-1", action, payload])))
    settle(harness)
    assert answer is not None, f"{action}: no answer"
    assert answer[1] == "v-1"
    if not int32:        # OCPP integers are 32-bit; the schemas do not say so
        assert answer[0] == 4 and answer[2] == "TypeConstraintViolation", answer
        return
    if answer[0] == 4:   # a CALLERROR for a valid call: only for what the site cannot do
        assert answer[2] in REFUSALS, (action, payload, answer)
        return
    assert answer[0] == 3, answer
    validate("2.0.1", action, "result", answer[2])


@FAST
@given(action=st.sampled_from(ACTIONS_201) | st.text(max_size=25), payload=json_values)
def test_broken_payloads_get_callerrors_and_change_nothing(harness, action, payload):
    if action in ACTIONS_201 and (schema_valid(action, payload) or library_accepts(action, payload)):
        return   # randomly valid: covered above
    before = run(harness, harness.snapshot())
    answer = run(harness, harness.send(json.dumps([2, "b-1", action, payload])))
    settle(harness)
    assert answer is not None and answer[0] == 4 and answer[1] == "b-1", answer
    assert answer[2] in CALLERROR_CODES["2.0.1"] - {"InternalError", "GenericError"}, answer
    assert run(harness, harness.snapshot()) == before


def test_integers_beyond_32_bits_are_refused_before_any_handler(harness):
    """The 2.0.1 schemas, like 1.6's, say "integer" without a range; a 2^63 id would
    reach SQLite and fail there. Refused with TypeConstraintViolation, store untouched."""
    before = run(harness, harness.snapshot())
    for frame in ([2, "i-1", "SendLocalList", {"versionNumber": 2**63, "updateType": "Full"}],
                  [2, "i-2", "ReserveNow", {"id": 2**40, "expiryDateTime": "2030-01-01T00:00:00Z",
                                             "idToken": {"idToken": "X", "type": "ISO14443"}, "evseId": 1}],
                  [2, "i-3", "CancelReservation", {"reservationId": -2**31 - 1}]):
        answer = run(harness, harness.send(json.dumps(frame)))
        assert answer[:3] == [4, frame[1], "TypeConstraintViolation"], answer
    assert run(harness, harness.snapshot()) == before
    # the edges of the range are fine, and so is vendor data (a millisecond timestamp)
    answer = run(harness, harness.send(json.dumps([2, "i-4", "CancelReservation", {"reservationId": 2**31 - 1}])))
    assert answer == [3, "i-4", {"status": "Rejected"}]
    answer = run(harness, harness.send(json.dumps([2, "i-5", "CancelReservation", {
        "reservationId": -2**31, "customData": {"vendorId": "x", "sentAtMs": 1_790_000_000_000}}])))
    assert answer == [3, "i-5", {"status": "Rejected"}]


def test_a_bad_date_time_is_a_property_constraint_violation_naming_the_field(harness):
    """Found by the raw frames (seed 1, frame 18): jsonschema does not check formats, so
    ReserveNow with expiryDateTime "2030-01-0\ufffd1T..." reached the handler, whose
    ValueError the library answered InternalError. Now the field is named, nothing stored."""
    before = run(harness, harness.snapshot())
    reserve = [2, "d-1", "ReserveNow", {"id": 7, "expiryDateTime": "2030-01-0\ufffd1T00:00:00Z",
                                        "idToken": {"idToken": "T", "type": "ISO14443"}, "evseId": 2}]
    answer = run(harness, harness.send(json.dumps(reserve)))
    assert answer[:3] == [4, "d-1", "PropertyConstraintViolation"] and "expiryDateTime" in answer[3], answer
    local = [2, "d-2", "SendLocalList", {"versionNumber": 3, "updateType": "Full", "localAuthorizationList": [
        {"idToken": {"idToken": "A", "type": "ISO14443"},
         "idTokenInfo": {"status": "Accepted", "cacheExpiryDateTime": "tomorrow"}}]}]
    answer = run(harness, harness.send(json.dumps(local)))
    assert answer[:3] == [4, "d-2", "PropertyConstraintViolation"] and "cacheExpiryDateTime" in answer[3], answer
    assert run(harness, harness.snapshot()) == before


def test_a_call_that_is_not_ocpp_j_gets_an_error_when_its_id_is_readable(harness):
    answer = run(harness, harness.send('[2, "bad-1", "Reset"]'))        # no payload
    assert answer is not None and answer[:2] == [4, "bad-1"], answer
    assert answer[2] in ("FormatViolation", "ProtocolError", "RpcFrameworkError"), answer
    assert run(harness, harness.send("this is not json")) is None       # no id: no one to answer
    ok = run(harness, harness.send(json.dumps([2, "ok-1", "GetLocalListVersion", {}])))
    assert ok == [3, "ok-1", {"versionNumber": 0}]


def valid_frames() -> list[str]:
    return [json.dumps([2, "m-1", "GetVariables", {"getVariableData": [
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]}]),
            json.dumps([2, "m-2", "ChangeAvailability", {"operationalStatus": "Inoperative", "evse": {"id": 1}}]),
            json.dumps([2, "m-3", "SendLocalList", {"versionNumber": 1, "updateType": "Full",
                                                    "localAuthorizationList": []}]),
            json.dumps([2, "m-4", "ReserveNow", {"id": 7, "expiryDateTime": "2030-01-01T00:00:00Z",
                                                 "idToken": {"idToken": "T", "type": "ISO14443"}, "evseId": 2}]),
            json.dumps([2, "m-5", "SendLocalList", {"versionNumber": 3, "updateType": "Differential",
                                                    "localAuthorizationList": [{
                                                        "idToken": {"idToken": "A", "type": "ISO14443"},
                                                        "idTokenInfo": {"status": "Accepted",
                                                                        "cacheExpiryDateTime": "2030-01-01T00:00:00Z"}}]}]),
            json.dumps([2, "m-6", "SetChargingProfile", {"evseId": 0, "chargingProfile": {
                "id": 5, "stackLevel": 1, "chargingProfilePurpose": "ChargingStationMaxProfile",
                "chargingProfileKind": "Absolute", "validFrom": "2020-01-01T00:00:00Z",
                "chargingSchedule": [{"id": 1, "chargingRateUnit": "A", "startSchedule": "2020-01-01T00:00:00Z",
                                      "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}]}}]),
            json.dumps([2, "m-7", "RequestStartTransaction", {"idToken": {"idToken": "R", "type": "Central"},
                                                              "remoteStartId": 3, "evseId": 1}]),
            json.dumps([2, "m-8", "GetReport", {"requestId": 4, "componentCriteria": ["Active"]}]),
            json.dumps([3, "m-9", {}]), json.dumps([4, "m-10", "GenericError", "x", {}])]


def raw_frames(harness: Harness201, n: int, seed: int, progress_every: int = 0):
    return throw_frames(lambda frame: run(harness, harness.send(frame)), valid_frames(), mutate, n, seed,
                        CALLERROR_CODES["2.0.1"] - {"InternalError"}, progress_every)


def test_mutated_raw_frames_never_crash_the_station(harness):
    raw_frames(harness, int(os.environ.get("FUZZ_RAW", "2000")), seed=int(os.environ.get("FUZZ_SEED", "1")))


@pytest.mark.long
@pytest.mark.timeout(3 * 3600)
def test_a_million_mutated_frames(harness):
    seed = int(os.environ.get("FUZZ_SEED", str(random.randrange(1 << 30))))
    n = int(os.environ.get("FUZZ_FRAMES", "1000000"))
    print(f"fuzz seed {seed} (FUZZ_SEED={seed} replays it)")
    with quiet_logging():
        seen = raw_frames(harness, n, seed=seed, progress_every=100_000)
    print(summary("2.0.1", n, seed, seen))
