"""``evsite demo``: an emulated site, a local test CSMS and the agent, with a live view.

Three child processes (hil/processes.py), each logging to ``<state_dir>/demo/``:

- ``csms``: the test CSMS (``python -m hil.csms``) at the config's uplink URL, every
  frame in ``csms.jsonl``; not started with ``--csms URL``, where the agent connects to
  that CSMS instead (how a user tries evsite against their own back end);
- ``rig``: ``evsite hil SCENARIO`` emulating every charger and meter of the config;
- ``agent``: ``evsite run`` with a derived config (``<state_dir>/demo/site.toml``: the
  uplink pointed at the CSMS in use, the OCPP version chosen); the user's file is never
  edited. It is up when it tells ``$NOTIFY_SOCKET`` READY=1, as under systemd.

Tags: the demo chargers have no card reader, so the demo plays the driver. When a
connector has shown Preparing (cable in, no transaction) for ``AUTH_DELAY`` seconds it
presents ``<tag-prefix><connector>`` through the agent's control API, exactly what
``evsite authorize`` does; the test CSMS accepts every tag. The demo's own CSMS also
sets MeterValueSampleInterval to 10 s once the station is connected, so meter values
show up within a short demo.

The view (one frame per second on a terminal): per connector its status, transaction,
energy, current and setpoint; the uplink; the last OCPP messages (from the test CSMS's
log, or the agent's own ``uplink.recent`` with ``--csms``); the scenario's events. Not on
a terminal, new messages and events are printed as lines and the full view every 10 s.

Ctrl-C, SIGTERM or ``--duration``: the agent stops first (it closes its store), then the
rig and the CSMS; exit 0 when all three stopped cleanly. Exit 2 for input that cannot
work (config, scenario, URL, an OCPP version this build lacks), 1 when a part failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

AUTH_DELAY = 3.0
REFRESH = 1.0
PLAIN_FRAME_EVERY = 10.0
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "demo.toml"
FALLBACK_CONFIG = Path("/etc/evsite/examples/demo.toml")
EXIT_INPUT = 2


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="emulated site + local CSMS + the agent, with a live view",
                       description="Run the agent on an emulated site (no hardware) against a local test CSMS "
                                   "or your own (--csms), with a live view. Ctrl-C stops everything.")
    p.add_argument("--config", metavar="FILE", help="site config to emulate (default: config/demo.toml)")
    p.add_argument("--ocpp", choices=("1.6", "2.0.1"), help="OCPP version the agent speaks (default: the config's)")
    p.add_argument("--csms", metavar="URL", help="connect to this CSMS (ws:// or wss://) instead of starting the test CSMS")
    p.add_argument("--speed", type=float, default=1.0, help="site seconds per real second for the emulated site (default 1)")
    p.add_argument("--scenario", default="demo", metavar="NAME", help="scenario name or file (default: demo)")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--tag-prefix", default="DEMO-", metavar="TEXT",
                   help="the demo presents TEXT<connector> at each plugged connector (default DEMO-)")
    p.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"evsite demo: {message}", file=sys.stderr)
    return EXIT_INPUT


def version_problem(version: str, find_spec: Any = importlib.util.find_spec) -> str | None:
    """Why the agent cannot speak ``version`` in this build (None: it can)."""
    if version == "2.0.1" and find_spec("agent.uplink.v201") is None:
        return "OCPP 2.0.1 is not available in this build yet (agent/uplink/v201 is not built); use --ocpp 1.6"
    return None


def run(args: argparse.Namespace) -> int:
    from agent.config.issues import ConfigErrors, ConfigUnreadable
    from agent.config.load import load_config
    from hil.scenario import ScenarioError, check_against, load_scenario

    if not args.speed > 0:
        return _fail(f"--speed must be > 0, got {args.speed:g}")
    if args.duration is not None and not args.duration > 0:
        return _fail(f"--duration must be > 0 s, got {args.duration:g}")
    if args.csms and urlsplit(args.csms).scheme not in ("ws", "wss"):
        return _fail(f"--csms {args.csms!r}: the URL must start with ws:// or wss://")
    if not 1 <= len(args.tag_prefix) <= 17:
        return _fail("--tag-prefix must be 1..17 characters (an OCPP 1.6 idTag has at most 20)")
    path = Path(args.config) if args.config else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else FALLBACK_CONFIG)
    try:
        config = load_config(path)
    except ConfigUnreadable as exc:
        return _fail(str(exc))
    except ConfigErrors as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return _fail(f"{path}: {len(exc.issues)} error(s); not starting")
    version = args.ocpp or config.uplink.ocpp
    if (why := version_problem(version)) is not None:
        return _fail(why)
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return _fail(f"scenario {args.scenario}: {len(exc.problems)} error(s); not starting")
    if problems := check_against(scenario, config):
        print("\n".join(problems), file=sys.stderr)
        return _fail(f"scenario {scenario.source} does not fit the site {path}")
    return asyncio.run(Demo(args, path, config, version, scenario.source).run())


class Demo:
    def __init__(self, args: argparse.Namespace, path: Path, config: Any, version: str, scenario: str) -> None:
        self.args, self.path, self.version, self.scenario = args, path, version, scenario
        self.workdir = Path(config.site.state_dir) / "demo"
        self.site = config
        self.csms_url = args.csms or ""
        self.children: dict[str, Any] = {}
        self.ready: Any = None
        self.status: dict[str, Any] | None = None
        self.status_error = ""
        self.ocpp: deque[str] = deque(maxlen=12)
        self.events: deque[str] = deque(maxlen=6)
        self.tx_ids: dict[int, Any] = {}          # connector -> the CSMS's transactionId (test CSMS)
        self._log_pos = 0
        self._starts: dict[str, Any] = {}         # StartTransaction call id -> connector
        self._rig_lines = 0
        self._preparing: dict[int, float] = {}
        self._presented: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started = time.monotonic()
        self.tty = sys.stdout.isatty()

    # ---------------------------------------------------------------- lifecycle
    async def run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        failed = ""
        try:
            try:
                await self._start()
            except Exception as exc:
                failed = str(exc)
            else:
                failed = await self._loop(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            codes = await self._stop()
        if failed:
            print(f"evsite demo: {failed}", file=sys.stderr)
            return 1
        unclean = {name: rc for name, rc in codes.items() if rc not in (0, None)}
        if unclean:
            print(f"evsite demo: stopped, but not cleanly: {unclean}; logs in {self.workdir}", file=sys.stderr)
            return 1
        print(f"evsite demo: stopped cleanly; logs in {self.workdir}", flush=True)
        return 0

    async def _start(self) -> None:
        from hil.harness import derive_config
        from hil.processes import Child, ReadyListener, start_until_ready

        py = sys.executable
        self.workdir.mkdir(parents=True, exist_ok=True)
        logs = self.workdir
        if not self.csms_url:
            url = urlsplit(self.site.uplink.url or "ws://127.0.0.1:9000/ocpp")
            port = url.port if url.hostname in ("127.0.0.1", "localhost", "::1") and url.port else 0
            csms = self.children["csms"] = Child("csms", [
                py, "-m", "hil.csms", "--port", str(port), "--log", str(self.workdir / "csms.jsonl"),
                "--control", str(self.workdir / "csms.sock")], logs / "csms.log")
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / "csms.jsonl").unlink()   # this run's messages only
            line = await csms.start(ready=r"^listening on ws://", timeout=20)
            assert line is not None
            self.csms_url = line.split()[-1].rstrip("/") + (url.path or "/ocpp")
        site_file = self.workdir / "site.toml"

        def edit(raw: dict[str, Any], config: Any) -> None:
            up = raw.setdefault("uplink", {})
            up.update(enabled=True, url=self.csms_url, ocpp=self.version)
            up.setdefault("station_id", "EVSITE-DEMO")

        self.site = derive_config(self.path, site_file, edit, header=f"# written by evsite demo from {self.path}; "
                                                                     f"edit that file, not this one\n")
        if "csms" in self.children:
            # a fresh test CSMS and freshly emulated registers: a store from an earlier demo
            # would only replay that run's transactions at a CSMS that never saw them
            self._fresh_store(Path(self.site.store_path))
        rig = self.children["rig"] = Child("rig", [
            py, "-m", "agent.cli", "hil", str(self.scenario), "--config", str(site_file), "--speed",
            repr(self.args.speed), "--summary", "0", "--control", str(self.workdir / "rig.sock")], logs / "rig.log")
        await rig.start(ready=r"^evsite hil: scenario ", timeout=30)
        self.ready = ReadyListener(self.workdir / "notify.sock")
        env = dict(os.environ, NOTIFY_SOCKET=str(self.ready.path))
        env.pop("WATCHDOG_USEC", None)
        agent = self.children["agent"] = Child("agent", [py, "-m", "agent.cli", "run", "--config", str(site_file)],
                                               logs / "agent.log", env=env)
        await start_until_ready(agent, self.ready, timeout=60)
        pids = ", ".join(f"{name} pid {c.pid}" for name, c in self.children.items())
        print(f"evsite demo: agent up; {pids}; OCPP {self.version} to {self.csms_url}/{self.site.uplink.station_id}",
              flush=True)
        if "csms" in self.children:
            self._spawn(self._csms_settings(), "csms settings")

    @staticmethod
    def _fresh_store(path: Path) -> None:
        gone = [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
        for p in gone:
            p.unlink()
        if gone:
            print(f"evsite demo: starting from an empty store ({path} of an earlier demo removed)", flush=True)

    async def _stop(self) -> dict[str, int | None]:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        codes = {}
        for name in ("agent", "rig", "csms"):       # the agent first: it may still be writing
            if name in self.children:
                codes[name] = await self.children[name].stop()
        if self.ready is not None:
            self.ready.close()
        if not self.tty and self.status is not None:
            print(self.frame(), flush=True)
        return codes

    async def _loop(self, stop: asyncio.Event) -> str:
        deadline = None if self.args.duration is None else time.monotonic() + self.args.duration
        last_plain = 0.0
        while not stop.is_set():
            for name, child in self.children.items():
                if not child.running:
                    return f"{name} exited unexpectedly ({child.proc.returncode}); last lines:\n  {child.tail()}"
            await self._refresh()
            now = time.monotonic()
            if self.tty:
                sys.stdout.write("\x1b[H\x1b[2J" + self.frame() + "\n")
                sys.stdout.flush()
            elif now - last_plain >= PLAIN_FRAME_EVERY:
                print(self.frame(), flush=True)
                last_plain = now
            if deadline is not None and now >= deadline:
                break
            wait = REFRESH if deadline is None else max(0.0, min(REFRESH, deadline - now))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await stop.wait()
        return ""

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------- what the demo does
    async def _csms_settings(self) -> None:
        from hil.control import ControlError, request

        sock = self.workdir / "csms.sock"
        try:
            # after the boot was answered: a CSMS does not call a station that has not booted
            await request(sock, "wait_for", {"action": "BootNotification", "direction": "out", "kind": "result",
                                             "timeout": 60}, timeout=65)
            key = "MeterValueSampleInterval" if self.version == "1.6" else None
            if key:
                await request(sock, "call", {"action": "ChangeConfiguration", "payload": {"key": key, "value": "10"},
                                             "station": self.site.uplink.station_id})
        except ControlError as exc:
            self._event(f"test CSMS: {exc}")

    async def _present(self, connector: int) -> None:
        from agent.control.client import AgentUnreachable, ControlAPIError, ControlClient

        tag = f"{self.args.tag_prefix}{connector}"
        try:
            answer = await ControlClient(self.site.control_socket, timeout=45).post(
                "/authorize", {"connector": connector, "tag": tag})
        except (AgentUnreachable, ControlAPIError) as exc:
            self._event(f"connector {connector}: presenting {tag} failed: {exc}")
            return
        effect = f", {answer['effect']}" if answer.get("effect") else ""
        self._event(f"connector {connector}: presented {tag}: {answer['status']} ({answer['source']}){effect}")

    def _authorize_plugged(self) -> None:
        """Present a tag at every connector Preparing for AUTH_DELAY s, once per plug-in."""
        now = time.monotonic()
        for c in (self.status or {}).get("sessions", {}).get("connectors", []):
            cid = c["connector_id"]
            if c["status"] == "Preparing" and c["tx_id"] is None:
                since = self._preparing.setdefault(cid, now)
                if now - since >= AUTH_DELAY and cid not in self._presented:
                    self._presented.add(cid)
                    self._spawn(self._present(cid), f"present tag {cid}")
            else:
                self._preparing.pop(cid, None)
                if c["status"] in ("Available", "Finishing", "Unavailable", "Faulted"):
                    self._presented.discard(cid)

    def _event(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        self.events.append(line)
        if not self.tty:
            print(f"demo  {line}", flush=True)

    async def _refresh(self) -> None:
        from agent.control.client import AgentUnreachable, ControlAPIError, ControlClient

        try:
            self.status = await ControlClient(self.site.control_socket, timeout=2).status()
            self.status_error = ""
        except (AgentUnreachable, ControlAPIError) as exc:
            self.status_error = str(exc)
        rig = self.children["rig"]
        for line in rig.lines[self._rig_lines:]:
            if line.startswith("["):
                self.events.append(line)
                if not self.tty:
                    print(f"site  {line}", flush=True)
        self._rig_lines = len(rig.lines)
        self._read_messages()
        self._authorize_plugged()

    def _read_messages(self) -> None:
        from hil.harness import describe_message

        if "csms" not in self.children:
            recent = ((self.status or {}).get("uplink") or {}).get("recent") or []
            self.ocpp.clear()
            self.ocpp.extend(recent)
            return
        try:
            with open(self.workdir / "csms.jsonl", encoding="utf-8") as f:
                f.seek(self._log_pos)
                text = f.read()
        except FileNotFoundError:
            return
        complete = text[:text.rfind("\n") + 1]
        self._log_pos += len(complete.encode())
        for raw in complete.splitlines():
            m = json.loads(raw)
            self._remember_tx(m)
            line = describe_message(m)
            if line:
                self.ocpp.append(line)
                if not self.tty:
                    print(f"ocpp  {line}", flush=True)

    def _remember_tx(self, m: dict[str, Any]) -> None:
        """Which connector each 1.6 transactionId the CSMS assigned belongs to."""
        if m["action"] != "StartTransaction" or not isinstance(m["payload"], dict):
            return
        if m["kind"] == "call":
            self._starts[m["id"]] = m["payload"].get("connectorId")
        elif m["kind"] == "result" and m["id"] in self._starts:
            self.tx_ids[self._starts.pop(m["id"])] = m["payload"].get("transactionId")

    # ---------------------------------------------------------------- the view
    def frame(self) -> str:
        s = self.status or {}
        up = s.get("uplink") or {}
        age = time.monotonic() - self.started
        out = [f"evsite demo: {self.site.site.name!r}, scenario {Path(self.scenario).stem} at x{self.args.speed:g}, "
               f"up {age:.0f} s (Ctrl-C stops)"]
        state = up.get("state", "?")
        if up.get("version"):
            state += f", OCPP {up['version']}, boot {up.get('boot') or '-'}, {up.get('delivered', 0)} delivered"
        if up.get("last_error"):
            state += f", last error: {up['last_error']}"
        out.append(f"uplink  {self.csms_url}/{self.site.uplink.station_id}: {state}")
        grid = (s.get("site") or {}).get("grid")
        if grid:
            power = f"  {grid['power_w'] / 1000:.1f} kW" if grid.get("power_w") is not None else ""
            out.append(f"grid    {_amps(grid.get('current'))} A{power}" + (" STALE" if grid.get("stale") else ""))
        if self.status_error:
            out.append(f"agent   {self.status_error}")
        sessions = {c["connector_id"]: c for c in (s.get("sessions") or {}).get("connectors", [])}
        rows = [("CONN", "DEVICE", "STATUS", "TRANSACTION", "ENERGY kWh", "CURRENT A", "SETPOINT")]
        for c in s.get("connectors", []):
            cid = c["connector_id"]
            sess = sessions.get(cid, {})
            tx = "-"
            if sess.get("tx_id"):
                delivered = (sess.get("energy_wh") or 0) - (sess.get("meter_start_wh") or 0)
                name = self.tx_ids.get(cid) or sess["tx_id"][:8]
                tx = f"#{name} {sess.get('id_tag') or ''} +{delivered / 1000:.2f} kWh"
            sp = c.get("setpoint")
            setpoint = "-" if not sp else (f"{sp['amps']:.1f} A {sp['phases']}p" if sp.get("enabled", True) else "off")
            energy = c.get("energy_wh")
            rows.append((str(cid), str(c.get("device")), str(sess.get("status") or c.get("state") or "-"), tx,
                         "-" if energy is None else f"{energy / 1000:.3f}", _amps(c.get("current")), setpoint))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        out += [""] + ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        source = "test CSMS log" if "csms" in self.children else "agent's uplink.recent"
        out += ["", f"OCPP messages ({source}):"] + [f"  {line}" for line in self.ocpp]
        out += ["", "site and demo events:"] + [f"  {line}" for line in self.events]
        out += ["", f"logs: {self.workdir}/{{agent,rig,csms}}.log"]
        return "\n".join(out)


def _amps(values: Any) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "-"
