"""The agent's main: builds every part, runs every loop, and stops them cleanly.

This is the one place where parts are wired together; each part receives what it needs
as arguments and knows nothing of the others' construction.

Lifecycle, and why:

- Resources are opened in an ``AsyncExitStack`` in dependency order (store, buses and
  devices, sessions, uplink, control API) and closed in reverse, whatever happens: the
  store is closed last, after everything that might still write to it.
- READY=1 goes to systemd only when all of that is up (the control socket listens), so
  ``systemctl start`` returning means ``evsite status`` works.
- The loops run in one ``asyncio.TaskGroup``. A loop that crashes (or returns when it
  should run forever) brings the whole agent down with its error logged and exit code 1:
  a half-alive site controller is worse than a restart by systemd (Restart=on-failure).
- The watchdog is petted only while the poll loop completes ticks. A wedged poll loop
  (a driver stuck forever, a store that stopped answering) stops the pets and systemd
  restarts the agent, which is exactly the remedy.
- SIGTERM/SIGINT: the poll loop finishes the tick in progress (consumers may be writing
  the store) within ``STOP_GRACE``; the other loops are cancelled; resources close; one
  log line says how long it took. Well inside systemd's TimeoutStopSec.

Hook for the uplink: ``open_uplink(runtime)`` returns an async context manager whose
value may have ``async run()`` (run in the TaskGroup) and may register control routes and
status sections through ``runtime.control``. By default it is looked up as
``agent.uplink.open_uplink``; until that exists the agent runs without a CSMS, and says so.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import __version__
from agent.clock import Clock, SystemClock
from agent.config.model import SiteConfig
from agent.control.server import ControlServer
from agent.sdnotify import Notifier
from agent.site import devices as site_devices
from agent.site.poller import DeviceSlot, Poller, SetpointPolicy
from agent.timefmt import utc_text

log = logging.getLogger("evsite.supervisor")

#: how long a stop request waits for the poll tick in progress before cancelling it
STOP_GRACE = 2.0
#: exit codes: 75 (EX_TEMPFAIL) asks systemd for a restart after a reset/update
EXIT_OK, EXIT_CRASH, EXIT_RESTART = 0, 1, 75


@dataclass
class Runtime:
    """What the parts can reach while the agent runs (handed to hooks)."""

    config: SiteConfig
    clock: Clock
    stop: asyncio.Event
    started_mono: float
    started_at: Any
    store: Any = None
    poller: Poller | None = None
    sessions: Any = None
    #: agent.settings.Settings (the OCPP-configurable settings), built with the sessions
    settings: Any = None
    #: agent.auth.Authorizer; the uplink sets its ``online``/``is_online`` hooks
    authorizer: Any = None
    #: the load-management controller (the poller's setpoint policy), when configured
    energy: Any = None
    #: agent.charging_profiles.ProfileBook: the CSMS's charging profiles (both versions)
    profiles: Any = None
    uplink: Any = None
    #: agent.maintenance.service.MaintenanceService (updates, logs, certificates)
    maintenance: Any = None
    control: ControlServer | None = None
    stop_reason: str = ""
    #: monotonic time the stop began (signal, request or crash)
    stop_began: float | None = None
    #: set by request_restart: the agent exits with EXIT_RESTART so systemd starts it again
    restart: bool = False

    def request_stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            self.stop.set()

    def request_restart(self, reason: str) -> None:
        """A reset or an update: stop cleanly, then exit non-zero so that systemd
        (Restart=on-failure) starts the agent again."""
        self.restart = True
        self.request_stop(reason)


@dataclass
class Parts:
    """How each part is built. Production uses the defaults; tests replace the parts
    that are not theirs to test (and parts not built yet stay ``None``)."""

    open_store: Callable[[Runtime], Awaitable[Any]] | None = None
    open_devices: Callable[[Runtime, AsyncExitStack], Awaitable[list[DeviceSlot]]] | None = None
    open_sessions: Callable[[Runtime, AsyncExitStack], Awaitable[Any]] | None = None
    open_uplink: Callable[[Runtime], AbstractAsyncContextManager[Any]] | None = None
    open_maintenance: Callable[[Runtime], AbstractAsyncContextManager[Any]] | None = None
    setpoints: Callable[[SiteConfig], SetpointPolicy] = site_devices.fixed_setpoints
    #: load management (agent/energy) sets the chargers' currents instead of ``setpoints``
    load_management: bool = False
    #: poll loop without progress for this long stops the watchdog; None = derived
    stuck_after: float | None = None
    stale_after: int = 3
    extra: dict[str, Any] = field(default_factory=dict)


class LoopCrashed(Exception):
    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name} {detail}")
        self.loop_name = name


class _StopRequested(Exception):
    """Raised inside the TaskGroup to cancel the loops after a stop request."""


def default_parts() -> Parts:
    return Parts(
        open_store=_open_store,
        open_devices=lambda rt, stack: site_devices.open_devices(rt.config, rt.clock, stack),
        open_sessions=_open_sessions,
        open_uplink=_find_uplink(),
        open_maintenance=_open_maintenance,
        load_management=True,
    )


async def run_agent(
    config: SiteConfig,
    clock: Clock = SystemClock(),
    *,
    parts: Parts | None = None,
    notifier: Notifier | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    ready: Callable[[Runtime], None] | None = None,
) -> int:
    """Run the site until stopped: 0 after a clean stop, 1 if a loop crashed or
    start-up failed. ``ready(runtime)`` is called right after READY=1 (tests)."""
    parts = parts or default_parts()
    notifier = notifier or Notifier.from_env()
    rt = Runtime(config=config, clock=clock, stop=stop or asyncio.Event(),
                 started_mono=clock.monotonic(), started_at=clock.now())
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, rt.request_stop, sig.name)
            installed.append(sig)
    log.info("evsite %s starting site %r (pid %d)", __version__, config.site.name, os.getpid())
    try:
        return await _run(rt, parts, notifier, ready)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        notifier.close()


async def _run(rt: Runtime, parts: Parts, notifier: Notifier, ready: Callable[[Runtime], None] | None) -> int:
    config, clock = rt.config, rt.clock
    code = EXIT_OK
    stop_began: float | None = None
    try:
        async with AsyncExitStack() as stack:
            Path(config.site.state_dir).mkdir(mode=0o750, parents=True, exist_ok=True)
            # 1. store (closed last)
            if parts.open_store is not None:
                rt.store = await parts.open_store(rt)
                if rt.store is not None and hasattr(rt.store, "close"):
                    stack.push_async_callback(_close_store, rt.store)
            # 2. buses and devices
            slots = await parts.open_devices(rt, stack) if parts.open_devices else []
            poller = Poller(slots, clock=clock, interval=config.site.poll_interval,
                            stale_after=parts.stale_after, setpoints=parts.setpoints(config))
            if parts.load_management and config.chargers():
                from agent.energy import wiring as energy_wiring

                rt.energy = energy_wiring.build(config, clock, rt)
                poller.policy = energy_wiring.policy_with_fixed_caps(config, rt.energy)
                await energy_wiring.start_dim_input(config, rt.energy, stack)
            rt.poller = poller
            rt.control = ControlServer(config.control_socket, status=lambda: _status(rt), group=config.control.group)
            if rt.energy is not None:   # POST /test/gpio, only with EVSITE_GPIO_MOCK=1 (tests)
                from agent.energy.wiring import add_gpio_test_route
                add_gpio_test_route(rt.control)
            if rt.store is not None and hasattr(rt.store, "prune"):
                from agent.site.recorder import SampleRecorder
                recorder = SampleRecorder(rt.store, interval=config.store.sample_interval,
                                          retention_days=config.store.sample_retention_days)
                poller.add_consumer(recorder.on_site_state)
            # 3. sessions
            if parts.open_sessions is not None:
                rt.sessions = await parts.open_sessions(rt, stack)
                if rt.sessions is not None:
                    poller.add_consumer(rt.sessions.on_site_state)
                    if hasattr(rt.sessions, "may_draw"):  # the real SessionManager (tests may use less)
                        poller.policy = gate_by_sessions(poller.policy, rt.sessions)
                        _sessions_control(rt)
                        from agent.site.clockwatch import ClockWatch
                        poller.add_consumer(ClockWatch(rt.sessions).on_site_state)
            # 4. uplink
            if parts.open_uplink is not None:
                rt.uplink = await stack.enter_async_context(parts.open_uplink(rt))
            elif config.uplink.enabled:
                log.warning("uplink not available in this build: running without a CSMS connection")
            # 4b. remote maintenance: confirms or rolls back an update begun before this
            #     start, and gives the uplink its client certificate, before it connects
            if parts.open_maintenance is not None:
                rt.maintenance = await stack.enter_async_context(parts.open_maintenance(rt))
            # 5. control API (last: it serves everything above)
            await rt.control.start()
            stack.push_async_callback(rt.control.close)

            notifier.ready(status=f"{len(slots)} devices, polling every {config.site.poll_interval:g} s")
            log.info("site %r up: %d devices, control socket %s", config.site.name, len(slots), config.control_socket)
            if ready is not None:
                ready(rt)
            try:
                async with asyncio.TaskGroup() as tg:
                    poll_done = asyncio.Event()
                    tg.create_task(_guard("poll loop", _poll(poller, rt.stop, poll_done), rt), name="poll loop")
                    tg.create_task(_guard("watchdog", _watchdog(rt, notifier, parts.stuck_after), rt), name="watchdog")
                    run = getattr(rt.uplink, "run", None)
                    if run is not None:
                        tg.create_task(_guard("uplink", run(), rt), name="uplink")
                    tg.create_task(_stopper(rt, notifier, poll_done), name="stopper")
            except* _StopRequested:
                stop_began = rt.stop_began
            except* Exception as group:
                code = EXIT_CRASH
                for exc in group.exceptions:
                    cause = exc.__cause__ if isinstance(exc, LoopCrashed) and exc.__cause__ else exc
                    log.error("%s: stopping the agent", exc, exc_info=(type(cause), cause, cause.__traceback__))
                notifier.stopping(status=f"crashed: {group.exceptions[0]}")
                stop_began = clock.monotonic()
    except Exception as exc:
        if stop_began is None:  # failed while starting: nothing ran yet
            log.error("start-up failed: %s", exc, exc_info=True)
            notifier.stopping(status=f"start-up failed: {exc}")
            return EXIT_CRASH
        log.error("error while shutting down: %s", exc, exc_info=True)
        return EXIT_CRASH
    took = clock.monotonic() - (stop_began if stop_began is not None else clock.monotonic())
    closed = "; store closed" if rt.store is not None else ""
    if code == EXIT_OK and rt.restart:
        log.info("stopped for a restart in %.1f s (%s)%s", took, rt.stop_reason, closed)
        return EXIT_RESTART
    if code == EXIT_OK:
        log.info("stopped cleanly in %.1f s (%s)%s", took, rt.stop_reason or "stop requested", closed)
    else:
        log.info("stopped after a crash in %.1f s%s", took, closed)
    return code


async def _guard(name: str, coro: Awaitable[None], rt: Runtime) -> None:
    """Name the loop in its error; a loop returning on its own is a crash too, unless
    the agent is stopping."""
    try:
        await coro
    except (asyncio.CancelledError, _StopRequested):
        raise
    except Exception as exc:
        raise LoopCrashed(name, f"crashed: {type(exc).__name__}: {exc}") from exc
    if not rt.stop.is_set():
        raise LoopCrashed(name, "ended unexpectedly")


async def _poll(poller: Poller, stop: asyncio.Event, done: asyncio.Event) -> None:
    try:
        await poller.run(stop)
    finally:
        done.set()


async def _stopper(rt: Runtime, notifier: Notifier, poll_done: asyncio.Event) -> None:
    await rt.stop.wait()
    rt.stop_began = rt.clock.monotonic()
    log.info("stopping: %s", rt.stop_reason or "stop requested")
    notifier.stopping(status=f"stopping: {rt.stop_reason}")
    try:
        async with asyncio.timeout(STOP_GRACE):
            await poll_done.wait()
    except TimeoutError:
        log.warning("poll tick still running after %.1f s; cancelling it", STOP_GRACE)
    raise _StopRequested


def stuck_limit(poll_interval: float) -> float:
    """How long without a completed tick means the poll loop is stuck: generous, since
    a tick with several RS-485 devices timing out legitimately takes seconds."""
    return max(3 * poll_interval, poll_interval + 20.0)


async def _watchdog(rt: Runtime, notifier: Notifier, stuck_after: float | None) -> None:
    """Pet systemd's watchdog while the poll loop makes progress, and keep STATUS= fresh."""
    poller = rt.poller
    assert poller is not None
    limit = stuck_after if stuck_after is not None else stuck_limit(rt.config.site.poll_interval)
    pet = notifier.watchdog_interval()
    period = pet if pet is not None else max(0.5, min(limit / 2, 5.0))
    stuck = False
    while True:
        now = rt.clock.monotonic()
        ref = poller.last_progress if poller.last_progress is not None else rt.started_mono
        age = now - ref
        if age <= limit:
            if pet is not None:
                notifier.watchdog()
            if stuck:
                log.warning("poll loop moving again: petting the watchdog again")
                stuck = False
            state = poller.latest
            stale = state.stale_devices()
            notifier.status(f"tick {state.tick}: {len(state.health) - len(stale)}/{len(state.health)} devices ok"
                            + (f", stale: {', '.join(stale)}" if stale else ""))
        elif not stuck:
            log.error("poll loop made no progress for %.0f s (limit %.0f s): no longer petting the watchdog", age, limit)
            notifier.status(f"poll loop stuck for {age:.0f} s")
            stuck = True
        await rt.clock.sleep(period)


