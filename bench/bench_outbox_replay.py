"""After an outage: 10,000 queued transaction messages replayed to the CSMS.

evsite: the real 1.6 adapter and outbox loop over a store file holding 2,500
transactions (Start, two MeterValues, Stop each), delivering to the test CSMS until the
outbox is empty; every answer is committed to SQLite (synchronous=FULL) before the next
message goes. Floor: a bare ``ocpp`` 1.6 client sending the same 10,000 messages, one
CALL at a time, to the same CSMS in the same run, keeping nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import websockets
from ocpp.v16 import ChargePoint, call

from agent.auth import Authorizer
from agent.charging_profiles import ProfileBook
from agent.clock import SystemClock
from agent.config.load import load_config_text
from agent.sessions import SessionManager
from agent.sessions.events import MeterSampled, SampledValue, StopReason, TransactionEnded, TransactionStarted
from agent.settings import Settings
from agent.store import Store
from agent.timefmt import utc_text
from agent.uplink.connection import UplinkConnection, UplinkOptions
from agent.uplink.service import Uplink
from hil.csms.server import TestCsms

QUICK = os.environ.get("BENCH_QUICK") == "1"
TRANSACTIONS = 250 if QUICK else 2_500
MESSAGES = TRANSACTIONS * 4

CONFIG = """
[site]
state_dir = "{dir}"
[uplink]
url = "{url}"
station_id = "BENCH-EVSITE"
[limits]
fuse_amps = 63
[[buses]]
id = "lan"
type = "tcp"
host = "127.0.0.1"
port = 1502
[[devices]]
id = "cp"
role = "charger"
profile = "abb-terra-ac"
bus = "lan"
unit_id = 1
connector_id = 1
"""


def events():
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    wh = 1000
    for _ in range(TRANSACTIONS):
        tx = str(uuid.uuid4())
        yield TransactionStarted(1, t, tx_id=tx, id_tag="BENCH", meter_start_wh=wh)
        for k in (1, 2):
            yield MeterSampled(1, t + timedelta(minutes=k), (SampledValue("Energy.Active.Import.Register", wh + 100 * k, "Wh"),),
                               tx_id=tx)
        wh += 300
        yield TransactionEnded(1, t + timedelta(minutes=3), tx_id=tx, meter_stop_wh=wh, reason=StopReason.LOCAL)
        t += timedelta(minutes=5)


async def evsite_replay(csms: TestCsms, workdir: Path) -> float:
    clock = SystemClock()
    config = load_config_text(CONFIG.format(dir=workdir, url=csms.url), "bench.toml", base_dir=workdir)
    path = workdir / "bench.db"
    store = await Store.open(path, clock, synchronous="NORMAL", outbox_max=MESSAGES + 100)
    for ev in events():
        await store.record(ev)
    await store.close()
    store = await Store.open(path, clock, synchronous="FULL", outbox_max=MESSAGES + 100)
    settings = await Settings.load(store, config)
    authorizer = Authorizer(store, policy=settings.auth_policy, clock=clock, is_online=lambda: False)
    sessions = SessionManager(config, store, clock, authorizer, settings)
    rt = SimpleNamespace(config=config, clock=clock, store=store, sessions=sessions, settings=settings,
                         authorizer=authorizer, profiles=await ProfileBook(store, settings).load(), energy=None,
                         poller=None, control=None, request_restart=lambda reason: None)
    connection = UplinkConnection(UplinkOptions.from_config(config.uplink, versions=("1.6",)), clock=clock)
    uplink = Uplink(rt, connection)
    t0 = time.perf_counter()
    runner = asyncio.create_task(uplink.run())
    try:
        while await store.outbox_len():
            await asyncio.sleep(0.01)
        took = time.perf_counter() - t0
    finally:
        connection.stop()
        await asyncio.wait_for(runner, 10)
        await store.close()
    return MESSAGES / took


async def bare_replay(csms: TestCsms) -> float:
    async with websockets.connect(f"{csms.url}/BENCH-BARE", subprotocols=["ocpp1.6"]) as ws:
        cp = ChargePoint("BENCH-BARE", ws)
        reader = asyncio.create_task(cp.start())
        try:
            await cp.call(call.BootNotification(charge_point_model="bare", charge_point_vendor="bench"))
            t0 = time.perf_counter()
            tx_id = 0
            for ev in events():
                if isinstance(ev, TransactionStarted):
                    r = await cp.call(call.StartTransaction(connector_id=1, id_tag=ev.id_tag, meter_start=ev.meter_start_wh,
                                                            timestamp=utc_text(ev.at)))
                    tx_id = r.transaction_id
                elif isinstance(ev, MeterSampled):
                    await cp.call(call.MeterValues(connector_id=1, transaction_id=tx_id, meter_value=[{
                        "timestamp": utc_text(ev.at),
                        "sampledValue": [{"value": str(int(v.value)), "measurand": v.measurand, "unit": "Wh",
                                          "context": ev.context, "location": v.location} for v in ev.values]}]))
                else:
                    await cp.call(call.StopTransaction(meter_stop=ev.meter_stop_wh, timestamp=utc_text(ev.at),
                                                       transaction_id=tx_id, reason="Local"))
            return MESSAGES / (time.perf_counter() - t0)
        finally:
            reader.cancel()


async def main() -> None:
    import logging
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as d:
        async with TestCsms(ocpp="1.6") as csms:
            floor = await bare_replay(csms)
            value = await evsite_replay(csms, Path(d))
            delivered = sum(1 for m in csms.messages("BENCH-EVSITE", "StopTransaction", "in", "call"))
    print(json.dumps({"figure": f"outbox replay, {MESSAGES:,} tx messages (1.6)", "value": round(value, 1),
                      "floor": round(floor, 1), "unit": "msg/s", "higher_is_better": True,
                      "note": f"{delivered} StopTransactions delivered; floor = bare ocpp client, no store"}))
    if delivered != TRANSACTIONS:
        raise SystemExit(f"only {delivered} of {TRANSACTIONS} transactions delivered")


if __name__ == "__main__":
    asyncio.run(main())
