"""The test CSMS itself, driven by a bare WebSocket "station" that sends raw OCPP-J
frames, so every behaviour other tests rely on (answers, retransmission counting,
faults, CSMS calls, schema guard) is checked against the wire."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ocpp.v16 import call as call16
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hil.csms import CallErrorReply, TagRule, TestCsms
from tests.ocpp_schemas import OcppSchemaError, SchemaGuard, ocpp_schema_guard, validate  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
TS = "2026-03-01T10:00:00.000Z"


class Station:
    """A station reduced to frames: send a CALL, read what comes back."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.n = 0

    async def call(self, action: str, payload: dict, uid: str | None = None) -> list:
        self.n += 1
        uid = uid or f"st-{self.n}"
        await self.ws.send(json.dumps([2, uid, action, payload]))
        return await self.recv()

    async def recv(self, timeout: float = 2.0) -> list:
        async with asyncio.timeout(timeout):
            return json.loads(await self.ws.recv())


def station(csms: TestCsms, sid: str = "ST1", *, proto: str | list[str] = "ocpp1.6", **kw):
    protos = [proto] if isinstance(proto, str) else proto
    return connect(f"{csms.url}/{sid}", subprotocols=protos, open_timeout=2, close_timeout=0.5, **kw)


def start16(tag: str = "TAG1", connector: int = 1, meter: int = 1000) -> dict:
    return {"connectorId": connector, "idTag": tag, "meterStart": meter, "timestamp": TS}


async def test_16_session_answers_and_log(tmp_path):
    log_file = tmp_path / "csms.jsonl"
    rule = TagRule(accept=frozenset({"GOOD", "CHILD"}), blocked=frozenset({"LOST"}), parents={"CHILD": "FLEET"})
    async with TestCsms(tags=rule, heartbeat_interval=42, log_path=log_file) as csms:
        async with station(csms) as ws:
            st = Station(ws)
            boot = await st.call("BootNotification", {"chargePointVendor": "evsite", "chargePointModel": "m"})
            assert boot[0] == 3 and boot[2]["status"] == "Accepted" and boot[2]["interval"] == 42
            assert boot[2]["currentTime"].endswith("Z")
            assert (await st.call("Authorize", {"idTag": "GOOD"}))[2] == {"idTagInfo": {"status": "Accepted"}}
            assert (await st.call("Authorize", {"idTag": "OTHER"}))[2]["idTagInfo"]["status"] == "Invalid"
            assert (await st.call("Authorize", {"idTag": "LOST"}))[2]["idTagInfo"]["status"] == "Blocked"
            child = (await st.call("Authorize", {"idTag": "CHILD"}))[2]["idTagInfo"]
            assert child == {"status": "Accepted", "parentIdTag": "FLEET"}
            first = (await st.call("StartTransaction", start16("GOOD")))[2]
            second = (await st.call("StartTransaction", start16("GOOD", connector=2)))[2]
            assert (first["transactionId"], second["transactionId"]) == (1, 2)
            stop = {"transactionId": 1, "meterStop": 5000, "timestamp": TS, "idTag": "GOOD", "reason": "Local"}
            assert (await st.call("StopTransaction", stop))[2] == {"idTagInfo": {"status": "Accepted"}}
            assert (await st.call("DataTransfer", {"vendorId": "x"}))[2] == {"status": "UnknownVendorId"}
        assert csms.transactions[1].stop["meterStop"] == 5000
        assert csms.transactions[2].stop is None
        calls = csms.messages("ST1", direction="in", kind="call")
        assert [m.action for m in calls] == [
            "BootNotification", "Authorize", "Authorize", "Authorize", "Authorize",
            "StartTransaction", "StartTransaction", "StopTransaction", "DataTransfer",
        ]
        assert len(csms.messages("ST1", direction="out", kind="result")) == len(calls)
        assert csms.messages(action="StopTransaction", direction="out")[0].payload["idTagInfo"]["status"] == "Accepted"
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert len(lines) == 2 * len(calls)
    assert lines[0]["dir"] == "in" and lines[0]["action"] == "BootNotification" and lines[0]["at"].endswith("Z")
    assert lines[1]["dir"] == "out" and lines[1]["kind"] == "result"


