"""A full charging session with every part a real process (issue 3, "Done when" 1).

The CSMS sends the local authorization list and LocalPreAuthorize=true; the tag is then
presented with the real ``evsite authorize`` command and accepted from the local list,
without asking the CSMS. The EV charges, is unplugged, and the CSMS has Start,
MeterValues and Stop whose energies are the emulated charger's register at those
moments.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from hil.harness import Harness
from tests.e2e.conftest import energy_register, local_list, schema_violations, write_site

pytestmark = pytest.mark.e2e

#: site seconds per real second in the rig (the agent runs in real time)
SPEED = 10
TAG = "CARD-LOCAL-1"


async def evsite_authorize(socket: str, connector: int, tag: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "authorize", str(connector), tag, "--socket", socket,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def test_full_session_authorized_from_the_local_list(tmp_path):
    async with Harness(write_site(tmp_path), tmp_path / "w", speed=SPEED) as h:
        await h.wait_message("StatusNotification", match={"connectorId": 2})   # booted, statuses sent
        assert await h.csms_call("SendLocalList", local_list(1, [TAG])) == {"status": "Accepted"}
        for key, value in (("LocalPreAuthorize", "true"), ("MeterValueSampleInterval", "1")):
            assert await h.csms_call("ChangeConfiguration", {"key": key, "value": value}) == {"status": "Accepted"}
        assert await h.csms_call("GetLocalListVersion") == {"listVersion": 1}

        await h.plug("c1", capacity_kwh=40, soc=0.5, ramp_delay=0.5)
        await h.wait_agent(lambda s: h.session(s, 1)["status"] == "Preparing", what="cable seen")
        at_start = await h.energy("c1")
        code, out, err = await evsite_authorize(h.config.control_socket, 1, TAG)
        assert code == 0, err
        assert out.strip() == "connector 1: Accepted (local_list), transaction started"

        start = await h.wait_message("StartTransaction")
        answer = await h.wait_message("StartTransaction", direction="out", kind="result")
        tx_id = answer["payload"]["transactionId"]
        await h.wait_message("MeterValues", match={"transactionId": tx_id}, count=2)
        await h.wait_agent(lambda s: h.session(s, 1)["energy_wh"] >= at_start + 100, what="energy flowing")
        await h.unplug("c1")
        at_stop = await h.energy("c1")
        stop = await h.wait_message("StopTransaction")

    messages = h.messages()
    assert schema_violations(messages) == []
    assert not [m for m in messages if m["action"] == "Authorize"], "LocalPreAuthorize: the list decides, not the CSMS"
    assert start["payload"]["idTag"] == TAG and start["payload"]["connectorId"] == 1
    assert abs(start["payload"]["meterStart"] - at_start) <= 1
    assert stop["payload"]["transactionId"] == tx_id
    assert stop["payload"]["reason"] == "EVDisconnected"
    assert stop["payload"]["meterStop"] > start["payload"]["meterStart"] + 100
    assert abs(stop["payload"]["meterStop"] - at_stop) <= 1   # the register once the EV is gone
    values = [v for m in messages if m["action"] == "MeterValues" and m["dir"] == "in"
              and m["payload"].get("transactionId") == tx_id for v in energy_register(m["payload"])]
    assert len(values) >= 2 and values == sorted(values)
    assert start["payload"]["meterStart"] <= values[0] and values[-1] <= stop["payload"]["meterStop"]
    assert not [m for m in messages if m["retransmission"]]
