"""Meter history: grid and chargers sampled into the store at the configured interval,
locally (no outbox row), and a store that fails does not stop the poll loop."""

from __future__ import annotations

from datetime import datetime, timezone
from types import MappingProxyType

from agent.clock import SimClock
from agent.site.recorder import SampleRecorder
from agent.site.state import DeviceInfo, SiteState
from agent.store import Store, StoreError
from drivers.contract import ChargerReading, CpState, DeviceHealth, Measurement

T = datetime(2026, 3, 1, tzinfo=timezone.utc)


def state(mono: float, grid_stale: bool = False) -> SiteState:
    grid = Measurement(timestamp=T, monotonic=mono, power_total=4000.0, energy_import_wh=5e6, current=(5.0, 6.0, 7.0))
    cp = ChargerReading(timestamp=T, monotonic=mono, state=CpState.C, energy_wh=1234.0, power_total=3600.0)
    return SiteState(taken_at=T, monotonic=mono, tick=1,
                     health={"grid": DeviceHealth("grid", grid, T, mono, stale=grid_stale),
                             "cp": DeviceHealth("cp", cp, T, mono, stale=False)},
                     devices={"grid": DeviceInfo("grid", "grid_meter", "eastron-sdm630", "lan", 1),
                              "cp": DeviceInfo("cp", "charger", "abb-terra-ac", "lan", 2, connector_id=1)})


async def test_samples_at_the_interval_without_outbox(tmp_path):
    store = await Store.open(tmp_path / "s.db", SimClock(T))
    try:
        rec = SampleRecorder(store, interval=60, retention_days=35)
        await rec.on_site_state(state(0.0))
        await rec.on_site_state(state(30.0))      # inside the interval: nothing
        await rec.on_site_state(state(61.0, grid_stale=True))   # a stale device is not sampled
        assert rec.recorded == 3
        assert await store.outbox_len() == 0
        assert (await store.stats())["rows"]["events"] == 3
    finally:
        await store.close()


class BrokenStore:
    async def record(self, *a, **kw):
        raise StoreError("disk full")

    async def prune(self, days):
        return 0


async def test_failing_store_is_logged_once_and_never_raises(caplog):
    rec = SampleRecorder(BrokenStore(), interval=1, retention_days=35)
    for i in range(3):
        await rec.on_site_state(state(float(i * 2)))
    assert sum("meter history not recorded" in r.message for r in caplog.records) == 1
