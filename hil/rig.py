"""The rig: a whole site emulated from its config, with a scenario playing on it.

``Rig(config, scenario)`` serves every configured bus as the agent expects to find it:
a TCP bus as one Modbus TCP server on its host:port (loopback only) answering all the
bus's unit ids, an RS-485 bus as a pseudo-terminal linked at the bus's ``port`` path.
The agent (or a test's drivers) then talks to the site exactly as on hardware, while
the physical model runs on the rig's clock and the scenario's events happen on time.

Time: the model follows the injected clock. ``speed`` > 1 runs the site faster than
real time (a ``ScaledClock``); tests pass a ``SimClock`` and advance it, so what the
model did is exact while the Modbus traffic stays real.

A bus that points at real hardware (a TCP host other than loopback, an RTU port that is
a real serial device) is left alone, so one device on the bench can be tested inside an
otherwise emulated site; scenario events cannot target its devices.

Ground truth for tests (what the physics says, not what a driver read): ``charger``,
``ev``, ``meter``, ``register`` and the ``site`` itself.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Callable

from agent.clock import Clock, ScaledClock, SystemClock
from agent.config.model import BusSection, SiteConfig
from hil.emulator.devices import EmulatedSite
from hil.emulator.image import RegisterImage
from hil.emulator.server import RtuServerHandle, TcpServerHandle, serve_rtu_pty, serve_tcp
from hil.model import ChargerModel, Ev, MeterReading
from hil.scenario import Event, Scenario, check_against, play

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1", "localhost")
#: seconds of site time between model steps
DEFAULT_TICK = 0.25

EventHook = Callable[[float, Event], Any]


class RigError(RuntimeError):
    """The rig cannot run this site or scenario; the message says which part and why."""


class Rig:
    def __init__(
        self,
        config: SiteConfig,
        scenario: Scenario | None = None,
        clock: Clock | None = None,
        speed: float = 1.0,
        *,
        tick: float = DEFAULT_TICK,
        on_event: EventHook | None = None,
    ) -> None:
        if clock is not None and speed != 1.0:
            raise RigError("give the rig a clock or a speed, not both")
        if not speed > 0:
            raise RigError(f"speed must be > 0, got {speed!r}")
        if not tick > 0:
            raise RigError(f"tick must be > 0 s, got {tick!r}")
        #: buses left to real hardware (bus id -> where), with their devices
        self.real_buses = {b.id: where for b in config.buses if (where := real_hardware(b))}
        if scenario is not None:
            problems = check_against(scenario, config) + _events_on_real_devices(scenario, config, self.real_buses)
            if problems:
                raise RigError("scenario does not fit the site:\n" + "\n".join(problems))
        self.config = config
        self.scenario = scenario
        self.clock: Clock = clock or (ScaledClock(speed) if speed != 1.0 else SystemClock())
        self.tick = tick
        self.on_event = on_event
        self.site = EmulatedSite(config, self.clock, base_load=scenario.base_load if scenario else None,
                                 skip_buses=set(self.real_buses))
        self.servers: dict[str, TcpServerHandle | RtuServerHandle] = {}
        #: (seconds since start, event) for every event applied so far
        self.applied: list[tuple[float, Event]] = []
        #: set when every scenario event has been applied
        self.finished = asyncio.Event()
        #: set when a rig task died; ``error`` holds why
        self.crashed = asyncio.Event()
        self.error: BaseException | None = None
        self.started_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Serve every bus, then start the model and the scenario. On failure nothing
        is left running."""
        if self.started_at is not None:
            raise RigError("rig already started")
        try:
            for bus in self.config.buses:
                images = self.site.images_on(bus.id)
                if images and bus.id not in self.real_buses:
                    self.servers[bus.id] = await _serve(bus, images)
        except BaseException:
            await self._close_servers()
            raise
        self.started_at = self.clock.monotonic()
        self.site.model.advance_to(self.started_at)
        self._spawn(self._physics(), "rig:physics")
        if self.scenario is not None and self.scenario.events:
            self._spawn(self._play(), "rig:scenario")
        else:
            self.finished.set()

    async def stop(self) -> None:
        """Stop the model and the scenario, close every server; idempotent."""
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)   # a crash is in self.error already
        await self._close_servers()

    async def __aenter__(self) -> Rig:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def elapsed(self) -> float:
        """Seconds of site time since ``start``."""
        return 0.0 if self.started_at is None else self.clock.monotonic() - self.started_at

    # -- ground truth -----------------------------------------------------------------------
    def charger(self, device_id: str) -> ChargerModel:
        return self.site.chargers[device_id].model

    def ev(self, device_id: str) -> Ev | None:
        return self.charger(device_id).ev

    def meter(self, device_id: str) -> MeterReading:
        return self.site.model.meter_reading(device_id)

    def image(self, device_id: str) -> RegisterImage:
        return self.site.image(device_id)

    def register(self, device_id: str, quantity: str) -> Any:
        """What a client reading ``quantity`` of the device would get now."""
        return self.image(device_id).get(quantity)

    def energy_register(self, device_id: str) -> float:
        """A charger's energy counter as its registers hold it (lifetime, else session)."""
        img = self.image(device_id)
        for q in ("energy_import", "session_energy"):
            if img.has(q):
                return float(img.get(q))
        raise KeyError(f"{device_id} ({img.profile.name}) has no energy register")

    def summary(self) -> str:
        """One line: grid current per phase, then each charger's state, amps and energy."""
        parts = [f"t={self.elapsed():7.1f}s"]
        grid = self.config.grid_meter()
        if grid is not None and grid.id in self.site.meters:
            r = self.meter(grid.id)
            parts.append(f"{grid.id} " + "/".join(f"{a:.1f}" for a in r.current) + f" A {r.power_total / 1000:.1f} kW")
        for cid, c in self.site.chargers.items():
            m = c.model
            soc = f" {m.ev.soc:.0%}" if m.ev is not None else ""
            parts.append(f"{cid} {m.state} {max(m.currents):.1f}A {m.energy_wh / 1000:.2f}kWh{soc}")
        return " | ".join(parts)

    # -- scenario events ------------------------------------------------------------------------
    async def apply(self, event: Event) -> None:
        """Make ``event`` happen now (the scenario calls this; tests may too)."""
        self.site.advance()
        now = self.site.model.now
        if event.action == "plug":
            self.charger(event.device).plug(event.new_ev(), now)
        elif event.action == "unplug":
            self.charger(event.device).unplug(now)
        elif event.action == "base_load":
            self.site.model.grid.set_base(event.params["amps"])
        elif event.action == "silent":
            self.image(event.device).fault("silent")
        elif event.action == "back":
            self.image(event.device).clear_faults()
        elif event.action == "fault":
            p = event.params
            self.image(event.device).fault(p["kind"], quantity=p.get("quantity"), code=p["code"])
        else:  # the parser only makes known actions
            raise RigError(f"unknown scenario action {event.action!r}")
        self.site.publish()
        at = self.elapsed()
        self.applied.append((at, event))
        log.info("t=%.1fs %s", at, event.describe())
        if self.on_event is not None:
            result = self.on_event(at, event)
            if asyncio.iscoroutine(result):
                await result

    # -- tasks ----------------------------------------------------------------------------------
    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self.error = task.exception()
        log.error("%s died: %r", task.get_name(), self.error)
        self.crashed.set()

    async def _physics(self) -> None:
        while True:
            await self.clock.sleep(self.tick)
            self.site.advance()

    async def _play(self) -> None:
        assert self.scenario is not None and self.started_at is not None
        await play(self.scenario.events, self.clock, self.apply, start=self.started_at)
        self.finished.set()

    async def _close_servers(self) -> None:
        servers, self.servers = list(self.servers.values()), {}
        results = await asyncio.gather(*(s.close() for s in servers), return_exceptions=True)
        for r in results:
            if isinstance(r, Exception):
                log.warning("closing an emulated server: %r", r)


