"""A transaction open when the agent stopped ends with PowerLoss after the restart, and
the CSMS gets its stop with the transactionId it assigned (same store file, new agent)."""

from __future__ import annotations

from hil.csms.rules import TagRule
from hil.csms.server import TestCsms
from hil.model import Ev
from tests.integration.test_uplink_v16 import STATION, site, wait_until


async def test_open_transaction_ends_with_power_loss_after_restart(tmp_path):
    async with TestCsms(ocpp="1.6", tags=TagRule.accept_all()) as csms:
        async with site(tmp_path, csms=csms) as (rt, rig, _):
            rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
            await wait_until(lambda: rt.sessions.connectors[1].plugged)
            assert (await rt.sessions.present_tag(1, "CARD")).accepted
            await wait_until(lambda: csms.transactions)
            ours = rt.sessions.connectors[1].tx.tx_id
            e0 = rig.energy_register("terra")
            await wait_until(lambda: rig.energy_register("terra") > e0 + 1)
            # leave with the transaction running (the agent stops, the EV stays)
        assert not csms.messages(STATION, "StopTransaction")
        async with site(tmp_path, csms=csms) as (rt, rig, _):
            stop = await csms.wait_for("StopTransaction", station=STATION, timeout=15)
            [tx] = csms.transactions.values()
            assert stop.payload["reason"] == "PowerLoss"
            assert stop.payload["transactionId"] == tx.key
            assert stop.payload["meterStop"] >= tx.start["meterStart"]
            rec = await rt.store.transaction(ours)
            assert rec.state == "ended" and rec.reason == "PowerLoss"
            assert await rt.store.open_transactions() == []
