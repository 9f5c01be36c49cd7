"""The uplink cut while three sessions start and stop, one kill -9 of the agent in that
time and a restart, over OCPP 2.0.1 with every part a real process (issue 7, "Done when"
1; the 2.0.1 twin of test_outage.py).

The link is cut at the harness's TCP proxy (the CSMS process keeps running: one log).
Tags are accepted offline from the local list the CSMS sent before the cut. Sessions,
all offline: 1 on c1 and 2 on c2 overlap; 1 ends by unplugging; the agent is killed
with -9 while 2 charges; 2's EV leaves while the agent is down; the agent restarts
(2 ends with stoppedReason PowerLoss at the register the EV left behind); 3 runs on c1.

After the link returns the CSMS must have every TransactionEvent exactly once: per
transaction seqNo 0..n without a gap, in seqNo order, every event marked offline=true
(they all happened during the outage), the transactions in the order they happened,
and begin/end energies equal to the emulated registers.
"""

from __future__ import annotations

import json

import pytest

from hil.harness import Harness
from tests.e2e.conftest import schema_violations
from tests.e2e.test_outage import paused
from tests.e2e.v201_kit import by_transaction, energy, local_list_201, set_variables, transaction_events, write_site_201

pytestmark = pytest.mark.e2e

SPEED = 40
OUTAGE_SITE_SECONDS = 600
TAGS = ["TAG-201-ONE", "TAG-201-TWO", "TAG-201-THREE"]


async def charging(h: Harness, connector: int, tag: str, device: str) -> float:
    """Plug an EV, present ``tag`` (offline: the local list decides), wait until energy
    flows; returns the register before the session."""
    await h.plug(device, capacity_kwh=60, soc=0.3, ramp_delay=1)
    await h.wait_agent(lambda s: h.session(s, connector)["status"] == "Preparing", what=f"cable at {connector}")
    before = await h.energy(device)
    answer = await h.authorize(connector, tag)
    assert answer == {"status": "Accepted", "source": "local_list", "effect": "transaction started"}
    await h.wait_agent(lambda s: (h.session(s, connector)["energy_wh"] or 0) >= before + 400, what=f"energy at {connector}")
    return before


async def test_outage_with_a_kill_delivers_every_transaction_event_once_in_seq_order(tmp_path):
    truth: dict[str, float] = {}
    async with Harness(write_site_201(tmp_path), tmp_path / "w", speed=SPEED) as h:
        await h.wait_message("StatusNotification", match={"evseId": 2})
        assert await h.csms_call("SendLocalList", local_list_201(1, TAGS)) == {"status": "Accepted"}
        answer = await h.csms_call("SetVariables", set_variables(("SampledDataCtrlr", "TxUpdatedInterval", "1")))
        assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
        mark = await h.log_mark()
        cut_at = (await h.rig("truth"))["elapsed"]
        h.cut_link()
        await h.wait_agent(lambda s: not s["sessions"]["link_online"], what="link seen down")

        truth["start1"] = await charging(h, 1, TAGS[0], "c1")
        truth["start2"] = await charging(h, 2, TAGS[1], "c2")
        await h.unplug("c1")
        truth["stop1"] = await h.energy("c1")
        # ended and c1 paused (see test_outage.py: a kill between the two leaves c1 enabled)
        await h.wait_agent(lambda s: h.session(s, 1)["tx_id"] is None and paused(s, 1), what="session 1 ended, c1 paused")

        assert await h.kill_agent() == -9               # session 2 is charging
        await h.unplug("c2")                             # its EV leaves while nobody watches
        truth["stop2"] = await h.energy("c2")
        await h.start_agent()
        truth["start3"] = await charging(h, 1, TAGS[2], "c1")   # the list survived the kill
        await h.unplug("c1")
        truth["stop3"] = await h.energy("c1")
        await h.wait_agent(lambda s: h.session(s, 1)["tx_id"] is None, what="session 3 ended")

        # ten minutes of site time without a link (on the rig's clock), then it comes back
        await h.rig("wait_until", elapsed=cut_at + OUTAGE_SITE_SECONDS)
        assert [m for m in transaction_events(h.messages(), mark)] == []   # nothing got through the cut
        h.restore_link()
        await h.wait_message("TransactionEvent", match={"eventType": "Ended"}, count=3, since=mark, timeout=30)

    messages = h.messages()
    assert schema_violations(messages) == []
    events = transaction_events(messages, mark)
    # exactly once: no message id twice, no payload twice, no retransmission
    assert len({m["id"] for m in events}) == len(events)
    assert len({json.dumps(m["payload"], sort_keys=True) for m in events}) == len(events)
    assert not [m for m in events if m["retransmission"]]
    assert all(m["payload"].get("offline") is True for m in events), "every event happened during the outage"

    per_tx = by_transaction(events)
    assert len(per_tx) == 3
    starts = {}
    for tx_id, tx_events in per_tx.items():
        payloads = [m["payload"] for m in tx_events]
        assert [p["seqNo"] for p in payloads] == list(range(len(payloads))), f"{tx_id}: seqNo with a gap or out of order"
        assert payloads[0]["eventType"] == "Started" and payloads[-1]["eventType"] == "Ended"
        assert [p["eventType"] for p in payloads].count("Ended") == 1
        assert any(energy(p, "Sample.Periodic") for p in payloads[1:-1]), f"{tx_id}: no meter values"
        starts[payloads[0]["idToken"]["idToken"]] = tx_events
    assert set(starts) == set(TAGS)

    # the sessions in the order they happened: 1 ended before 2 (killed), 2 before 3 started
    pos = {m["id"]: i for i, m in enumerate(events)}
    one, two, three = (starts[t] for t in TAGS)
    assert pos[one[0]["id"]] < pos[two[0]["id"]]
    assert pos[one[-1]["id"]] < pos[two[-1]["id"]] < pos[three[0]["id"]]

    # reasons and energies: the emulated registers at those moments
    reasons = [s[-1]["payload"]["transactionInfo"]["stoppedReason"] for s in (one, two, three)]
    assert reasons == ["EVDisconnected", "PowerLoss", "EVDisconnected"]
    for n, tx_events in enumerate((one, two, three), start=1):
        [begin] = energy(tx_events[0]["payload"], "Transaction.Begin")
        [end] = energy(tx_events[-1]["payload"], "Transaction.End")
        assert abs(begin - truth[f"start{n}"]) <= 1 and abs(end - truth[f"stop{n}"]) <= 1, (n, begin, end, truth)
        samples = [v for m in tx_events[1:-1] for v in energy(m["payload"], "Sample.Periodic")]
        assert samples == sorted(samples) and begin <= samples[0] and samples[-1] <= end
    assert truth["start3"] == truth["stop1"] > 0   # the same charger's lifetime register
