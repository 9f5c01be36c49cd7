"""What the 2.0.1 session decides per outbox row and per answer (agent/uplink/v201/
session.py), over the real session manager, settings and a SQLite store in tmp_path."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from agent.auth.types import AuthStatus
from agent.sessions.connector import StatusView
from agent.sessions.events import ConnectorStatus as S
from agent.sessions.events import MeterSampled, SampledValue, StatusChanged, TransactionStarted
from agent.uplink.outbox import Skip
from agent.uplink.v201.session import id_token_info
from tests.unit.test_v201_device_model import adapter

T = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
async def up(tmp_path):
    a = await adapter(tmp_path)
    yield a
    await a.store.close()


async def row(up, event):
    await up.store.record(event)
    rows = await up.store.outbox_head(limit=100)
    return rows[-1]


async def test_a_queued_status_goes_out_only_while_it_is_current_and_new(up):
    c = up.sessions.connectors[1]
    c.recorded = StatusView(S.CHARGING)
    occupied = await row(up, StatusChanged(1, T, S.PREPARING))        # Preparing and Charging: both Occupied
    assert (await up.build(occupied)).connector_status == "Occupied"
    await up.handle(occupied, None, None)
    again = await row(up, StatusChanged(1, T, S.CHARGING))
    with pytest.raises(Skip, match="already reported"):
        await up.build(again)
    stale = await row(up, StatusChanged(1, T, S.AVAILABLE))           # overtaken: the EV is back
    with pytest.raises(Skip, match="no longer the status"):
        await up.build(stale)
    c.recorded = StatusView(S.FAULTED, "OtherError")
    assert (await up.build(await row(up, StatusChanged(1, T, S.FAULTED, "OtherError")))).connector_status == "Faulted"


async def test_retry_policy_covers_transaction_events_only(up):
    await up.settings.change("TransactionMessageAttempts", "4")
    await up.settings.change("TransactionMessageRetryInterval", "7")
    started = await row(up, TransactionStarted(1, T, tx_id="t1", id_tag="A", meter_start_wh=0))
    in_tx = await row(up, MeterSampled(1, T, (SampledValue("Energy.Active.Import.Register", 1.0, "Wh"),), tx_id="t1"))
    outside = await row(up, MeterSampled(0, T, (SampledValue("Energy.Active.Import.Register", 1.0, "Wh"),)))
    status = await row(up, StatusChanged(2, T, S.AVAILABLE))
    assert up.retry_policy(started) == (4, 7.0) and up.retry_policy(in_tx) == (4, 7.0)
    assert up.retry_policy(outside) is None and up.retry_policy(status) is None


def test_id_token_info_becomes_the_shared_auth_result():
    r = id_token_info({"status": "Accepted", "cache_expiry_date_time": "2026-02-01T00:00:00Z",
                       "group_id_token": {"id_token": "FLEET", "type": "Central"}})
    assert r.accepted and r.parent == "FLEET" and r.expiry == datetime(2026, 2, 1, tzinfo=timezone.utc)
    assert id_token_info({"status": "NoCredit"}).status is AuthStatus.NO_CREDIT
    assert id_token_info(None).status is AuthStatus.INVALID


async def test_availability_of_the_station_and_its_evses(up):
    assert up.availability(1) == "Unavailable"        # never read
    up.sessions.connectors[1].recorded = StatusView(S.SUSPENDED_EV)
    assert up.availability(1) == "Occupied"
    assert up.availability(None) == "Available"
    for c in up.sessions.connectors.values():
        c.operative = False
    assert up.availability(None) == "Unavailable"