def _events_on_real_devices(scenario: Scenario, config: SiteConfig, real_buses: dict[str, str]) -> list[str]:
    real = {d.id: d.bus for d in config.devices if d.bus in real_buses}
    return [f"{scenario.source}: event {e.index}: device: {e.device} is real hardware (bus {real[e.device]} "
            f"at {real_buses[real[e.device]]}); a scenario can only {e.action.replace('_', ' ')} an emulated device"
            for e in scenario.events if e.device in real]


def real_hardware(bus: BusSection) -> str:
    """Where a bus reaches real hardware ("" when the rig should emulate it).

    The rig emulates what points at this machine, so a rig config can put one real
    device on the bench and leave the rest emulated: a TCP bus on another host, or an
    RTU bus whose port is a real serial device (not a pseudo-terminal), is left alone.
    A path the rig made earlier (a link to a pty, or a dangling link) is emulated again.
    """
    if bus.type == "tcp":
        host = bus.host or "127.0.0.1"
        return "" if host in LOOPBACK else f"{host}:{bus.port if bus.port not in ('', None) else 502}"
    path = Path(str(bus.port))
    if not str(bus.port) or not path.exists():
        return ""
    target = path.resolve()
    if target.is_char_device() and not str(target).startswith("/dev/pts/") and target != Path("/dev/ptmx"):
        return str(path)
    return ""


async def _serve(bus: BusSection, images: list[RegisterImage]) -> TcpServerHandle | RtuServerHandle:
    """One server for a configured bus, or a RigError saying why it cannot be."""
    if bus.type == "tcp":
        host = bus.host or "127.0.0.1"
        port = int(bus.port) if bus.port not in ("", None) else 502
        try:
            return await serve_tcp(host, port, images)
        except OSError as exc:
            raise RigError(f"bus {bus.id}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        except RuntimeError:               # pymodbus's way of saying the bind failed
            raise RigError(f"bus {bus.id}: cannot listen on {host}:{port}: the port is in use "
                           f"or the address is not available") from None
        except ValueError as exc:
            raise RigError(f"bus {bus.id}: {exc}") from None
    path = Path(str(bus.port))
    if not str(bus.port):
        raise RigError(f"bus {bus.id}: an RTU bus needs a port path for the pseudo-terminal link")
    if path.exists() and not path.is_symlink():
        raise RigError(f"bus {bus.id}: {path} exists and is neither a serial device nor a link the rig "
                       f"made; the rig will not replace it")
    if path.is_symlink() and path.exists() and not str(path.resolve()).startswith("/dev/pts/"):
        raise RigError(f"bus {bus.id}: {path} links to {path.resolve()}, not to a pseudo-terminal; "
                       f"the rig will not replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return await serve_rtu_pty(images, str(path), baudrate=bus.baudrate, parity=bus.parity,
                                   stopbits=bus.stopbits, bytesize=bus.bytesize)
    except OSError as exc:
        raise RigError(f"bus {bus.id}: cannot make the pseudo-terminal at {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise RigError(f"bus {bus.id}: {exc}") from None