async def test_201_transaction_events_and_id_tokens():
    async with TestCsms(tags=TagRule.reject_prefix("BAD", parents={"ok-1": "GROUP"})) as csms:
        async with station(csms, "EVSE-A", proto="ocpp2.0.1") as ws:
            assert ws.subprotocol == "ocpp2.0.1"
            st = Station(ws)
            boot = await st.call("BootNotification", {"reason": "PowerUp", "chargingStation": {"model": "m", "vendorName": "v"}})
            assert boot[2]["status"] == "Accepted"
            auth = await st.call("Authorize", {"idToken": {"idToken": "BAD-7", "type": "ISO14443"}})
            assert auth[2] == {"idTokenInfo": {"status": "Invalid"}}
            base = {"timestamp": TS, "triggerReason": "Authorized", "transactionInfo": {"transactionId": "tx-1"}}
            started = await st.call("TransactionEvent", {**base, "eventType": "Started", "seqNo": 0,
                                                         "idToken": {"idToken": "ok-1", "type": "ISO14443"}})
            assert started[2]["idTokenInfo"] == {"status": "Accepted", "groupIdToken": {"idToken": "GROUP", "type": "Central"}}
            await st.call("TransactionEvent", {**base, "eventType": "Updated", "seqNo": 1, "triggerReason": "MeterValuePeriodic"})
            await st.call("TransactionEvent", {**base, "eventType": "Ended", "seqNo": 2, "triggerReason": "EVDeparted"})
        rec = csms.transactions["tx-1"]
        assert rec.seq_nos == [0, 1, 2] and rec.start["seqNo"] == 0 and rec.stop["seqNo"] == 2
        assert {m.version for m in csms.messages("EVSE-A")} == {"2.0.1"}


async def test_subprotocol_choice_follows_station_then_prefer():
    async with TestCsms() as csms:
        async with station(csms, "A", proto=["ocpp2.0.1", "ocpp1.6"]) as ws:
            assert ws.subprotocol == "ocpp2.0.1"
        async with station(csms, "B", proto=["ocpp1.6", "ocpp2.0.1"]) as ws:
            assert ws.subprotocol == "ocpp1.6"
    async with TestCsms(prefer="1.6") as csms:
        async with station(csms, "C", proto=["ocpp2.0.1", "ocpp1.6"]) as ws:
            assert ws.subprotocol == "ocpp1.6"
    async with TestCsms(ocpp="1.6") as csms:
        async with station(csms, "D", proto=["ocpp2.0.1"]) as ws:
            assert ws.subprotocol is None  # accepted without one, then closed by the CSMS
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1002


async def test_retransmission_is_answered_the_same_and_counted():
    async with TestCsms() as csms:
        async with station(csms) as ws:
            st = Station(ws)
            a = await st.call("StartTransaction", start16(), uid="u-1")
            b = await st.call("StartTransaction", start16(), uid="u-1")
            assert a == b and a[2]["transactionId"] == 1
        # and across a reconnect
        async with station(csms) as ws:
            c = await Station(ws).call("StartTransaction", start16(), uid="u-1")
            assert c == a
        assert len(csms.transactions) == 1
        assert csms.retransmissions("ST1", "StartTransaction") == 2
        assert len(csms.messages("ST1", "StartTransaction", "in", retransmissions=False)) == 1
        assert csms.connection_count("ST1") == 2


async def test_callerror_fault_is_not_processed_and_a_retry_is():
    async with TestCsms() as csms:
        csms.fail_with("StartTransaction", "InternalError", times=1)
        async with station(csms) as ws:
            st = Station(ws)
            err = await st.call("StartTransaction", start16(), uid="u-1")
            assert err[0] == 4 and err[2] == "InternalError"
            assert csms.transactions == {}
            ok = await st.call("StartTransaction", start16(), uid="u-1")
            assert ok[0] == 3 and ok[2]["transactionId"] == 1


