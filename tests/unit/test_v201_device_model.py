"""The 2.0.1 device model (agent/uplink/v201/device_model.py, variables.py) over the
real settings registry, session manager and a real SQLite store in tmp_path."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from agent.auth import Authorizer
from agent.charging_profiles import ProfileBook
from agent.clock import SimClock
from agent.config.load import load_config_text
from agent.sessions import SessionManager
from agent.settings import Settings
from agent.store import Store
from agent.supervisor import Runtime
from agent.uplink.v201.device_model import DeviceModel, chunks
from agent.uplink.v201.session import V201Uplink
from agent.uplink.v201.variables import VARIABLES, Var, check_value, to_setting, to_v201

CONFIG = textwrap.dedent("""
    [site]
    name = "device model"
    state_dir = "{tmp}/state"
    [uplink]
    url = "ws://127.0.0.1:9/ocpp"
    station_id = "DM-1"
    ocpp = "2.0.1"
    [limits]
    fuse_amps = 32
    [[buses]]
    id = "lan"
    type = "tcp"
    host = "127.0.0.1"
    [[devices]]
    id = "c1"
    role = "charger"
    profile = "abb-terra-ac"
    bus = "lan"
    unit_id = 1
    connector_id = 1
    max_current = 16
    [[devices]]
    id = "c2"
    role = "charger"
    profile = "abb-terra-ac"
    bus = "lan"
    unit_id = 2
    connector_id = 2
    phases = 1
    wiring = ["L2"]
    max_current = 32