def _status(rt: Runtime) -> dict[str, Any]:
    poller = rt.poller
    assert poller is not None
    out = poller.latest.as_dict(setpoints=poller.setpoints)
    out["site"]["name"] = rt.config.site.name
    out["agent"] = {
        "version": __version__,
        "pid": os.getpid(),
        "started_at": utc_text(rt.started_at),
        "uptime_s": round(rt.clock.monotonic() - rt.started_mono, 1),
        "ticks_skipped": poller.ticks_skipped,
        "uplink": "enabled" if rt.uplink is not None else "not running",
    }
    return out


# ---------------------------------------------------------------- default parts

async def _close_store(store: Any) -> None:
    result = store.close()
    if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
        await result


async def _open_store(rt: Runtime) -> Any:
    try:
        from agent.store import Store
    except ImportError as exc:
        if (exc.name or "").startswith("agent.store"):
            log.warning("store not available in this build: nothing is recorded")
            return None
        raise

    return await Store.open(rt.config.store_path, rt.clock, synchronous=rt.config.store.synchronous,
                            outbox_max=rt.config.store.outbox_max)


async def _open_sessions(rt: Runtime, stack: AsyncExitStack) -> Any:
    """Settings, the authorizer and the session manager, which need one another and the
    store. The authorizer starts offline; the uplink plugs in its Authorize call."""
    try:
        from agent.sessions import SessionManager
        from agent.settings import Settings
    except ImportError as exc:  # not built yet (a missing third-party module is a real error)
        if (exc.name or "").startswith(("agent.sessions", "agent.settings")):
            log.warning("sessions not available in this build: no transactions are recorded")
            return None
        raise
    from agent.auth import Authorizer

    if rt.store is None:
        raise RuntimeError("sessions need the store, which did not open")
    rt.settings = await Settings.load(rt.store, rt.config)
    rt.authorizer = Authorizer(rt.store, policy=rt.settings.auth_policy, clock=rt.clock, is_online=lambda: False)
    from agent.charging_profiles import ProfileBook

    manager = SessionManager(rt.config, rt.store, rt.clock, rt.authorizer, rt.settings)
    await manager.start()
    validate = None
    if rt.energy is not None:
        from agent.energy.wiring import follow_sessions, validate_profile

        validate = validate_profile
        rt.energy.may_draw = manager.may_draw
        manager._spawn(follow_sessions(rt.energy, manager), "energy follows transactions")
    rt.profiles = await ProfileBook(rt.store, rt.settings, validate=validate).load()
    profiles = rt.profiles

    async def drop_tx_profiles() -> None:
        # a TxProfile lives as long as its transaction
        from agent.sessions.events import TransactionEnded
        queue = manager.subscribe()
        while True:
            ev = await queue.get()
            if isinstance(ev, TransactionEnded):
                await profiles.transaction_ended(ev.connector_id)

    manager._spawn(drop_tx_profiles(), "tx profile cleanup")
    if hasattr(manager, "close"):
        stack.push_async_callback(site_devices.close_quietly, manager, "sessions")
    return manager


