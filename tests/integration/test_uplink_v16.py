"""The agent as one OCPP 1.6J station against the test CSMS, in process.

Everything is real but the process boundary: the emulated site (rig: Modbus TCP on
loopback, physics on the system clock), the agent (run_agent: store file, poller,
sessions, uplink), the test CSMS (websockets server + ocpp library). The assertions
compare what the CSMS received with the rig's ground truth.
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
from hil.csms.server import TestCsms
from hil.model import Ev
from hil.rig import Rig

STATION = "SITE-1"


def site_toml(tmp: Path, csms_url: str, port: int, extra: str = "") -> str:
    return textwrap.dedent(f"""
        [site]
        name = "uplink test"
        poll_interval = 0.2
        state_dir = "{tmp}/state"

        [uplink]
        url = "{csms_url}"
        station_id = "{STATION}"
        call_timeout = 3
        backoff_initial = 0.2
        backoff_max = 1

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
async def site(tmp_path: Path, *, tags: TagRule | None = None, extra: str = "", csms: TestCsms | None = None,
               clock: Any = None):
    port = free_port()
    own = csms is None
    if own:
        csms = TestCsms(ocpp="1.6", tags=tags or TagRule.accept_all())
        await csms.start()
    text = site_toml(tmp_path, csms.url, port, extra)
    config = load_config_text(text, "site.toml", base_dir=tmp_path)
    rig = Rig(config)
    await rig.start()
    stop = asyncio.Event()
    ready = asyncio.Event()
    box: dict[str, Any] = {}

    def on_ready(rt: Any) -> None:
        box["rt"] = rt
        ready.set()

    kw = {"clock": clock} if clock is not None else {}
    agent = asyncio.create_task(run_agent(config, stop=stop, handle_signals=False, ready=on_ready, **kw))
    try:
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait({agent, waiter}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        assert waiter in done, f"agent did not get ready: {agent.result() if agent.done() else 'timeout'}"
        await csms.wait_connected(STATION, timeout=10)
        rt = box["rt"]
        # booted, and every connector read at least once
        await wait_until(lambda: rt.sessions.link_online
                         and all(c.recorded is not None and c.recorded.status.value != "Faulted"
                                 for c in rt.sessions.connectors.values()), timeout=10)
        yield rt, rig, csms
    finally:
        stop.set()
        code = await asyncio.wait_for(agent, 15)
        await rig.stop()
        if own:
            await csms.stop()
    assert code == 0


async def wait_until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_boot_then_current_statuses(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        boot = await csms.wait_for("BootNotification", station=STATION)
        assert boot.payload["chargePointVendor"] == "evsite"
        status = await csms.wait_for("StatusNotification", station=STATION,
                                     predicate=lambda m: m.payload["connectorId"] == 1)
        assert status.payload["status"] == "Available"
        # nothing but the boot before the boot was answered
        first = csms.messages(STATION, direction="in", kind="call")[0]
        assert first.action == "BootNotification"


async def test_full_session_energy_matches_the_emulated_register(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        await csms.wait_for("StatusNotification", station=STATION, predicate=lambda m: m.payload["connectorId"] == 1)
        await rt.settings.change("MeterValueSampleInterval", "1")
        rig.charger("terra").plug(Ev(capacity_kwh=40, soc=0.5, ramp_delay=0.2), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged, what="plug seen")
        result = await rt.sessions.present_tag(1, "CARD-1")
        assert result.accepted
        start = await csms.wait_for("StartTransaction", station=STATION, timeout=10)
        await csms.wait_for("StatusNotification", station=STATION, timeout=10,
                            predicate=lambda m: m.payload["status"] == "Charging")
        await csms.wait_for("MeterValues", station=STATION, timeout=10, predicate=lambda m: "transactionId" in m.payload)
        await wait_until(lambda: rig.energy_register("terra") > start.payload["meterStart"] + 1, what="energy flows")
        rig.charger("terra").unplug(rig.site.model.now)
        stop = await csms.wait_for("StopTransaction", station=STATION, timeout=10)
        truth = rig.energy_register("terra")
    [tx] = csms.transactions.values()
    assert stop.payload["transactionId"] == tx.key
    assert stop.payload["reason"] == "EVDisconnected"
    assert start.payload["idTag"] == "CARD-1"
    assert stop.payload["meterStop"] > start.payload["meterStart"]
    assert abs(stop.payload["meterStop"] - truth) <= 1   # the register at the stop (no energy after unplug)
    assert all(mv.payload["transactionId"] == tx.key for mv in csms.messages(STATION, "MeterValues", "in", "call")
               if "transactionId" in mv.payload)
    assert csms.retransmissions(STATION) == 0


async def test_without_a_transaction_no_current_is_offered(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        await wait_until(lambda: 1 in rt.poller.setpoints)
        assert rt.poller.setpoints[1].enabled is False
        await csms.wait_for("StatusNotification", station=STATION, predicate=lambda m: m.payload["status"] == "Preparing")
        assert rig.charger("terra").offered() == 0


async def test_refused_tag_starts_nothing(tmp_path):
    async with site(tmp_path, tags=TagRule.reject_prefix("BAD")) as (rt, rig, csms):
        rig.charger("terra").plug(Ev(), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        result = await rt.sessions.present_tag(1, "BAD-1")
        assert not result.accepted
        auth = await csms.wait_for("Authorize", station=STATION)
        assert auth.payload["idTag"] == "BAD-1"
        assert rt.sessions.connectors[1].tx is None
        assert not csms.messages(STATION, "StartTransaction")


async def test_remote_start_and_stop(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        answer = await csms.call(STATION, "RemoteStartTransaction", {"idTag": "REMOTE-1", "connectorId": 1})
        assert answer == {"status": "Accepted"}
        start = await csms.wait_for("StartTransaction", station=STATION)
        await wait_until(lambda: csms.transactions)
        [tx] = csms.transactions.values()
        ours = rt.sessions.connectors[1].tx.tx_id
        async with asyncio.timeout(5):  # the answer's transactionId is stored with the outbox row's removal
            while (await rt.store.transaction(ours)).csms_tx_id is None:
                await asyncio.sleep(0.05)
        answer = await csms.call(STATION, "RemoteStopTransaction", {"transactionId": 999})
        assert answer == {"status": "Rejected"}
        answer = await csms.call(STATION, "RemoteStopTransaction", {"transactionId": tx.key})
        assert answer == {"status": "Accepted"}
        stop = await csms.wait_for("StopTransaction", station=STATION)
        assert stop.payload["reason"] == "Remote" and stop.payload["transactionId"] == tx.key
        assert start.payload["idTag"] == "REMOTE-1"


async def test_configuration_round_trip_and_bad_values(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        got = await csms.call(STATION, "GetConfiguration", {"key": ["HeartbeatInterval", "NoSuchKey"]})
        assert got["unknownKey"] == ["NoSuchKey"]
        assert got["configurationKey"][0]["key"] == "HeartbeatInterval"
        assert (await csms.call(STATION, "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "30"}))["status"] == "Accepted"
        assert (await csms.call(STATION, "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "soon"}))["status"] == "Rejected"
        assert (await csms.call(STATION, "ChangeConfiguration", {"key": "NumberOfConnectors", "value": "5"}))["status"] == "Rejected"
        assert (await csms.call(STATION, "ChangeConfiguration", {"key": "Nope", "value": "1"}))["status"] == "NotSupported"
        assert rt.settings["MeterValueSampleInterval"] == 30
        assert (await rt.store.settings_all())["MeterValueSampleInterval"] == "30"


async def test_unknown_action_and_bad_payload_get_callerrors(tmp_path):
    from hil.csms.server import CallErrorReply
    async with site(tmp_path) as (rt, rig, csms):
        with pytest.raises(CallErrorReply) as err:
            await csms.call(STATION, "FlyToTheMoon", {})
        assert err.value.code in ("NotImplemented", "NotSupported")
        with pytest.raises(CallErrorReply) as err:
            await csms.call(STATION, "ChangeAvailability", {"connectorId": "one", "type": "Inoperative"})
        assert err.value.code in ("TypeConstraintViolation", "FormationViolation")   # 1.6's spelling
        # the connection stays up and still answers
        ok = await csms.call(STATION, "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})
        assert ok == {"status": "Accepted"}
        await csms.wait_for("StatusNotification", station=STATION, predicate=lambda m: m.payload["status"] == "Unavailable")


async def test_frames_that_are_not_ocpp_j(tmp_path):
    async with site(tmp_path) as (rt, rig, csms):
        await csms.send_raw(STATION, "this is not json")
        await csms.send_raw(STATION, '[2, "bad-1", "Reset"]')          # a CALL without payload
        error = await csms.wait_for(None, station=STATION, direction="in", kind="error",
                                    predicate=lambda m: m.unique_id == "bad-1")
        assert error.payload["code"] in ("ProtocolError", "FormationViolation")
        # still connected and answering
        assert (await csms.call(STATION, "GetLocalListVersion", {})) == {"listVersion": 0}
        assert csms.connection_count(STATION) == 1


async def test_status_and_authorize_commands_against_the_running_agent(tmp_path):
    """`evsite authorize` and `evsite status` as processes, over the control socket."""
    import sys

    async with site(tmp_path) as (rt, rig, csms):
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        sock = rt.config.control_socket
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "agent.cli", "authorize", "1", "CLI-TAG",
                                                    "--socket", sock, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out
        assert b"connector 1: Accepted (online), transaction started" in out
        await wait_until(lambda: rt.poller.setpoints.get(1) is not None and rt.poller.setpoints[1].enabled)
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "agent.cli", "status", "--socket", sock,
                                                    stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        text = out.decode()
        assert proc.returncode == 0, text
        assert "load management" in text and "site fuse 63 A" in text and "binds" not in text.split("load management")[0]
        assert "CP1 16 A" in text                     # the connector's setpoint with its reason
        assert "sessions (CSMS link up)" in text and "CLI-\u2026" in text    # tags shown shortened (personal data)
        assert f"uplink {STATION}" in text and "OCPP 1.6" in text
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "agent.cli", "authorize", "7", "X",
                                                    "--socket", sock, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        assert proc.returncode == 1 and b"no connector 7" in err


async def test_tag_read_by_the_chargers_rfid_register_starts_a_session(tmp_path):
    """A Vestel EVC04 reports the card it read in its RFID registers: the agent presents
    it like any tag (authorized without holding up the poll loop)."""
    extra = """
        [[devices]]
        id = "vestel"
        role = "charger"
        profile = "vestel-evc04"
        bus = "lan"
        unit_id = 255
        connector_id = 2
        max_current = 16
    """
    async with site(tmp_path, extra=extra) as (rt, rig, csms):
        rig.charger("vestel").plug(Ev(ramp_delay=0.1, rfid="04A1B2C3"), rig.site.model.now)
        start = await csms.wait_for("StartTransaction", station=STATION, timeout=10)
        assert start.payload["idTag"] == "04A1B2C3" and start.payload["connectorId"] == 2
        auth = csms.messages(STATION, "Authorize", "in", "call")
        assert [m.payload["idTag"] for m in auth] == ["04A1B2C3"]