async def test_never_answer_before_and_after_processing():
    async with TestCsms() as csms:
        csms.never_answer("StartTransaction", times=1)
        csms.never_answer("StopTransaction", times=1, after=True)
        async with station(csms) as ws:
            st = Station(ws)
            await ws.send(json.dumps([2, "u-1", "StartTransaction", start16()]))
            await csms.wait_for("StartTransaction")
            with pytest.raises(TimeoutError):
                await st.recv(timeout=0.2)
            assert csms.transactions == {}
            # the retry of an unprocessed call is processed now
            assert (await st.call("StartTransaction", start16(), uid="u-1"))[2]["transactionId"] == 1
            stop = {"transactionId": 1, "meterStop": 2000, "timestamp": TS}
            await ws.send(json.dumps([2, "u-2", "StopTransaction", stop]))
            await csms.wait_for("StopTransaction")
            with pytest.raises(TimeoutError):
                await st.recv(timeout=0.2)
            assert csms.transactions[1].stop == stop  # processed, answer withheld
            assert (await st.call("StopTransaction", stop, uid="u-2"))[0] == 3
            assert csms.retransmissions("ST1") == 2


async def test_drop_after_processing_then_retransmission_gets_the_stored_answer():
    async with TestCsms() as csms:
        csms.drop_on("StartTransaction", after=True)
        async with station(csms) as ws:
            await ws.send(json.dumps([2, "u-1", "StartTransaction", start16()]))
            with pytest.raises(ConnectionClosed):
                await Station(ws).recv()
        await csms.wait_disconnected("ST1")
        async with station(csms) as ws:
            again = await Station(ws).call("StartTransaction", start16(), uid="u-1")
        assert again[2]["transactionId"] == 1 and len(csms.transactions) == 1
        assert csms.retransmissions("ST1", "StartTransaction") == 1


async def test_slow_answers_do_not_block_csms_calls():
    async with TestCsms() as csms:
        csms.delay_answers(0.3, "Heartbeat", times=1)
        async with station(csms) as ws:
            await ws.send(json.dumps([2, "hb", "Heartbeat", {}]))
            await csms.wait_for("Heartbeat")
            reset = asyncio.create_task(csms.call("ST1", call16.Reset(type="Soft")))
            frame = await Station(ws).recv()
            assert frame[0] == 2 and frame[2] == "Reset" and frame[3] == {"type": "Soft"}
            await ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
            assert await reset == {"status": "Accepted"}
            late = await Station(ws).recv()
            assert late[0] == 3 and late[1] == "hb"
            assert csms.messages(action="Reset", direction="in")[0].kind == "result"


async def test_csms_call_errors_timeouts_and_unknown_station():
    async with TestCsms() as csms:
        with pytest.raises(ConnectionError, match="NOPE"):
            await csms.call("NOPE", "Reset", {"type": "Hard"})
        async with station(csms) as ws:
            await csms.wait_connected("ST1")
            task = asyncio.create_task(csms.call("ST1", "UnlockConnector", {"connectorId": 1}))
            frame = await Station(ws).recv()
            await ws.send(json.dumps([4, frame[1], "NotImplemented", "no", {}]))
            with pytest.raises(CallErrorReply) as err:
                await task
            assert err.value.code == "NotImplemented"
            with pytest.raises(TimeoutError, match="did not answer ClearCache"):
                await csms.call("ST1", "ClearCache", {}, timeout=0.1)


@pytest.mark.ocpp_unchecked
async def test_schema_violations_get_callerror_and_the_guard_sees_them(ocpp_schema_guard):
    guard = SchemaGuard()
    from hil.csms import OBSERVERS

    OBSERVERS.append(guard)
    try:
        async with TestCsms() as csms:
            async with station(csms) as ws:
                reply = await Station(ws).call("StartTransaction", {"connectorId": 1})
                assert reply[0] == 4 and reply[2] == "ProtocolError"
                naive = {"connectorId": 1, "idTag": "A", "meterStart": 0, "timestamp": "2026-03-01T10:00:00"}
                assert (await Station(ws).call("StartTransaction", naive, uid="x"))[0] == 3  # the library lets it pass
                await ws.send("not json")
                await csms.wait_for(kind="invalid")
    finally:
        OBSERVERS.remove(guard)
    assert guard.checked == 3
    assert len(guard.violations) == 3
    assert "at (the payload itself)" in guard.violations[0] and "idTag" in guard.violations[0]
    assert "/timestamp" in guard.violations[1] and "timezone" in guard.violations[1]
    assert "not an OCPP-J frame" in guard.violations[2]


