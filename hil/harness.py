"""The whole site as REAL processes: the rig, the test CSMS and the agent, for end-to-end
tests, the demo and the kill soak.

``Harness(config, workdir)`` derives a private copy of a site config (free loopback
ports, pseudo-terminals and the state directory under ``workdir``, the uplink through a
proxy), then starts, each as its own process with its own log file in ``workdir/logs``
(hil/processes.py):

- the test CSMS (``python -m hil.csms``), frames logged to ``workdir/csms.jsonl``;
- the rig (``evsite hil``) with an empty scenario unless one is given;
- the agent (``evsite run``), exactly as systemd starts it: it is up when it sends
  READY=1 to the ``$NOTIFY_SOCKET`` the harness listens on. Its clock is real time
  unless ``agent_speed`` is given (test-only ``EVSITE_CLOCK_SPEED``): with the rig's
  ``speed`` too, both run in the same site time (the simulated day,
  tests/e2e/test_energy_day_processes.py).

Between agent and CSMS sits a ``LinkProxy`` (hil/linkproxy.py) that a test can cut,
turn into a black hole or slow down, while the CSMS process keeps running: its message
log and the transactionIds it assigned stay one continuous record.

What the harness does to the site: plug/unplug EVs and read the energy registers (the
rig's control channel, hil/control.py), present tags (the agent's control API, as
``evsite authorize`` does), kill -9 and restart the agent, make the CSMS call the agent
and wait for messages it received (its control channel), read its whole log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import re
import socket
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.clock import SPEED_ENV
from agent.config.load import load_config
from agent.config.model import SiteConfig
from agent.control.client import ControlClient
from hil.control import request
from hil.linkproxy import LinkProxy
from hil.processes import Child, ReadyListener, start_until_ready
from hil.rig import LOOPBACK, real_hardware

# ---------------------------------------------------------------- site configs

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def derive_config(source: str | Path, dest: str | Path, edit: Callable[[dict[str, Any], SiteConfig], None],
                  *, header: str = "") -> SiteConfig:
    """Write a changed copy of a site config, never touching the original: relative
    paths become absolute (they were relative to the original's directory), then
    ``edit(raw_toml_dict, loaded_config)`` changes what it needs. The copy is loaded
    back, so a change that breaks the config raises ConfigErrors naming it."""
    config = load_config(source)
    raw = tomllib.loads(Path(source).read_text(encoding="utf-8"))
    _absolute_paths(raw, config)
    edit(raw, config)
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    Path(dest).write_text(header + toml_text(raw), encoding="utf-8")
    return load_config(dest)


def _absolute_paths(raw: dict[str, Any], obj: Any) -> None:
    """Path-valued keys (``rule(path=...)`` in agent/config/model.py) take the loader's
    resolved value; walks tables and arrays of tables alongside the loaded config."""
    for f in dataclasses.fields(obj):
        if f.name not in raw:
            continue
        value = getattr(obj, f.name)
        if f.metadata.get("path") and isinstance(value, str) and value:
            raw[f.name] = value
        elif dataclasses.is_dataclass(value) and isinstance(raw[f.name], dict):
            _absolute_paths(raw[f.name], value)
        elif isinstance(value, list) and isinstance(raw[f.name], list):
            for r, o in zip(raw[f.name], value):
                if dataclasses.is_dataclass(o) and isinstance(r, dict):
                    _absolute_paths(r, o)


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_text(data: dict[str, Any]) -> str:
    """TOML for what tomllib reads from a site config (tables, arrays of tables, strings,
    numbers, booleans, arrays, inline tables)."""
    lines: list[str] = []
    _table(lines, [], data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(lines: list[str], path: list[str], table: dict[str, Any], header: str = "") -> None:
    if header:
        lines += ["", header]
    nested = {k: v for k, v in table.items() if isinstance(v, dict) or _tables(v)}
    lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items() if k not in nested]
    for k, v in nested.items():
        p = [*path, _key(k)]
        if isinstance(v, dict):
            _table(lines, p, v, f"[{'.'.join(p)}]")
        else:
            for item in v:
                _table(lines, p, item, f"[[{'.'.join(p)}]]")


def _tables(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k, ensure_ascii=False)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)   # JSON string escapes are TOML basic-string escapes
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as TOML")


def read_messages(path: str | Path) -> list[dict[str, Any]]:
    """The test CSMS's JSON-lines message log (hil/csms/log.py), in order."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def describe_message(m: dict[str, Any]) -> str:
    """One line for a person about a test CSMS log entry (the demo's view, failure
    reports), or "" for an answer that says nothing (StatusNotification's {}). A payload
    that breaks the schema is shown as JSON rather than failing the view."""
    try:
        return _describe(m)
    except (KeyError, TypeError, AttributeError):
        text = json.dumps(m.get("payload"), separators=(",", ":"))
        arrow = "->" if m.get("dir") == "in" else "<-"
        return f"{str(m.get('at', ''))[11:19]} {arrow} {m.get('kind')} {m.get('action')} {text[:70]}"


def _describe(m: dict[str, Any]) -> str:
    arrow = "->" if m["dir"] == "in" else "<-"          # station -> CSMS / CSMS -> station
    action, p, at = m.get("action") or "?", m.get("payload"), str(m.get("at", ""))[11:19]
    if m["kind"] == "error":
        return f"{at} {arrow} CALLERROR to {action}: {p.get('code')} {p.get('description', '')}".rstrip()
    if m["kind"] == "invalid":
        return f"{at} {arrow} not OCPP: {str(p)[:60]}"
    if not isinstance(p, dict):
        return ""
    if m["kind"] == "result":
        if action == "StartTransaction":
            return f"{at} {arrow} StartTransaction: transactionId {p.get('transactionId')} ({p['idTagInfo']['status']})"
        status = p.get("status") or (p.get("idTagInfo") or p.get("idTokenInfo") or {}).get("status")
        return f"{at} {arrow} {action}: {status}" if status else ""
    if action == "StatusNotification" and "connectorId" in p:
        err = "" if p.get("errorCode") in (None, "NoError") else f" ({p['errorCode']})"
        evse = f"evse {p['evseId']} " if "evseId" in p else ""          # 2.0.1
        return f"{at} {arrow} StatusNotification {evse}connector {p['connectorId']} " \
               f"{p.get('status') or p.get('connectorStatus')}{err}"
    if action == "StartTransaction":
        return f"{at} {arrow} StartTransaction connector {p['connectorId']} {p['idTag']} meterStart {p['meterStart']} Wh"
    if action == "StopTransaction":
        return f"{at} {arrow} StopTransaction #{p['transactionId']} meterStop {p['meterStop']} Wh {p.get('reason', 'Local')}"
    if action == "MeterValues":
        values = [v for mv in p.get("meterValue", []) for v in mv.get("sampledValue", [])
                  if v.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register"]
        tx = f" #{p['transactionId']}" if "transactionId" in p else ""
        energy = f": {values[0]['value']} Wh" if values else ""
        return f"{at} {arrow} MeterValues connector {p.get('connectorId')}{tx}{energy}"
    if action == "TransactionEvent":
        info = p.get("transactionInfo", {})
        return f"{at} {arrow} TransactionEvent {p.get('eventType')} {str(info.get('transactionId', ''))[:8]} seq {p.get('seqNo')}"
    text = json.dumps(p, separators=(",", ":"))
    return f"{at} {arrow} {action} {text[:70]}{'…' if len(text) > 70 else ''}"


class CsmsCallError(RuntimeError):
    """The agent answered a CSMS call with a CALLERROR."""

    def __init__(self, action: str, error: dict[str, Any]) -> None:
        super().__init__(f"{action}: CALLERROR {error['code']}: {error['description']}")
        self.code = error["code"]


# ---------------------------------------------------------------- the harness

class Harness:
    """Rig + test CSMS + agent as real processes around one site config, in ``workdir``."""

    def __init__(self, config: str | Path, workdir: str | Path, *, scenario: str | Path | None = None,
                 speed: float = 1.0, base_load: float = 4.0, csms_args: tuple[str, ...] = (),
                 python: str = sys.executable, agent_speed: float | None = None) -> None:
        self.source = Path(config)
        #: the agent's clock speed (test-only ``EVSITE_CLOCK_SPEED``, agent/clock.py); None:
        #: real time. Give it ``speed`` to run the agent in the rig's site time.
        self.agent_speed = agent_speed
        self.workdir = Path(workdir)
        self.logs = self.workdir / "logs"
        self.scenario, self.speed, self.base_load = scenario, speed, base_load
        self.csms_args, self.python = csms_args, python
        self.csms_log = self.workdir / "csms.jsonl"
        self.csms_socket = self.workdir / "csms.sock"
        self.rig_socket = self.workdir / "rig.sock"
        self.config: SiteConfig | None = None
        self.csms_proc: Child | None = None
        self.rig_proc: Child | None = None
        self.agent_proc: Child | None = None
        self.proxy: LinkProxy | None = None
        self._ready: ReadyListener | None = None
        #: argv put before the CSMS's (``ip netns exec NS``, hil/netns.py) and the address it
        #: listens on; the proxy forwards there
        self.csms_prefix: list[str] = []
        self.csms_host = "127.0.0.1"

    # -- lifecycle --
    async def start(self) -> Harness:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.csms_proc = Child("csms", self._csms_argv(0), self.logs / "csms.log")
        line = await self.csms_proc.start(ready=r"^listening on wss?://")
        assert line is not None
        self.proxy = await LinkProxy(urlsplit(line.split()[-1]).port or 0, self.csms_host).start()
        self.config = derive_config(self.source, self.workdir / "site.toml", self._edit,
                                    header=f"# derived from {self.source} by hil.harness\n")
        scenario = self.scenario
        if scenario is None:
            scenario = self.workdir / "harness-scenario.toml"
            scenario.write_text(f'[scenario]\nname = "harness"\nbase_load = {self.base_load!r}\n')
        self.rig_proc = Child("rig", [self.python, "-m", "agent.cli", "hil", str(scenario), "--config",
                                      str(self.workdir / "site.toml"), "--speed", repr(self.speed), "--summary", "0",
                                      "--control", str(self.rig_socket)], self.logs / "rig.log")
        await self.rig_proc.start(ready=r"^evsite hil: scenario ")
        self._ready = ReadyListener(self.workdir / "notify.sock")
        await self.start_agent()

    def _csms_argv(self, port: int) -> list[str]:
        return [*self.csms_prefix, self.python, "-m", "hil.csms", "--host", self.csms_host, "--port", str(port),
                "--log", str(self.csms_log), "--control", str(self.csms_socket), *self.csms_args]

    async def stop_csms(self) -> int | None:
        """Stop the CSMS process (SIGTERM); the proxy stays, refusing nothing but reaching no one."""
        assert self.csms_proc is not None
        return await self.csms_proc.stop()

    async def start_csms(self, csms_args: tuple[str, ...] | None = None) -> None:
        """Start the CSMS again on the port it had (``csms_args``, when given, replace the
        extra arguments: another certificate...). Its log file goes on; its memory (ids
        seen, transactionIds) starts afresh, as a real CSMS's may after a restart."""
        assert self.csms_proc is not None and self.proxy is not None
        if csms_args is not None:
            self.csms_args = csms_args
        self.csms_proc.argv = self._csms_argv(self.proxy.target[1])
        await self.csms_proc.start(ready=r"^listening on wss?://")

    def _edit(self, raw: dict[str, Any], config: SiteConfig) -> None:
        assert self.proxy is not None
        raw.setdefault("site", {})["state_dir"] = str(self.workdir / "state")
        raw.get("store", {}).pop("path", None)
        raw.get("control", {}).pop("socket", None)
        for bus, loaded in zip(raw.get("buses", []), config.buses):
            if real_hardware(loaded):
                continue
            if loaded.type == "tcp" and (loaded.host or "127.0.0.1") in LOOPBACK:
                bus["port"] = free_port()
            elif loaded.type == "rtu":
                bus["port"] = str(self.workdir / f"tty-{loaded.id}")
        uplink = raw.setdefault("uplink", {})
        path = urlsplit(config.uplink.url).path if config.uplink.url else "/ocpp"
        uplink["url"] = f"ws://127.0.0.1:{self.proxy.port}{path}"
        uplink.setdefault("station_id", "HARNESS")
        uplink["security_profile"] = 0

    async def stop(self) -> dict[str, int | None]:
        """Agent first (it may still be writing), then rig and CSMS; exit codes by name."""
        codes: dict[str, int | None] = {}
        for name in ("agent", "rig", "csms"):
            child = getattr(self, f"{name}_proc")
            codes[name] = await child.stop() if child is not None else None
        if self.proxy is not None:
            await self.proxy.close()
        if self._ready is not None:
            self._ready.close()
            self._ready = None
        return codes

    async def __aenter__(self) -> Harness:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the agent --
    @property
    def station(self) -> str:
        assert self.config is not None
        return self.config.uplink.station_id

    async def start_agent(self, timeout: float = 30.0) -> None:
        """Start (or restart) ``evsite run``; returns once it sent READY=1."""
        assert self._ready is not None
        if self.agent_proc is None:
            env = dict(os.environ, NOTIFY_SOCKET=str(self._ready.path))
            env.pop("WATCHDOG_USEC", None)
            env.pop(SPEED_ENV, None)
            if self.agent_speed is not None:
                env[SPEED_ENV] = repr(float(self.agent_speed))
            self.agent_proc = Child("agent", [self.python, "-m", "agent.cli", "run", "--config",
                                              str(self.workdir / "site.toml")], self.logs / "agent.log", env=env)
        await start_until_ready(self.agent_proc, self._ready, timeout)

    async def kill_agent(self) -> int:
        """kill -9 the agent; returns its exit status (-9)."""
        assert self.agent_proc is not None
        return await self.agent_proc.kill()

    async def stop_agent(self) -> int | None:
        assert self.agent_proc is not None
        return await self.agent_proc.stop()

    def agent_api(self, timeout: float = 10.0) -> ControlClient:
        assert self.config is not None
        return ControlClient(self.config.control_socket, timeout=timeout)

    async def agent_status(self) -> dict[str, Any]:
        return await self.agent_api().status()

    async def authorize(self, connector: int, tag: str, timeout: float = 40.0) -> dict[str, Any]:
        """Present ``tag`` at ``connector``, as ``evsite authorize`` does."""
        return await self.agent_api(timeout).post("/authorize", {"connector": connector, "tag": tag})

    async def wait_agent(self, predicate: Callable[[dict[str, Any]], Any], timeout: float = 15.0,
                         what: str = "condition") -> dict[str, Any]:
        """The agent's status once ``predicate(status)`` holds. The control API has no
        push, so this asks every 0.1 s: each answer is the agent's state at that moment."""
        status: dict[str, Any] = {}
        try:
            async with asyncio.timeout(timeout):
                while True:
                    status = await self.agent_status()
                    if predicate(status):
                        return status
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise TimeoutError(f"agent: {what} not reached within {timeout:g} s; sessions: "
                               f"{json.dumps(status.get('sessions'))}") from None

    @staticmethod
    def session(status: dict[str, Any], connector: int) -> dict[str, Any]:
        """One connector of the status's ``sessions`` section."""
        return next(c for c in status["sessions"]["connectors"] if c["connector_id"] == connector)

    # -- the uplink --
    def cut_link(self) -> None:
        assert self.proxy is not None
        self.proxy.cut()

    def blackhole_link(self) -> None:
        assert self.proxy is not None
        self.proxy.blackhole()

    def restore_link(self) -> None:
        assert self.proxy is not None
        self.proxy.restore()

    # -- the rig --
    async def rig(self, cmd: str, **args: Any) -> Any:
        return await request(self.rig_socket, cmd, args)

    async def plug(self, device: str, **ev: Any) -> dict[str, Any]:
        return await self.rig("plug", device=device, ev=ev)

    async def unplug(self, device: str) -> dict[str, Any]:
        return await self.rig("unplug", device=device)

    async def energy(self, device: str) -> float:
        """The charger's energy register as the emulator holds it now (ground truth)."""
        return float(await self.rig("energy", device=device))

    # -- the CSMS --
    async def csms(self, cmd: str, args: dict[str, Any] | None = None, *, wait: float = 30.0) -> Any:
        """One command to the CSMS process (hil/control.py csms_commands); ``wait``
        bounds the exchange."""
        return await request(self.csms_socket, cmd, args, timeout=wait)

    async def csms_call(self, action: str, payload: dict[str, Any] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """The CSMS calls the agent; the CALLRESULT payload, or CsmsCallError."""
        answer = await self.csms("call", {"action": action, "payload": payload or {}, "station": self.station,
                                          "timeout": timeout}, wait=timeout + 5)
        if "callerror" in answer:
            raise CsmsCallError(action, answer["callerror"])
        return answer["result"]

    async def wait_message(self, action: str | None = None, *, match: dict[str, Any] | None = None, count: int = 1,
                           since: int = 0, timeout: float = 15.0, direction: str = "in",
                           kind: str | None = "call") -> dict[str, Any]:
        """The ``count``-th message the CSMS logged (from position ``since``) matching;
        answered by the CSMS process as soon as it has it."""
        return await self.csms("wait_for", {"action": action, "match": match, "count": count, "since": since,
                                            "direction": direction, "kind": kind, "station": self.station,
                                            "timeout": timeout}, wait=timeout + 5)

    async def log_mark(self) -> int:
        """The CSMS log's length now: pass it as ``since`` to look only at what follows."""
        return int(await self.csms("log_len"))

    def messages(self) -> list[dict[str, Any]]:
        """Every message the CSMS logged so far (from its JSONL file)."""
        return read_messages(self.csms_log)
