"""A full charging session over OCPP 2.0.1 with every part a real process (issue 7,
"Done when" 1; the 2.0.1 twin of test_full_session.py).

The CSMS sends the local authorization list and sets AuthCtrlr.LocalPreAuthorize; the
tag is presented with the real ``evsite authorize`` command and accepted from the list
without asking the CSMS. The EV charges, is unplugged, and the CSMS has one transaction
of TransactionEvents (Started, Updated with meter values, Ended), seqNo 0..n without a
gap, whose energies are the emulated charger's register at those moments.
"""

from __future__ import annotations

import pytest

from hil.harness import Harness
from tests.e2e.conftest import schema_violations
from tests.e2e.test_full_session import evsite_authorize
from tests.e2e.v201_kit import by_transaction, energy, local_list_201, set_variables, transaction_events, write_site_201

pytestmark = pytest.mark.e2e

#: site seconds per real second in the rig (the agent runs in real time)
SPEED = 10
TAG = "CARD-LOCAL-201"


async def test_full_session_over_2_0_1_authorized_from_the_local_list(tmp_path):
    async with Harness(write_site_201(tmp_path), tmp_path / "w", speed=SPEED) as h:
        await h.wait_message("StatusNotification", match={"evseId": 2})   # booted, statuses sent
        boot = await h.wait_message("BootNotification")
        assert boot["version"] == "2.0.1" and boot["payload"]["reason"] == "PowerUp"
        assert await h.csms_call("SendLocalList", local_list_201(1, [TAG])) == {"status": "Accepted"}
        answer = await h.csms_call("SetVariables", set_variables(("AuthCtrlr", "LocalPreAuthorize", "true"),
                                                                 ("SampledDataCtrlr", "TxUpdatedInterval", "1")))
        assert [r["attributeStatus"] for r in answer["setVariableResult"]] == ["Accepted", "Accepted"]
        assert await h.csms_call("GetLocalListVersion") == {"versionNumber": 1}

        await h.plug("c1", capacity_kwh=40, soc=0.5, ramp_delay=0.5)
        await h.wait_agent(lambda s: h.session(s, 1)["status"] == "Preparing", what="cable seen")
        at_start = await h.energy("c1")
        code, out, err = await evsite_authorize(h.config.control_socket, 1, TAG)
        assert code == 0, err
        assert out.strip() == "connector 1: Accepted (local_list), transaction started"

        started = await h.wait_message("TransactionEvent", match={"eventType": "Started"})
        tx_id = started["payload"]["transactionInfo"]["transactionId"]
        await h.wait_message("TransactionEvent", match={"eventType": "Updated", "triggerReason": "MeterValuePeriodic"},
                             count=2)
        await h.wait_agent(lambda s: h.session(s, 1)["energy_wh"] >= at_start + 100, what="energy flowing")
        await h.unplug("c1")
        at_stop = await h.energy("c1")
        ended = await h.wait_message("TransactionEvent", match={"eventType": "Ended"})

    messages = h.messages()
    assert schema_violations(messages) == []
    assert not [m for m in messages if m["action"] == "Authorize"], "LocalPreAuthorize: the list decides, not the CSMS"
    [(only_tx, events)] = by_transaction(transaction_events(messages)).items()
    assert only_tx == tx_id
    payloads = [m["payload"] for m in events]
    assert [p["seqNo"] for p in payloads] == list(range(len(payloads)))        # no gap, no copy
    assert payloads[0]["eventType"] == "Started" and payloads[-1]["eventType"] == "Ended"
    assert all(p["eventType"] == "Updated" for p in payloads[1:-1])
    assert not any(p.get("offline") for p in payloads)

    s, e = started["payload"], ended["payload"]
    assert s["idToken"] == {"idToken": TAG, "type": "ISO14443"} and s["evse"] == {"id": 1, "connectorId": 1}
    [begin] = energy(s, "Transaction.Begin")
    assert abs(begin - at_start) <= 1
    assert e["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    [end] = energy(e, "Transaction.End")
    assert end > begin + 100 and abs(end - at_stop) <= 1                       # the register once the EV is gone
    values = [v for p in payloads[1:-1] for v in energy(p, "Sample.Periodic")]
    assert len(values) >= 2 and values == sorted(values) and begin <= values[0] and values[-1] <= end
    assert not [m for m in messages if m["retransmission"]]
