"""The agent as one OCPP 2.0.1 station against the test CSMS, in process.

Everything is real but the process boundary: the emulated site (rig: Modbus TCP on
loopback, physics on the system clock), the agent (run_agent: store file, poller,
sessions, uplink), the test CSMS (websockets server + ocpp library, 2.0.1 side). Every
message the CSMS receives is checked against the OCA 2.0.1 schemas (tests/ocpp_schemas.py);
the assertions compare what it received with the rig's ground truth.
"""

from __future__ import annotations

import asyncio
import textwrap
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.config.load import load_config_text
from agent.supervisor import run_agent
from hil.csms.rules import TagRule
from hil.csms.server import CallErrorReply, TestCsms
from hil.model import Ev
from hil.rig import Rig

STATION = "SITE-201"


def site_toml(tmp: Path, csms_url: str, port: int, extra: str = "", uplink: str = "", ocpp: str = "2.0.1") -> str:
    return textwrap.dedent(f"""
        [site]
        name = "uplink 2.0.1 test"
        poll_interval = 0.2
        state_dir = "{tmp}/state"

        [uplink]
        url = "{csms_url}"
        station_id = "{STATION}"
        ocpp = "{ocpp}"
        call_timeout = 3
        backoff_initial = 0.2
        backoff_max = 1
        {uplink}

        [limits]
        fuse_amps = 63

        [[buses]]
        id = "lan"
        type = "tcp"
        host = "127.0.0.1"
        port = {port}
        timeout = 0.5

        [[devices]]
        id = "grid"
        role = "grid_meter"
        profile = "eastron-sdm630"
        bus = "lan"
        unit_id = 2

        [[devices]]
        id = "terra"
        role = "charger"
        profile = "abb-terra-ac"
        bus = "lan"
        unit_id = 1
        connector_id = 1
        max_current = 16
        {extra}
    """)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def site(tmp_path: Path, *, csms: TestCsms, extra: str = "", uplink: str = "", ocpp: str = "2.0.1",
               expect_code: int = 0):
    """The rig and the agent against ``csms`` (started by the caller)."""
    port = free_port()
    config = load_config_text(site_toml(tmp_path, csms.url, port, extra, uplink, ocpp), "site.toml", base_dir=tmp_path)
    rig = Rig(config)
    await rig.start()
    stop = asyncio.Event()
    ready = asyncio.Event()
    box: dict[str, Any] = {}

    def on_ready(rt: Any) -> None:
        box["rt"] = rt
        ready.set()

    agent = asyncio.create_task(run_agent(config, stop=stop, handle_signals=False, ready=on_ready))
    try:
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait({agent, waiter}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
        assert waiter in done, f"agent did not get ready: {agent.result() if agent.done() else 'timeout'}"
        box["agent"] = agent
        yield box["rt"], rig
    finally:
        stop.set()
        code = await asyncio.wait_for(agent, 15)
        await rig.stop()
    assert code == expect_code


@asynccontextmanager
async def csms_201(**kw: Any):
    csms = TestCsms(ocpp="2.0.1", **kw)
    await csms.start()
    try:
        yield csms
    finally:
        await csms.stop()


def adapter(rt: Any) -> Any:
    return rt.uplink.adapters["2.0.1"]


async def wait_until(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def connector_status(csms: TestCsms, status: str, since: int = 0) -> Any:
    return await csms.wait_for("StatusNotification", station=STATION, timeout=10, since=since,
                               predicate=lambda m: m.payload["evseId"] == 1 and m.payload["connectorStatus"] == status)


async def test_boot_with_reason_then_current_statuses(tmp_path):
    async with csms_201() as csms, site(tmp_path, csms=csms) as (rt, rig):
        boot = await csms.wait_for("BootNotification", station=STATION)
        assert boot.payload["reason"] == "PowerUp"
        assert boot.payload["chargingStation"]["vendorName"] == "evsite"
        status = await connector_status(csms, "Available")
        assert status.payload["connectorId"] == 1
        first = csms.messages(STATION, direction="in", kind="call")[0]
        assert first.action == "BootNotification"
        assert rt.uplink.connection.negotiated == "2.0.1"


async def test_full_session_seq_nos_without_gaps_and_energy_matches_the_rig(tmp_path):
    async with csms_201() as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        await rt.settings.change("MeterValueSampleInterval", "1")
        rig.charger("terra").plug(Ev(capacity_kwh=40, soc=0.5, ramp_delay=0.2), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "CARD-1")).accepted
        await csms.wait_for("TransactionEvent", station=STATION, timeout=10,
                            predicate=lambda m: m.payload["transactionInfo"].get("chargingState") == "Charging")
        await csms.wait_for("TransactionEvent", station=STATION, timeout=10,
                            predicate=lambda m: m.payload["triggerReason"] == "MeterValuePeriodic")
        tx_id = rt.sessions.connectors[1].tx.tx_id
        await wait_until(lambda: rig.energy_register("terra") > 1 + csms.transactions[tx_id].start["meterValue"][0]
                         ["sampledValue"][0]["value"])
        since = len(csms.log)
        rig.charger("terra").unplug(rig.site.model.now)
        await wait_until(lambda: csms.transactions[tx_id].stop is not None)
        truth = rig.energy_register("terra")
        await connector_status(csms, "Available", since=since)
    tx = csms.transactions[tx_id]
    assert tx.seq_nos == list(range(len(tx.events)))          # 0..n, no gap, no repeat
    assert [e["eventType"] for e in tx.events][0] == "Started" and tx.events[-1]["eventType"] == "Ended"
    assert all(e["eventType"] == "Updated" for e in tx.events[1:-1])
    start, end = tx.start, tx.stop
    assert start["idToken"] == {"idToken": "CARD-1", "type": "ISO14443"}
    assert start["triggerReason"] in ("Authorized", "CablePluggedIn")
    assert start["evse"] == {"id": 1, "connectorId": 1}
    assert end["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert end["triggerReason"] == "EVCommunicationLost"
    assert not any(e.get("offline") for e in tx.events)
    begin_wh = start["meterValue"][0]["sampledValue"][0]["value"]
    [stop_value] = [s for mv in end["meterValue"] for s in mv["sampledValue"] if s["context"] == "Transaction.End"]
    assert stop_value["measurand"] == "Energy.Active.Import.Register" and stop_value["unitOfMeasure"]["unit"] == "Wh"
    assert stop_value["value"] > begin_wh
    assert abs(stop_value["value"] - truth) <= 1
    states = [e["transactionInfo"].get("chargingState") for e in tx.events if e["triggerReason"] == "ChargingStateChanged"]
    assert "Charging" in states and all(a != b for a, b in zip(states, states[1:]))   # changes only
    assert csms.retransmissions(STATION) == 0
    # 2.0.1 statuses: Occupied while the EV is plugged, nothing 1.6-only
    seen = {m.payload["connectorStatus"] for m in csms.messages(STATION, "StatusNotification", "in", "call")}
    assert seen <= {"Available", "Occupied"} and "Occupied" in seen


def cv(component: str, variable: str, *, evse: dict | None = None, instance: str | None = None) -> dict:
    comp: dict[str, Any] = {"name": component}
    if evse is not None:
        comp["evse"] = evse
    var: dict[str, Any] = {"name": variable}
    if instance is not None:
        var["instance"] = instance
    return {"component": comp, "variable": var}


async def test_get_and_set_variables_per_item_statuses_persisted(tmp_path):
    async with csms_201() as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        got = await csms.call(STATION, "GetVariables", {"getVariableData": [
            cv("OCPPCommCtrlr", "HeartbeatInterval"),
            cv("OCPPCommCtrlr", "MessageAttempts", instance="TransactionEvent"),
            cv("EVSE", "AvailabilityState", evse={"id": 1}),
            cv("Connector", "AvailabilityState", evse={"id": 1, "connectorId": 1}),
            cv("NoSuchCtrlr", "Enabled"),
            cv("TxCtrlr", "NoSuchVariable"),
            cv("EVSE", "AvailabilityState", evse={"id": 9}),
            {**cv("TxCtrlr", "EVConnectionTimeOut"), "attributeType": "Target"},
        ]})
        results = got["getVariableResult"]
        assert [r["attributeStatus"] for r in results] == [
            "Accepted", "Accepted", "Accepted", "Accepted", "UnknownComponent", "UnknownVariable", "UnknownComponent",
            "NotSupportedAttributeType"]
        assert results[0]["attributeValue"] == "300"      # the CSMS's boot interval
        assert results[1]["attributeValue"] == "5"
        assert results[2]["attributeValue"] == "Available" and results[3]["attributeValue"] == "Available"
        assert results[3]["component"] == {"name": "Connector", "evse": {"id": 1, "connectorId": 1}}

        answer = await csms.call(STATION, "SetVariables", {"setVariableData": [
            {**cv("SampledDataCtrlr", "TxUpdatedInterval"), "attributeValue": "30"},
            {**cv("SampledDataCtrlr", "TxUpdatedInterval"), "attributeValue": "soon"},
            {**cv("SmartChargingCtrlr", "ProfileStackLevel"), "attributeValue": "3"},
            {**cv("OCPPCommCtrlr", "WebSocketPingInterval"), "attributeValue": "45"},
            {**cv("SampledDataCtrlr", "TxUpdatedMeasurands"), "attributeValue": "Energy.Active.Import.Register,Voltage"},
            {**cv("SampledDataCtrlr", "TxUpdatedMeasurands"), "attributeValue": "Temperature"},
            {**cv("SecurityCtrlr", "OrganizationName"), "attributeValue": "Example Charging BV"},
            {**cv("Nope", "Nope"), "attributeValue": "1"},
        ]})
        statuses = [r["attributeStatus"] for r in answer["setVariableResult"]]
        assert statuses == ["Accepted", "Rejected", "Rejected", "RebootRequired", "Accepted", "Rejected", "Accepted",
                            "UnknownComponent"]
        why = answer["setVariableResult"][1]["attributeStatusInfo"]
        assert why["reasonCode"] == "InvalidValue" and "soon" in why["additionalInfo"]
        # the shared settings (what 1.6 and the sessions read) changed, and are stored
        assert rt.settings["MeterValueSampleInterval"] == 30
        assert rt.settings["MeterValuesSampledData"] == ("Energy.Active.Import.Register", "Voltage")
        stored = await rt.store.settings_all()
        assert stored["MeterValueSampleInterval"] == "30" and stored["WebSocketPingInterval"] == "45"
        assert (await rt.store.kv_get("v201.variables"))["SecurityCtrlr/OrganizationName"] == "Example Charging BV"
        back = await csms.call(STATION, "GetVariables", {"getVariableData": [cv("SecurityCtrlr", "OrganizationName")]})
        assert back["getVariableResult"][0]["attributeValue"] == "Example Charging BV"


async def test_base_report_is_split_across_notify_reports(tmp_path):
    async with csms_201() as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        answer = await csms.call(STATION, "GetBaseReport", {"requestId": 7, "reportBase": "FullInventory"})
        assert answer == {"status": "Accepted"}
        last = await csms.wait_for("NotifyReport", station=STATION, timeout=10,
                                   predicate=lambda m: m.payload["requestId"] == 7 and not m.payload.get("tbc"))
        parts = csms.messages(STATION, "NotifyReport", "in", "call", predicate=lambda m: m.payload["requestId"] == 7)
        assert len(parts) > 1 and parts[-1] is last
        assert [p.payload["seqNo"] for p in parts] == list(range(len(parts)))
        assert all(p.payload["tbc"] for p in parts[:-1])
        data = [d for p in parts for d in p.payload["reportData"]]
        names = {(d["component"]["name"], d["variable"]["name"]) for d in data}
        assert ("OCPPCommCtrlr", "HeartbeatInterval") in names and ("EVSE", "Power") in names
        power = next(d for d in data if d["variable"]["name"] == "Power")
        assert [a["type"] for a in power["variableAttribute"]] == ["Actual", "MaxSet"]
        assert float(power["variableAttribute"][1]["value"]) == 16 * 230 * 3
        hb = next(d for d in data if d["variable"]["name"] == "HeartbeatInterval")
        assert hb["variableAttribute"][0]["mutability"] == "ReadWrite" and hb["variableCharacteristics"]["unit"] == "s"

        config = await csms.call(STATION, "GetBaseReport", {"requestId": 8, "reportBase": "ConfigurationInventory"})
        assert config == {"status": "Accepted"}
        await csms.wait_for("NotifyReport", station=STATION, timeout=10,
                            predicate=lambda m: m.payload["requestId"] == 8 and not m.payload.get("tbc"))
        cfg = [d for p in csms.messages(STATION, "NotifyReport", "in", "call",
                                        predicate=lambda m: m.payload["requestId"] == 8) for d in p.payload["reportData"]]
        assert cfg and all(d["variableAttribute"][0]["mutability"] != "ReadOnly" for d in cfg)

        custom = await csms.call(STATION, "GetReport", {"requestId": 9, "componentVariable": [
            {"component": {"name": "EVSE"}, "variable": {"name": "AvailabilityState"}}]})
        assert custom == {"status": "Accepted"}
        got = await csms.wait_for("NotifyReport", station=STATION, timeout=10,
                                  predicate=lambda m: m.payload["requestId"] == 9)
        assert [d["component"] for d in got.payload["reportData"]] == [{"name": "EVSE", "evse": {"id": 1}}]
        empty = await csms.call(STATION, "GetReport", {"requestId": 10, "componentVariable": [
            {"component": {"name": "DisplayMessageCtrlr"}}]})
        assert empty == {"status": "EmptyResultSet"}


async def test_outage_events_arrive_once_marked_offline_after_reconnect(tmp_path):
    port = free_port()
    async with csms_201(port=port) as first, site(tmp_path, csms=first) as (rt, rig):
        await connector_status(first, "Available")
        await rt.settings.change("MeterValueSampleInterval", "1")
        ok = await first.call(STATION, "SendLocalList", {"versionNumber": 1, "updateType": "Full", "localAuthorizationList": [
            {"idToken": {"idToken": "CARD-OFF", "type": "ISO14443"}, "idTokenInfo": {"status": "Accepted"}}]})
        assert ok == {"status": "Accepted"}
        await first.stop()
        await wait_until(lambda: not rt.sessions.link_online)
        # a whole session while the CSMS is away, authorized from the local list
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        result = await rt.sessions.present_tag(1, "CARD-OFF")
        assert result.accepted and result.source.value == "local_list"
        await wait_until(lambda: rt.sessions.connectors[1].tx is not None)
        tx_id = rt.sessions.connectors[1].tx.tx_id
        await wait_until(lambda: rig.energy_register("terra") > rt.sessions.connectors[1].tx.meter_start_wh + 2)
        rig.charger("terra").unplug(rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].tx is None)
        truth = rig.energy_register("terra")
        queued = await rt.store.outbox_len()
        assert queued >= 3
        async with csms_201(port=port) as second:
            await second.wait_connected(STATION, timeout=10)
            await wait_until(lambda: tx_id in second.transactions and second.transactions[tx_id].stop, timeout=15)
            tx = second.transactions[tx_id]
            assert tx.seq_nos == list(range(len(tx.events)))
            assert all(e["offline"] is True for e in tx.events)
            assert tx.start["idToken"]["idToken"] == "CARD-OFF"
            end = [s["value"] for mv in tx.stop["meterValue"] for s in mv["sampledValue"] if s["context"] == "Transaction.End"]
            assert abs(end[0] - truth) <= 1
            assert second.retransmissions(STATION) == 0
            assert tx_id not in first.transactions
            await wait_until(lambda: rt.sessions.link_online)


@pytest.mark.parametrize("action, payload, codes", [
    ("FlyToTheMoon", {}, ("NotSupported", "NotImplemented")),
    ("GetVariables", {"getVariableData": "all of them"}, ("TypeConstraintViolation", "FormatViolation")),
    ("RequestStartTransaction", {"idToken": {"idToken": "X", "type": "Central"}},
     ("ProtocolError", "OccurenceConstraintViolation", "FormatViolation")),   # a required field is missing
    ("ChangeAvailability", {"operationalStatus": "Sideways"}, ("PropertyConstraintViolation", "FormatViolation")),
])
async def test_bad_calls_get_callerrors_and_the_link_stays_up(tmp_path, action, payload, codes):
    async with csms_201() as csms, site(tmp_path, csms=csms) as (rt, rig):
        await connector_status(csms, "Available")
        before = await rt.store.settings_all()
        with pytest.raises(CallErrorReply) as err:
            await csms.call(STATION, action, payload)
        assert err.value.code in codes
        ok = await csms.call(STATION, "GetVariables", {"getVariableData": [cv("SecurityCtrlr", "Identity")]})
        assert ok["getVariableResult"][0]["attributeValue"] == STATION
        assert await rt.store.settings_all() == before
        assert csms.connection_count(STATION) == 1


async def test_offer_both_falls_back_to_1_6_and_comes_back_to_2_0_1_on_the_same_store(tmp_path):
    """ocpp = "2.0.1" with offer_both: a CSMS that serves only 1.6 gets the 1.6 adapter; the
    same agent later reaches a 2.0.1 CSMS and speaks 2.0.1, over the same sessions and store."""
    port = free_port()
    only16 = TestCsms(ocpp="1.6", port=port)
    await only16.start()
    try:
        async with site(tmp_path, csms=only16, uplink="offer_both = true") as (rt, rig):
            await only16.wait_for("StatusNotification", station=STATION, timeout=10,
                                  predicate=lambda m: m.payload["connectorId"] == 1)
            assert rt.uplink.connection.negotiated == "1.6"
            await only16.stop()
            async with csms_201(port=port) as csms:
                await connector_status(csms, "Available")
                assert rt.uplink.connection.negotiated == "2.0.1"
                boot = await csms.wait_for("BootNotification", station=STATION)
                assert boot.payload["reason"] == "PowerUp"
    finally:
        await only16.stop()