def gate_by_sessions(policy: SetpointPolicy | None, sessions: Any) -> SetpointPolicy | None:
    """Energy flows only inside an authorized transaction: a connector without one is
    held disabled whatever the allocator would give it."""
    if policy is None:
        return None

    def gated(state: Any) -> dict[int, Any]:
        from drivers.contract import Setpoint

        out = dict(policy(state))
        for cid, sp in out.items():
            if not sessions.may_draw(cid):
                out[cid] = Setpoint(amps=0.0, phases=sp.phases, enabled=False)
        return out

    return gated


def _sessions_control(rt: Runtime) -> None:
    """``evsite authorize`` and the ``sessions`` status section."""
    from agent.cli_authorize import authorize_route

    assert rt.control is not None
    rt.control.add_status_section("sessions", rt.sessions.status_view)
    rt.control.add_route("POST", "/authorize", authorize_route(rt.sessions))
    if rt.energy is not None:
        rt.control.add_status_section("energy", rt.energy.status)


def _open_maintenance(rt: Runtime) -> AbstractAsyncContextManager[Any]:
    from agent.maintenance.service import open_maintenance
    return open_maintenance(rt)


def _find_uplink() -> Callable[[Runtime], AbstractAsyncContextManager[Any]] | None:
    """``agent.uplink.open_uplink`` if the uplink package provides it yet. A missing
    dependency *inside* the package is a real error and propagates."""
    try:
        module = importlib.import_module("agent.uplink")
    except ModuleNotFoundError as exc:
        if exc.name == "agent.uplink":
            return None
        raise
    return getattr(module, "open_uplink", None)

