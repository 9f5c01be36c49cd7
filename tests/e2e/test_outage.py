"""The uplink cut while three sessions start and stop, one kill -9 of the agent in that
time and a restart (issue 3, "Done when" 2), every part a real process.

The link is cut at a TCP proxy between the agent and the CSMS (the CSMS process keeps
running, so its log and the transactionIds it assigns are one record). The outage lasts
ten minutes of site time: the rig runs its physics at x40 while the agent runs in real
time, so the agent itself sees about fifteen seconds of it. Tags are accepted offline
from the local list the CSMS sent before the cut (LocalAuthorizeOffline, the default).

Sessions, all offline: 1 on c1 and 2 on c2 overlap; 1 ends by unplugging; the agent is
killed with -9 while 2 charges; 2's EV leaves while the agent is down; the agent
restarts (2 ends with PowerLoss at the register the EV left behind); 3 runs on c1.
After the link returns the CSMS must have every transaction message exactly once, in
order, each StopTransaction carrying the transactionId it assigned, and start/stop
energies equal to the emulated registers.
"""

from __future__ import annotations

import json

import pytest

from hil.harness import Harness
from tests.e2e.conftest import local_list, schema_violations, write_site

pytestmark = pytest.mark.e2e

SPEED = 40
OUTAGE_SITE_SECONDS = 600
TAGS = ["TAG-ONE", "TAG-TWO", "TAG-THREE"]


def is_tx_message(m: dict) -> bool:
    return m["dir"] == "in" and m["kind"] == "call" and (
        m["action"] in ("StartTransaction", "StopTransaction")
        or (m["action"] == "MeterValues" and "transactionId" in m["payload"]))


def paused(status: dict, connector: int) -> bool:
    """The agent wrote its charger a setpoint that lets no energy flow."""
    sp = next(c for c in status["connectors"] if c["connector_id"] == connector)["setpoint"]
    return sp is not None and not sp["enabled"]


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


async def test_outage_with_a_kill_delivers_every_message_once_in_order(tmp_path):
    truth: dict[str, float] = {}
    async with Harness(write_site(tmp_path), tmp_path / "w", speed=SPEED) as h:
        await h.wait_message("StatusNotification", match={"connectorId": 2})
        assert await h.csms_call("SendLocalList", local_list(1, TAGS)) == {"status": "Accepted"}
        assert await h.csms_call("ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "1"}) == {"status": "Accepted"}
        mark = await h.log_mark()
        cut_at = (await h.rig("truth"))["elapsed"]
        h.cut_link()
        await h.wait_agent(lambda s: not s["sessions"]["link_online"], what="link seen down")

        truth["start1"] = await charging(h, 1, TAGS[0], "c1")
        truth["start2"] = await charging(h, 2, TAGS[1], "c2")
        await h.unplug("c1")
        truth["stop1"] = await h.energy("c1")
        # ended, and c1 told so: the session shows ended once its end is stored, and the
        # same tick then pauses c1. A kill between the two left c1 enabled (this charger
        # has no watchdog), so session 3's EV drew before its tag was presented and the
        # meterStart (the last poll) was a few Wh below the register read at Preparing
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
        h.restore_link()
        await h.wait_message("StopTransaction", count=3, since=mark, timeout=30)

    messages = h.messages()
    assert schema_violations(messages) == []
    after = [m for m in messages if m["seq"] >= mark]
    before_ids = {m["id"] for m in messages if m["seq"] < mark}
    # exactly once: no copies but a retransmission of what was in flight at the cut (none is tx)
    assert [m for m in after if m["retransmission"] and m["id"] not in before_ids] == []
    tx = [m for m in after if is_tx_message(m)]
    assert len({m["id"] for m in tx}) == len(tx)
    assert len({(m["action"], json.dumps(m["payload"], sort_keys=True)) for m in tx}) == len(tx)

    starts = [m for m in tx if m["action"] == "StartTransaction"]
    stops = [m for m in tx if m["action"] == "StopTransaction"]
    assert [s["payload"]["idTag"] for s in starts] == TAGS
    assert len(stops) == 3
    answers = {m["id"]: m["payload"] for m in messages if m["dir"] == "out" and m["kind"] == "result"}
    assigned = {s["payload"]["idTag"]: answers[s["id"]]["transactionId"] for s in starts}
    assert len(set(assigned.values())) == 3
    stop_of = {s["payload"]["transactionId"]: s for s in stops}
    assert set(stop_of) == set(assigned.values()), "every stop names a transactionId the CSMS assigned"

    # in order: per transaction Start < its MeterValues < Stop, and the sessions as they happened
    pos = {m["id"]: i for i, m in enumerate(tx)}
    for tag in TAGS:
        tid = assigned[tag]
        start = next(s for s in starts if s["payload"]["idTag"] == tag)
        values = [m for m in tx if m["action"] == "MeterValues" and m["payload"]["transactionId"] == tid]
        assert all(pos[start["id"]] < pos[v["id"]] < pos[stop_of[tid]["id"]] for v in values)
        stamps = [v["payload"]["meterValue"][0]["timestamp"] for v in values]
        assert values and stamps == sorted(stamps)
    one, two, three = (stop_of[assigned[t]] for t in TAGS)
    assert pos[one["id"]] < pos[two["id"]] < pos[starts[2]["id"]]

    # reasons and energies: the emulated registers at those moments
    assert (one["payload"]["reason"], two["payload"]["reason"], three["payload"]["reason"]) == (
        "EVDisconnected", "PowerLoss", "EVDisconnected")
    meter_start = {s["payload"]["idTag"]: s["payload"]["meterStart"] for s in starts}
    for got, want in ((meter_start[TAGS[0]], truth["start1"]), (one["payload"]["meterStop"], truth["stop1"]),
                      (meter_start[TAGS[1]], truth["start2"]), (two["payload"]["meterStop"], truth["stop2"]),
                      (meter_start[TAGS[2]], truth["start3"]), (three["payload"]["meterStop"], truth["stop3"])):
        assert abs(got - want) <= 1, (got, want, truth)
    assert truth["start3"] == truth["stop1"] > 0   # the same charger's lifetime register