def test_validate_names_the_json_pointer():
    validate("1.6", "StartTransaction", "call", start16())
    validate("2.0.1", "Heartbeat", "result", {"currentTime": "2026-03-01T10:00:00+01:00"})
    with pytest.raises(OcppSchemaError) as err:
        validate("1.6", "StopTransaction", "call", {"transactionId": 1, "meterStop": 1, "timestamp": TS,
                                                    "transactionData": [{"timestamp": TS, "sampledValue": [{"value": 5}]}]})
    assert err.value.pointer == "/transactionData/0/sampledValue/0/value"
    with pytest.raises(OcppSchemaError, match="fractional digits"):
        validate("1.6", "Heartbeat", "result", {"currentTime": "2026-03-01T10:00:00.123456Z"})
    with pytest.raises(OcppSchemaError, match="/status"):
        validate("2.0.1", "ClearCache", "result", {"status": "Maybe"})
    with pytest.raises(ValueError, match="no action"):
        validate("1.6", "TransactionEvent", "call", {})
    # 1.6 decimals: multipleOf 0.1 must pass for 21.4 (a binary float would fail)
    validate("1.6", "SetChargingProfile", "call", {"connectorId": 1, "csChargingProfiles": {
        "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute", "chargingSchedule": {
            "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 21.4}]}}})


async def test_basic_auth_required():
    async with TestCsms(passwords={"ST1": "s3cret-pass"}) as csms:
        with pytest.raises(InvalidStatus) as err:
            async with station(csms, additional_headers={"Authorization": "Basic U1QxOndyb25n"}):  # ST1:wrong
                pass
        assert err.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            async with station(csms):
                pass
        import base64

        good = "Basic " + base64.b64encode(b"ST1:s3cret-pass").decode()
        async with station(csms, additional_headers={"Authorization": good}) as ws:
            assert ws.subprotocol == "ocpp1.6"
        assert csms.auth_failures == ["ST1", "ST1"]


async def test_freeze_leaves_pings_unanswered():
    async with TestCsms() as csms:
        async with station(csms, ping_interval=None) as ws:
            await csms.wait_connected("ST1")
            pong = await ws.ping()
            await asyncio.wait_for(pong, 1)
            csms.freeze("ST1")
            pong = await ws.ping()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pong), 0.3)
            csms.thaw("ST1")
            await asyncio.wait_for(pong, 1)


async def test_wait_for_timeout_says_what_arrived():
    async with TestCsms() as csms:
        async with station(csms) as ws:
            await Station(ws).call("Heartbeat", {})
            with pytest.raises(TimeoutError, match=r"(?s)no call StartTransaction in.*Heartbeat"):
                await csms.wait_for("StartTransaction", timeout=0.1)
            # a message already logged is found at once; count= waits for the n-th
            assert (await csms.wait_for("Heartbeat")).action == "Heartbeat"
            pending = asyncio.create_task(csms.wait_for("Heartbeat", count=2))
            await Station(ws).call("Heartbeat", {})
            assert (await pending).seq == 2


async def test_runs_as_a_process(tmp_path):
    log_file = tmp_path / "frames.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hil.csms", "--port", "0", "--ocpp", "2.0.1", "--log", str(log_file),
        cwd=ROOT, env=env, stdout=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(10):
            line = (await proc.stdout.readline()).decode().strip()
        assert line.startswith("listening on ws://127.0.0.1:")
        url = line.split()[-1]
        async with connect(f"{url}/P1", subprotocols=["ocpp2.0.1"]) as ws:
            reply = await Station(ws).call("Heartbeat", {})
            assert reply[0] == 3 and "currentTime" in reply[2]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    entries = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert [(e["dir"], e["action"]) for e in entries] == [("in", "Heartbeat"), ("out", "Heartbeat")]


def test_process_refuses_bad_arguments():
    out = subprocess.run([sys.executable, "-m", "hil.csms", "--tags", "maybe"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "tag rule 'maybe'" in out.stderr
