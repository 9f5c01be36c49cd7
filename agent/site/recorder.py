"""Meter history in the store: the grid meter and every charger, every few minutes.

Sessions record what the CSMS must get (transaction samples, through the outbox); this
records what the site owner and diagnostics want to look back on, locally only: a
sample per device every ``store.sample_interval`` seconds, pruned after
``store.sample_retention_days``. A failing store write is logged once per episode and
never stops the poll loop (charging control comes first).
"""

from __future__ import annotations

import logging
from typing import Any

from agent.sessions.connector import sampled_values
from agent.sessions.events import MeterSampled
from agent.site.state import SiteState

log = logging.getLogger("evsite.recorder")

MEASURANDS = ("Energy.Active.Import.Register", "Power.Active.Import", "Current.Import", "Voltage")
PRUNE_EVERY = 6 * 3600.0


class SampleRecorder:
    def __init__(self, store: Any, *, interval: float, retention_days: int) -> None:
        self.store = store
        self.interval = interval
        self.retention_days = retention_days
        self._last: float | None = None
        self._last_prune: float | None = None
        self._failing = False
        self.recorded = 0

    async def on_site_state(self, state: SiteState) -> None:
        from agent.store import StoreError

        if self._last is not None and state.monotonic - self._last < self.interval:
            return
        self._last = state.monotonic
        try:
            for info in state.devices.values():
                h = state.health.get(info.id)
                if h is None or h.stale or h.last_good is None or info.role == "sub_meter":
                    continue
                cid = 0 if info.role == "grid_meter" else info.connector_id
                if cid is None:
                    continue
                values = sampled_values(h.last_good, MEASURANDS, location="Inlet" if cid == 0 else "Outlet")
                if values:
                    await self.store.record(MeterSampled(cid, state.taken_at, values, "Sample.Periodic"), outbox=False)
                    self.recorded += 1
            if self._last_prune is None or state.monotonic - self._last_prune >= PRUNE_EVERY:
                self._last_prune = state.monotonic
                gone = await self.store.prune(self.retention_days)
                if gone:
                    log.info("pruned %d meter samples older than %d days", gone, self.retention_days)
            if self._failing:
                log.warning("meter history: store writes work again")
                self._failing = False
        except StoreError as exc:
            if not self._failing:
                log.error("meter history not recorded (charging goes on): %s", exc)
                self._failing = True
