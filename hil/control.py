"""A control channel into the rig and test-CSMS processes: JSON lines on a Unix socket.

End-to-end tests, the demo and the kill soak drive *separate processes*: plug an EV into
an emulated charger, read its energy register, make the CSMS send SendLocalList, wait
until it has received the third StopTransaction. ``evsite hil --control PATH`` and
``python -m hil.csms --control PATH`` serve the commands below on a Unix socket:

- a socket file needs no port (nothing to collide with in parallel test runs) and is
  private to its user (mode 0600);
- one request per connection keeps both sides trivial: the client writes one line
  ``{"cmd": NAME, "args": {...}}``, the server answers one line ``{"ok": true,
  "result": ...}`` or ``{"ok": false, "error": "..."}`` and closes. A long wait
  (``wait_for``) is a request that answers late; others run meanwhile on their own
  connections.

Bad requests (unknown command, wrong arguments, a device that does not exist) are
answered with an error naming what was wrong; the process goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("hil.control")

#: sun_path is 108 bytes on Linux, including the terminating NUL
MAX_SOCKET_PATH = 107
#: longest request or answer line (a CSMS message log can be long)
MAX_LINE = 16 << 20

Commands = Mapping[str, Callable[..., Any]]


class ControlError(RuntimeError):
    """The process refused a command or could not be reached; the message says why."""


class ControlChannel:
    """Serves ``commands`` (name -> callable taking keyword arguments, sync or async)."""

    def __init__(self, path: str | os.PathLike[str], commands: Commands) -> None:
        self.path = Path(path)
        if len(os.fsencode(str(self.path))) > MAX_SOCKET_PATH:
            raise ValueError(f"control socket path {self.path} is too long (> {MAX_SOCKET_PATH} bytes)")
        self.commands = dict(commands)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> ControlChannel:
        with contextlib.suppress(FileNotFoundError):
            if self.path.is_socket():
                self.path.unlink()   # left by a killed process; a live one would be ours to replace too
        self.path.parent.mkdir(parents=True, exist_ok=True)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._handlers):   # a pending wait_for must not hold the process up
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def __aenter__(self) -> ControlChannel:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            try:
                line = await reader.readline()
                answer = {"ok": True, "result": await self._run(line)}
            except ControlError as exc:
                answer = {"ok": False, "error": str(exc)}
            except Exception as exc:   # a command failed: tell the client, keep serving
                log.warning("control command failed: %r", exc)
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            writer.write(json.dumps(answer, default=str).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _run(self, line: bytes) -> Any:
        try:
            request = json.loads(line)
        except ValueError as exc:
            raise ControlError(f"request is not JSON: {exc}") from None
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            raise ControlError('request must be a JSON object {"cmd": NAME, "args": {...}}')
        name, args = request["cmd"], request.get("args") or {}
        if not isinstance(args, dict):
            raise ControlError(f"{name}: args must be a JSON object, got {type(args).__name__}")
        command = self.commands.get(name)
        if command is None:
            raise ControlError(f"unknown command {name!r}; commands: {', '.join(sorted(self.commands))}")
        try:
            inspect.signature(command).bind(**args)
        except TypeError as exc:
            raise ControlError(f"{name}: {exc}") from None
        result = command(**args)
        return await result if inspect.isawaitable(result) else result


async def request(path: str | os.PathLike[str], cmd: str, args: dict[str, Any] | None = None, *,
                  timeout: float = 30.0) -> Any:
    """Send one command to the process serving ``path``; its result, or ControlError.
    ``timeout`` bounds the whole exchange (give a waiting command its own time and more)."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
            try:
                writer.write(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except TimeoutError:
        raise ControlError(f"{path}: no answer to {cmd} within {timeout:g} s") from None
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(f"{path}: nothing is serving this control socket (process not running?)") from None
    if not line:
        raise ControlError(f"{path}: the process closed the channel without answering {cmd} (stopping?)")
    answer = json.loads(line)
    if not answer.get("ok"):
        raise ControlError(f"{cmd}: {answer.get('error')}")
    return answer.get("result")


# ---------------------------------------------------------------- the rig's commands

def rig_commands(rig: Any) -> dict[str, Callable[..., Any]]:
    """Plug/unplug EVs, inject faults, read ground truth (hil.rig.Rig)."""
    from hil.model import Ev
    from hil.scenario import EV_KEYS, Event
    from hil.trace import Trace

    def charger_id(device: str) -> str:
        if device not in rig.site.chargers:
            raise ControlError(f"no emulated charger {device!r}; chargers: {', '.join(sorted(rig.site.chargers))}")
        return device

    def device_id(device: str) -> str:
        if device not in rig.site.chargers and device not in rig.site.meters:
            known = sorted([*rig.site.chargers, *rig.site.meters])
            raise ControlError(f"no emulated device {device!r}; devices: {', '.join(known)}")
        return device

    async def happen(action: str, device: str = "", note: str = "", **params: Any) -> dict[str, Any]:
        await rig.apply(Event(index=0, at=rig.elapsed(), action=action, device=device, note=note, params=params))
        return truth()

    async def plug(device: str, ev: dict[str, Any] | None = None, note: str = "") -> dict[str, Any]:
        ev = dict(ev or {})
        unknown = sorted(set(ev) - set(EV_KEYS))
        if unknown:
            raise ControlError(f"plug: unknown EV key(s) {', '.join(unknown)}; allowed: {', '.join(EV_KEYS)}")
        Ev(**ev)  # ValueError names every bad value before anything happens
        if rig.charger(charger_id(device)).ev is not None:
            raise ControlError(f"plug: an EV is already plugged into {device}")
        return await happen("plug", device, note, ev=ev)

    async def unplug(device: str, note: str = "") -> dict[str, Any]:
        if rig.charger(charger_id(device)).ev is None:
            raise ControlError(f"unplug: nothing is plugged into {device}")
        return await happen("unplug", device, note)

    async def silent(device: str) -> dict[str, Any]:
        return await happen("silent", device_id(device))

    async def back(device: str) -> dict[str, Any]:
        return await happen("back", device_id(device))

    def base_load(amps: float | list[float]) -> dict[str, Any]:
        rig.site.advance()
        rig.site.model.grid.set_base(amps)
        rig.site.publish()
        return truth()

    def energy(device: str) -> float:
        rig.site.advance()
        rig.site.publish()
        return rig.energy_register(charger_id(device))

    async def wait_until(elapsed: float) -> dict[str, Any]:
        """Answer once the rig's clock reached ``elapsed`` site seconds since its start
        (a span of site time, e.g. a ten-minute outage at x40)."""
        await rig.clock.sleep(max(0.0, float(elapsed) - rig.elapsed()))
        return truth()

    def truth() -> dict[str, Any]:
        """What the physics says now: per charger its state, currents, energy register
        and EV; per meter its currents and energy."""
        rig.site.advance()
        rig.site.publish()
        chargers = {}
        for cid, c in rig.site.chargers.items():
            m = c.model
            chargers[cid] = {
                "state": m.state, "currents": list(m.currents), "energy_wh": rig.energy_register(cid),
                "ev": None if m.ev is None else {"name": m.ev.name, "soc": m.ev.soc},
            }
        meters = {}
        for mid in rig.site.meters:
            r = rig.meter(mid)
            meters[mid] = {"current": list(r.current), "power_w": r.power_total, "energy_import_wh": r.energy_import_wh}
        return {"elapsed": rig.elapsed(), "chargers": chargers, "meters": meters}

    trace = Trace(rig)

    def trace_start(period: float | None = None) -> int:
        """Start recording ground truth (hil/trace.py); the number of the next sample."""
        if period is not None and not (isinstance(period, (int, float)) and period > 0):
            raise ControlError(f"trace_start: period must be a number of seconds > 0, got {period!r}")
        return trace.start(period)

    def trace_samples(since: int = 0) -> list[dict[str, Any]]:
        """Recorded samples numbered ``since`` and later (trace_start first)."""
        if not trace.running:
            raise ControlError("trace: nothing recorded; send trace_start first")
        return trace.since(int(since))

    return {"plug": plug, "unplug": unplug, "silent": silent, "back": back, "base_load": base_load,
            "energy": energy, "truth": truth, "wait_until": wait_until,
            "trace_start": trace_start, "trace": trace_samples}


# ---------------------------------------------------------------- the test CSMS's commands

def csms_commands(csms: Any) -> dict[str, Callable[..., Any]]:
    """CSMS-initiated calls, waits on the message log, tag rules and faults (hil.csms.server.TestCsms)."""
    from hil.csms.rules import Fault, TagRule
    from hil.csms.server import CallErrorReply

    def station_of(station: str | None) -> str:
        if station:
            return station
        if len(csms.stations) == 1:
            return next(iter(csms.stations))
        raise ControlError(f"name the station; connected so far: {', '.join(sorted(csms.stations)) or 'none'}")

    async def call(action: str, payload: dict[str, Any] | None = None, station: str | None = None,
                   timeout: float = 10.0) -> dict[str, Any]:
        """{"result": payload} or {"callerror": {"code", "description", "details"}}."""
        try:
            return {"result": await csms.call(station_of(station), action, payload or {}, timeout=timeout)}
        except CallErrorReply as exc:
            return {"callerror": {"code": exc.code, "description": exc.description, "details": exc.details}}

    async def wait_for(action: str | None = None, match: dict[str, Any] | None = None, count: int = 1,
                       since: int = 0, direction: str = "in", kind: str | None = "call",
                       station: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """The ``count``-th message (from log position ``since``) whose payload has every
        key/value of ``match``."""
        match = match or {}

        def matches(m: Any) -> bool:
            return isinstance(m.payload, dict) and all(m.payload.get(k) == v for k, v in match.items())

        msg = await csms.wait_for(action, matches, timeout, station=station, direction=direction, kind=kind,
                                  count=count, since=since)
        return msg.to_json()

    def messages(since: int = 0) -> list[dict[str, Any]]:
        return [m.to_json() for m in csms.log.select(since=since)]

    def log_len() -> int:
        return len(csms.log)

    def tags(rule: str) -> str:
        csms.tags = TagRule.parse(rule)
        return rule

    def fault(action: str, kind: str, times: int | None = None, after: bool = False, seconds: float = 0.0,
              code: str = "InternalError") -> str:
        csms.faults.set(action, Fault(kind, times=times, after=after, seconds=seconds, code=code))
        return f"{kind} on {action}"

    def clear_faults(action: str | None = None) -> None:
        csms.clear_faults(action)

    async def wait_connected(station: str, number: int = 1, timeout: float = 10.0) -> int:
        return (await csms.wait_connected(station, timeout, number=number)).number

    async def disconnect(station: str | None = None) -> None:
        await csms.disconnect(station_of(station))

    def abort(station: str | None = None) -> None:
        csms.abort(station_of(station))

    def freeze(station: str | None = None) -> None:
        csms.freeze(station_of(station))

    def thaw(station: str | None = None) -> None:
        csms.thaw(station_of(station))

    def transactions() -> dict[str, Any]:
        return {str(k): {"start": t.start, "stop": t.stop, "meter_values": len(t.meter_values)}
                for k, t in csms.transactions.items()}

    return {"call": call, "wait_for": wait_for, "messages": messages, "log_len": log_len, "tags": tags,
            "fault": fault, "clear_faults": clear_faults, "wait_connected": wait_connected,
            "disconnect": disconnect, "abort": abort, "freeze": freeze, "thaw": thaw,
            "transactions": transactions}
