"""The poll loop: the site's heartbeat.

Every ``interval`` seconds of the monotonic clock it reads every device at once (an
RS-485 bus serializes its own devices inside the driver; separate buses and TCP devices
really run in parallel), folds the results into per-device health, publishes one
immutable ``SiteState`` to its consumers in order, then writes the chargers' setpoints.

Choices that matter on a real site:

- Ticks are scheduled by deadline (start + n * interval), so the loop does not drift by
  the time each tick takes; a tick that overruns skips the deadlines it missed instead of
  bursting reads at a bus that is already slow. The first overrun is logged, and the
  return to on-time ticks (with how many were skipped): a device that keeps timing out
  makes every tick overrun, and that is one episode, not a line per tick.
- A failed read keeps the last good reading (never zeros); the device goes stale after
  ``stale_after`` consecutive failures, which is logged once, and its recovery once.
- A setpoint is written only when it changed, when the last write failed, or when the
  device was not answering since the last write (it may have rebooted and forgotten it).
  Keep-alive rewrites are the driver's business. Devices that did not answer this tick are
  not written to: a timeout there would hold up everything else on the same bus.
- ``last_progress`` moves only when a whole tick (reads, consumers, writes) completed:
  the supervisor pets the systemd watchdog only while it keeps moving.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from agent.clock import Clock
from agent.site.state import DeviceInfo, SiteState
from drivers.contract import (
    Charger,
    ChargerReading,
    DeviceError,
    DeviceHealth,
    DeviceTimeout,
    Measurement,
    Meter,
    Setpoint,
)

log = logging.getLogger("evsite.poller")

Consumer = Callable[[SiteState], Awaitable[None] | None]
SetpointPolicy = Callable[[SiteState], Mapping[int, Setpoint]]


@dataclass
class DeviceSlot:
    """One device as the poller tracks it between ticks."""

    info: DeviceInfo
    driver: Meter | Charger
    started: bool = False
    health: DeviceHealth = field(init=False)
    announced_stale: bool = False
    #: rewrite the setpoint at the next chance (never written, failed, or device was away)
    rewrite: bool = True
    write_failing: bool = False

    def __post_init__(self) -> None:
        self.health = DeviceHealth(name=self.info.id)


def hhmmss(dt: datetime) -> str:
    """Short UTC time for log lines; the journal and file logs carry the date."""
    return dt.strftime("%H:%M:%SZ")


def error_text(exc: BaseException) -> str:
    if isinstance(exc, DeviceTimeout):
        return str(exc) or "timeout"
    if isinstance(exc, DeviceError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Poller:
    def __init__(
        self,
        slots: Iterable[DeviceSlot],
        *,
        clock: Clock,
        interval: float,
        stale_after: int = 3,
        setpoints: SetpointPolicy | None = None,
        consumers: Iterable[Consumer] = (),
    ) -> None:
        if interval <= 0:
            raise ValueError(f"poll interval must be > 0 s, got {interval}")
        if stale_after < 1:
            raise ValueError(f"stale_after must be >= 1 failed polls, got {stale_after}")
        self.slots = list(slots)
        ids = [s.info.id for s in self.slots]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate device ids: {sorted({i for i in ids if ids.count(i) > 1})}")
        self.clock = clock
        self.interval = interval
        self.stale_after = stale_after
        self.policy = setpoints
        self.consumers: list[Consumer] = list(consumers)
        self.tick_count = 0  # ticks started
        self.ticks_completed = 0
        self.ticks_skipped = 0
        #: overrunning ticks in a row (0: on time), and the ticks they skipped
        self._overruns = 0
        self._overrun_skipped = 0
        self._tick_waiters: list[tuple[int, asyncio.Future[None]]] = []
        #: monotonic time the last complete tick finished; None before the first
        self.last_progress: float | None = None
        #: setpoints last written successfully, by connector id
        self.setpoints: dict[int, Setpoint] = {}
        self._by_connector = {
            s.info.connector_id: s for s in self.slots if s.info.role == "charger" and s.info.connector_id is not None
        }
        self.latest: SiteState = self._snapshot()

    def add_consumer(self, consumer: Consumer) -> None:
        """Consumers get every SiteState, in the order they were added."""
        self.consumers.append(consumer)

    # -- one tick --
    async def tick(self) -> SiteState:
        self.tick_count += 1
        outcomes: list[tuple[Measurement | ChargerReading | None, BaseException | None]] = [(None, None)] * len(self.slots)

        async def read(i: int, slot: DeviceSlot) -> None:
            outcomes[i] = await self._read(slot)

        async with asyncio.TaskGroup() as tg:
            for i, slot in enumerate(self.slots):
                tg.create_task(read(i, slot), name=f"read {slot.info.id}")
        now = self.clock.now()
        for slot, (reading, exc) in zip(self.slots, outcomes):
            if exc is None and reading is not None:
                self._good(slot, reading)
            else:
                self._failed(slot, exc or DeviceError("no reading"), now)

        state = self._snapshot()
        self.latest = state
        for consumer in self.consumers:
            result = consumer(state)
            if inspect.isawaitable(result):
                await result
        if self.policy is not None:
            await self._write_setpoints(self.policy(state), answered={s.info.id for s, (r, _) in zip(self.slots, outcomes) if r is not None})
        self.last_progress = self.clock.monotonic()
        self.ticks_completed += 1
        self._wake_waiters()
        return state

    async def wait_for_tick(self, n: int) -> None:
        """Wait until ``n`` ticks have completed (reads, consumers and writes): lets
        callers follow the loop without sleeping on wall time."""
        if self.ticks_completed >= n:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tick_waiters.append((n, fut))
        await fut

    def _wake_waiters(self) -> None:
        keep = []
        for n, fut in self._tick_waiters:
            if fut.done():
                continue
            if self.ticks_completed >= n:
                fut.set_result(None)
            else:
                keep.append((n, fut))
        self._tick_waiters = keep

    async def _read(self, slot: DeviceSlot) -> tuple[Measurement | ChargerReading | None, BaseException | None]:
        try:
            if not slot.started:
                await slot.driver.start()
                slot.started = True
            return await slot.driver.read(), None
        except DeviceError as exc:
            return None, exc
        except Exception as exc:  # a driver bug: count it as a failure, but show the traceback once
            if slot.health.consecutive_failures == 0:
                log.exception("device %s: unexpected error while reading", slot.info.describe())
            return None, exc

    def _good(self, slot: DeviceSlot, reading: Measurement | ChargerReading) -> None:
        h = slot.health
        if slot.announced_stale:
            since = hhmmss(h.failing_since) if h.failing_since else "?"
            log.info(
                "device %s recovered after %d failed polls (stale since %s)",
                slot.info.describe(), h.consecutive_failures, since,
            )
            slot.announced_stale = False
        slot.health = DeviceHealth(
            name=slot.info.id,
            last_good=reading,
            last_good_at=reading.timestamp,
            last_good_mono=reading.monotonic,
            stale=False,
        )

    def _failed(self, slot: DeviceSlot, exc: BaseException, now: datetime) -> None:
        h = slot.health
        failures = h.consecutive_failures + 1
        since = h.failing_since or now
        text = error_text(exc)
        stale = h.last_good is None or failures >= self.stale_after
        slot.health = DeviceHealth(
            name=slot.info.id,
            last_good=h.last_good,
            last_good_at=h.last_good_at,
            last_good_mono=h.last_good_mono,
            stale=stale,
            error=text,
            failing_since=since,
            consecutive_failures=failures,
        )
        slot.rewrite = True
        if failures >= self.stale_after and not slot.announced_stale:
            log.warning("device %s stale since %s: %s", slot.info.describe(), hhmmss(since), text)
            slot.announced_stale = True

    def _snapshot(self) -> SiteState:
        return SiteState(
            taken_at=self.clock.now(),
            monotonic=self.clock.monotonic(),
            tick=self.tick_count,
            health={s.info.id: s.health for s in self.slots},
            devices={s.info.id: s.info for s in self.slots},
            setpoints=dict(self.setpoints),
        )

    async def _write_setpoints(self, wanted: Mapping[int, Setpoint], answered: set[str]) -> None:
        todo: list[tuple[int, DeviceSlot, Setpoint]] = []
        for cid, sp in wanted.items():
            slot = self._by_connector.get(cid)
            if slot is None:
                raise ValueError(f"setpoint for connector {cid}, which no charger serves")
            if slot.info.id not in answered:
                continue  # written once it answers again (slot.rewrite is set)
            if slot.rewrite or self.setpoints.get(cid) != sp or getattr(slot.driver, "needs_setpoint", False):
                todo.append((cid, slot, sp))
        if todo:
            async with asyncio.TaskGroup() as tg:
                for cid, slot, sp in todo:
                    tg.create_task(self._write(cid, slot, sp), name=f"setpoint {slot.info.id}")

    async def _write(self, cid: int, slot: DeviceSlot, sp: Setpoint) -> None:
        driver: Charger = slot.driver  # type: ignore[assignment]  # chargers only (by role)
        try:
            await driver.apply(sp)
        except Exception as exc:
            if not slot.write_failing:
                level = logging.WARNING if isinstance(exc, DeviceError) else logging.ERROR
                log.log(level, "setpoint %.1f A for connector %d on %s not written: %s",
                        sp.amps, cid, slot.info.describe(), error_text(exc),
                        exc_info=not isinstance(exc, DeviceError))
                slot.write_failing = True
            slot.rewrite = True
            return
        if slot.write_failing:
            log.info("setpoint for connector %d on %s written again", cid, slot.info.describe())
            slot.write_failing = False
        self.setpoints[cid] = sp
        slot.rewrite = False

    # -- the loop --
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Tick until ``stop`` is set. A stop arriving mid-tick lets the tick finish
        (consumers may be writing to the store); returns after it."""
        stop = stop or asyncio.Event()
        next_at = self.clock.monotonic()
        while not stop.is_set():
            started = self.clock.monotonic()
            await self.tick()
            next_at += self.interval
            now = self.clock.monotonic()
            if now > next_at:
                missed = int((now - next_at) // self.interval) + 1
                next_at += missed * self.interval
                self.ticks_skipped += missed
                if not self._overruns:
                    log.warning(
                        "poll tick %d took %.2f s (interval %.2f s): skipped %d tick(s)",
                        self.tick_count, now - started, self.interval, missed,
                    )
                self._overruns += 1
                self._overrun_skipped += missed
            elif self._overruns:
                if self._overruns > 1:
                    log.info("poll ticks on time again after %d slow ticks (%d ticks skipped)",
                             self._overruns, self._overrun_skipped)
                self._overruns = self._overrun_skipped = 0
            await _sleep_or_stop(self.clock, next_at - now, stop)


async def _sleep_or_stop(clock: Clock, seconds: float, stop: asyncio.Event) -> None:
    """Sleep on the injected clock, waking early when ``stop`` is set."""
    if stop.is_set():
        return
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (sleeper, waiter):
            if not t.done():
                t.cancel()
        await asyncio.gather(sleeper, waiter, return_exceptions=True)