""")


async def adapter(tmp_path: Path) -> V201Uplink:
    config = load_config_text(CONFIG.format(tmp=tmp_path), "site.toml", base_dir=tmp_path)
    clock = SimClock()
    rt = Runtime(config=config, clock=clock, stop=asyncio.Event(), started_mono=0.0, started_at=clock.now())
    rt.store = await Store.open(tmp_path / "store.db", clock)
    rt.settings = await Settings.load(rt.store, config)
    rt.authorizer = Authorizer(rt.store, policy=rt.settings.auth_policy, clock=clock)
    rt.sessions = SessionManager(config, rt.store, clock, rt.authorizer, rt.settings)
    rt.profiles = await ProfileBook(rt.store, rt.settings).load()
    up = V201Uplink(rt)
    await up.model.load()
    return up


@pytest.fixture
async def up(tmp_path):
    a = await adapter(tmp_path)
    yield a
    await a.store.close()


def comp(name: str, evse: dict | None = None) -> dict:
    return {"name": name, **({"evse": evse} if evse else {})}


def test_every_variable_is_named_once_and_well_formed():
    keys = [(v.component, v.name, v.instance) for v in VARIABLES]
    assert len(keys) == len(set(keys))
    for v in VARIABLES:
        assert sum(x is not None for x in (v.setting, v.live)) <= 1, v
        assert v.setting or v.live or v.default is not None, f"{v.key} has no value source"
        assert v.scope in ("station", "evse", "connector")
        assert v.mutability in ("ReadOnly", "ReadWrite", "WriteOnly")


@pytest.mark.parametrize("var, text, want", [
    (Var("C", "b", data_type="boolean"), "TRUE", "true"),
    (Var("C", "i", data_type="integer", min=0, max=10), " 7 ", "7"),
    (Var("C", "m", data_type="MemberList", values=("A", "W")), "A, W", "A,W"),
    (Var("C", "o", data_type="OptionList", values=("LRU",)), "LRU", "LRU"),
    (Var("C", "s"), "text", "text"),
])
def test_check_value_accepts_and_normalises(var, text, want):
    assert check_value(var, text) == want


@pytest.mark.parametrize("var, text, why", [
    (Var("C", "b", data_type="boolean"), "yes", "true or false"),
    (Var("C", "i", data_type="integer", min=0, max=10), "11", "<= 10"),
    (Var("C", "i", data_type="integer", min=1), "0", ">= 1"),
    (Var("C", "i", data_type="integer"), "1.5", "an integer"),
    (Var("C", "m", data_type="MemberList", values=("A", "W")), "A,V", "not supported: V"),
    (Var("C", "m", data_type="MemberList", values=("A", "W")), "A,A", "twice"),
    (Var("C", "o", data_type="OptionList", values=("LRU",)), "FIFO", "not one of"),
    (Var("C", "s"), "x" * 501, "ConfigurationValueSize"),
])
def test_check_value_names_what_is_wrong(var, text, why):
    with pytest.raises(ValueError, match=why):
        check_value(var, text)


def test_rate_unit_words_are_translated_both_ways():
    rate = next(v for v in VARIABLES if v.name == "RateUnit")
    assert to_v201(rate, "Current,Power") == "A,W"
    assert to_setting(rate, "W") == "Power"


async def test_resolve_addresses_station_evse_and_connector_components(up):
    m = up.model
    assert m.resolve(comp("OCPPCommCtrlr"), {"name": "HeartbeatInterval"}).var.setting == "HeartbeatInterval"
    assert m.resolve(comp("EVSE", {"id": 2}), {"name": "Power"}).evse == 2
    assert m.resolve(comp("Connector", {"id": 1, "connector_id": 1}), {"name": "AvailabilityState"}).evse == 1
    assert m.resolve(comp("OCPPCommCtrlr", {"id": 1}), {"name": "HeartbeatInterval"}) == "UnknownComponent"
    assert m.resolve(comp("EVSE", {"id": 3}), {"name": "Power"}) == "UnknownComponent"
    assert m.resolve(comp("EVSE"), {"name": "Power"}) == "UnknownComponent"
    assert m.resolve(comp("Connector", {"id": 1, "connector_id": 2}), {"name": "Available"}) == "UnknownComponent"
    assert m.resolve({"name": "TxCtrlr", "instance": "2"}, {"name": "TxStartPoint"}) == "UnknownComponent"
    assert m.resolve(comp("OCPPCommCtrlr"), {"name": "MessageAttempts"}) == "UnknownVariable"   # instance missing
    assert m.resolve(comp("OCPPCommCtrlr"), {"name": "MessageAttempts", "instance": "TransactionEvent"}) != "UnknownVariable"


async def test_live_values_come_from_the_config_and_the_parts(up):
    m = up.model
    max_power = await m.get({"component": comp("EVSE", {"id": 2}), "variable": {"name": "Power"},
                             "attribute_type": "MaxSet"})
    assert max_power["attribute_status"] == "Accepted" and float(max_power["attribute_value"]) == 32 * 230 * 1
    phases = await m.get({"component": comp("EVSE", {"id": 2}), "variable": {"name": "SupplyPhases"}})
    assert phases["attribute_value"] == "1"
    ident = await m.get({"component": comp("SecurityCtrlr"), "variable": {"name": "Identity"}})
    assert ident["attribute_value"] == "DM-1"
    clock = await m.get({"component": comp("ClockCtrlr"), "variable": {"name": "DateTime"}})
    assert clock["attribute_value"] == "2026-01-01T00:00:00.000Z"
    assert (await m.get({"component": comp("EVSE", {"id": 1}), "variable": {"name": "AvailabilityState"}})
            )["attribute_value"] == "Unavailable"   # never read: not available for charging


async def test_set_mapped_and_own_variables_survive_a_restart(tmp_path):
    up = await adapter(tmp_path)
    m = up.model
    ok = await m.set({"component": comp("TxCtrlr"), "variable": {"name": "StopTxOnInvalidId"}, "attribute_value": "false"})
    assert ok["attribute_status"] == "Accepted"
    own = await m.set({"component": comp("SecurityCtrlr"), "variable": {"name": "OrganizationName"},
                       "attribute_value": "ACME"})
    assert own["attribute_status"] == "Accepted"
    assert up.settings["StopTransactionOnInvalidId"] is False
    await up.store.close()

    again = await adapter(tmp_path)   # a new process on the same store file
    try:
        assert again.settings["StopTransactionOnInvalidId"] is False
        got = await again.model.get({"component": comp("SecurityCtrlr"), "variable": {"name": "OrganizationName"}})
        assert got["attribute_value"] == "ACME"
    finally:
        await again.store.close()


async def test_refused_sets_leave_stored_values_alone(up):
    m = up.model
    before = await up.store.settings_all()
    ro = await m.set({"component": comp("TxCtrlr"), "variable": {"name": "TxStartPoint"}, "attribute_value": "EVConnected"})
    assert ro["attribute_status"] == "Rejected" and ro["attribute_status_info"]["reason_code"] == "ReadOnly"
    bad = await m.set({"component": comp("OCPPCommCtrlr"), "variable": {"name": "HeartbeatInterval"},
                       "attribute_value": "-5"})
    assert bad["attribute_status"] == "Rejected" and ">= 0" in bad["attribute_status_info"]["additional_info"]
    maxset = await m.set({"component": comp("EVSE", {"id": 1}), "variable": {"name": "Power"},
                          "attribute_type": "MaxSet", "attribute_value": "1000"})
    assert maxset["attribute_status"] == "Rejected"
    target = await m.set({"component": comp("EVSE", {"id": 1}), "variable": {"name": "Power"},
                          "attribute_type": "Target", "attribute_value": "1000"})
    assert target["attribute_status"] == "NotSupportedAttributeType"
    assert await up.store.settings_all() == before
    assert await up.store.kv_get("v201.variables") is None


async def test_reboot_required_for_the_ping_interval(up):
    got = await up.model.set({"component": comp("OCPPCommCtrlr"), "variable": {"name": "WebSocketPingInterval"},
                              "attribute_value": "120"})
    assert got["attribute_status"] == "RebootRequired"
    assert (await up.store.settings_all())["WebSocketPingInterval"] == "120"


async def test_reports(up):
    m = up.model
    full = await m.base_report("FullInventory")
    evse_power = [d for d in full if d["variable"]["name"] == "Power"]
    assert [d["component"]["evse"]["id"] for d in evse_power] == [1, 2]
    summary = await m.base_report("SummaryInventory")
    assert summary and {d["variable"]["name"] for d in summary} <= {"AvailabilityState", "Available", "Problem"}
    config = await m.base_report("ConfigurationInventory")
    assert all(d["variableAttribute"][0]["mutability"] == "ReadWrite" for d in config)
    enabled = await m.custom_report(None, ["Enabled"])
    assert {d["component"]["name"] for d in enabled} >= {"AuthCtrlr", "SmartChargingCtrlr", "SampledDataCtrlr"}
    assert "EVSE" not in {d["component"]["name"] for d in enabled}
    one = await m.custom_report([{"component": {"name": "Connector", "evse": {"id": 2, "connector_id": 1}},
                                  "variable": {"name": "Available"}}], None)
    assert [d["component"] for d in one] == [{"name": "Connector", "evse": {"id": 2, "connectorId": 1}}]
    assert await m.custom_report([{"component": {"name": "ChargingStation"}}], ["Problem"]) == []


def test_chunks_mark_all_but_the_last_to_be_continued():
    items = [{"n": i} for i in range(45)]
    parts = chunks(items, 20)
    assert [len(p) for p, _ in parts] == [20, 20, 5]
    assert [tbc for _, tbc in parts] == [True, True, False]
    assert [x for p, _ in parts for x in p] == items
    assert chunks([], 20) == [([], False)]
    with pytest.raises(ValueError, match=">= 1"):
        chunks(items, 0)
