"""The kill soak's driver: random sessions, kills and link cuts on a running harness, and
what it knows of each start attempt (hil/soak_check.SessionTruth) for the final check.

Run it through ``python -m hil.soak`` (hil/soak.py: the site, options, report). Each
``step()`` picks one action with the seeded random generator: plug or unplug an EV
(the rig), present a tag (the agent's control API, as ``evsite authorize``), have the
CSMS send RemoteStart/RemoteStopTransaction, present the tag again to stop, or let time
pass; now and then it cuts the uplink at the proxy for a few seconds. A kill timer
armed at a random delay kills the agent with -9 whatever is under way at that moment;
the next steps restart it after a random pause (EVs may leave meanwhile).

The bounds recorded for the check are ground truth read from the rig at the moment
that makes them safe (see each method); a stop's cause is recorded *before* the command
that causes it, a kill's *before* the signal with no await in between, so no session
can end in a way the driver did not write down.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from typing import TYPE_CHECKING, Any

from agent.control.client import AgentUnreachable, ControlAPIError
from hil.control import ControlError
from hil.harness import CsmsCallError, Harness, read_messages
from hil.processes import ChildExited
from hil.rss import RssSampler
from hil.soak_check import Cause, SessionTruth, check
from hil.storeview import read_store

if TYPE_CHECKING:
    from hil.soak import SoakOptions

CONNECTORS = (1, 2)
STATION = "SOAK-SITE"
AGENT_ERRORS = (AgentUnreachable, ControlAPIError, ControlError, CsmsCallError, TimeoutError, ConnectionError)


class SoakDriver:
    def __init__(self, h: Harness, opts: SoakOptions) -> None:
        self.h, self.opts = h, opts
        self.rng = random.Random(opts.seed)
        self.sessions: list[SessionTruth] = []
        self.open: dict[int, list[SessionTruth]] = {c: [] for c in CONNECTORS}   # may end at a kill
        self.unbounded: dict[int, list[SessionTruth]] = {c: [] for c in CONNECTORS}   # no stop_hi yet
        self.plug_wh: dict[int, float | None] = {c: None for c in CONNECTORS}
        self.kills = self.cuts = 0
        self.cut_until: float | None = None
        self.kill_timer: asyncio.Task[None] | None = None
        self.killing = False
        self.kills_on = False
        self.tags = itertools.count(1)
        self.t0 = time.monotonic()
        self.actions = open(opts.out / "actions.log", "a", encoding="utf-8")   # noqa: SIM115 (closed in run)

    # -- bookkeeping --
    def now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def note(self, text: str) -> None:
        self.actions.write(f"{self.now():9.3f} {text}\n")
        self.actions.flush()

    @property
    def agent_up(self) -> bool:
        return self.h.agent_proc is not None and self.h.agent_proc.running

    async def registers(self) -> dict[int, float]:
        truth = await self.h.rig("truth")
        return {c: float(truth["chargers"][f"c{c}"]["energy_wh"]) for c in CONNECTORS}

    async def status(self) -> dict[str, Any] | None:
        try:
            return await self.h.agent_api(3.0).status() if self.agent_up else None
        except AGENT_ERRORS:
            return None

    # -- kills --
    def arm_kill(self, delay: float, *, sooner: bool = False) -> None:
        """Kill after ``delay`` unless a kill is already due; ``sooner``: this one
        replaces a timer still waiting (a kill aimed at the command about to go out)."""
        if sooner and self.kill_timer is not None and not self.kill_timer.done() and not self.killing:
            self.kill_timer.cancel()
        if self.kill_timer is None or self.kill_timer.done():
            self.kill_timer = asyncio.create_task(self._kill_after(delay), name="soak kill timer")

    def aim_kill(self) -> None:
        """Now and then, a kill while the command about to go out is under way."""
        if self.kills_on and self.rng.random() < 0.25:
            self.arm_kill(self.rng.uniform(0.0, 0.06), sooner=True)

    async def _kill_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self.killing = True
        try:
            await self.kill()
        finally:
            self.killing = False

    async def kill(self) -> None:
        if not self.agent_up:
            return
        regs = await self.registers()
        # no await from here to the signal: every session that may be open now sees this kill
        for c, sessions in self.open.items():
            for s in sessions:
                s.causes.append(Cause("kill", self.now(), regs[c]))
                s.kills += 1
        self.kills += 1
        self.note(f"kill -9 #{self.kills} (registers {regs})")
        await self.h.kill_agent()

    async def restart(self) -> None:
        try:
            await self.h.start_agent()
        except ChildExited as exc:
            raise RuntimeError(f"the agent did not come back after kill #{self.kills}: {exc}") from None
        self.note("agent restarted")

    # -- the site --
    async def may_plug(self, c: int) -> bool:
        """The agent saw connector ``c`` empty and then finished a whole poll cycle (its
        setpoint writes included). Else a replug within one poll would look to it like
        the same EV (its transaction going on), or an EV would draw from a charger the
        dead agent left enabled: energy no transaction counts."""
        if not self.agent_up:
            return False
        try:
            st = await self.h.wait_agent(lambda st: Harness.session(st, c)["status"] == "Available", timeout=5,
                                         what=f"c{c} empty")
            await self.h.wait_agent(lambda now: now["tick"] > st["tick"], timeout=5, what="one more poll")
        except AGENT_ERRORS:
            return False
        # Available was recorded after any transaction here ended (a start needs Preparing
        # first): a start left uncertain either ended or never happened, and cannot any more
        self.open[c] = []
        return True

    async def plug(self, c: int) -> None:
        if not await self.may_plug(c):
            return
        ev = {"capacity_kwh": self.rng.choice([20, 40, 60]), "soc": round(self.rng.uniform(0.2, 0.7), 2),
              "ramp_delay": round(self.rng.uniform(0.5, 3.0), 1)}
        await self.h.plug(f"c{c}", **ev)
        self.plug_wh[c] = (await self.registers())[c]
        self.note(f"plug c{c} {ev} at {self.plug_wh[c]:g} Wh")

    async def unplug(self, c: int) -> None:
        await self.h.unplug(f"c{c}")
        wh = (await self.registers())[c]       # frozen from now on
        for s in self.open[c]:
            s.causes.append(Cause("unplug", self.now(), wh))
        for s in self.unbounded[c]:            # whatever ended them, their stop is not above this
            s.stop_hi = wh if s.stop_hi is None else min(s.stop_hi, wh)
        self.unbounded[c] = []
        self.plug_wh[c] = None
        self.note(f"unplug c{c} at {wh:g} Wh")

    async def retire(self) -> None:
        """Sessions whose stop the CSMS has (or that never started) cannot meet a kill."""
        if not any(self.open.values()):
            return
        txs = await self.h.csms("transactions")
        stopped = {t["start"]["idTag"] for t in txs.values() if t.get("start") and t.get("stop")}
        for c in CONNECTORS:
            self.open[c] = [s for s in self.open[c] if s.tag not in stopped]

    # -- sessions --
    async def start(self, c: int, how: str) -> None:
        st = await self.status()
        if st is None:
            return
        conn = Harness.session(st, c)
        if conn["status"] != "Preparing" or conn["tx_id"] is not None or conn["energy_wh"] is None \
                or self.plug_wh[c] is None:
            return      # (without a reading the start would wait for the next poll)
        if how == "remote" and st["uplink"]["state"] != "connected":
            how = "authorize"
        regs = await self.registers()
        s = SessionTruth(f"{next(self.tags):04X}-SOAK", c, how, self.now(), self.plug_wh[c], regs[c])
        self.sessions.append(s)
        self.open[c].append(s)
        self.unbounded[c].append(s)
        self.aim_kill()
        try:
            if how == "authorize":
                ans = await self.h.authorize(c, s.tag, timeout=12)
                s.outcome = ("started" if ans["effect"] == "transaction started"
                             else "refused" if ans["status"] != "Accepted" else "uncertain")
            else:
                res = await self.h.csms_call("RemoteStartTransaction", {"connectorId": c, "idTag": s.tag}, timeout=8)
                s.outcome = "refused" if res["status"] != "Accepted" else "uncertain"
                st = await self.status()
                if s.outcome == "uncertain" and st and (Harness.session(st, c)["id_tag"] or "")[:4] == s.tag[:4]:
                    s.outcome = "started"
        except AGENT_ERRORS as exc:
            s.outcome = "uncertain"
            self.note(f"  {s.tag}: no answer ({type(exc).__name__})")
        if s.outcome == "started":
            s.confirmed = self.now()
        if s.outcome == "refused":
            self.open[c].remove(s)
            self.unbounded[c].remove(s)
        self.note(f"start c{c} {s.tag} by {how}: {s.outcome}")

    def stoppable(self, c: int) -> SessionTruth | None:
        return next((s for s in self.open[c] if s.outcome == "started" and not s.causes), None)

    async def stop(self, c: int, how: str) -> None:
        s = self.stoppable(c)
        if s is None or not self.agent_up:
            return
        tx = None
        if how == "remote":
            txs = await self.h.csms("transactions")
            tx = next((int(k) for k, t in txs.items() if (t.get("start") or {}).get("idTag") == s.tag), None)
            if tx is None:
                return               # its StartTransaction is not delivered yet
        lo = (await self.registers())[c]
        try:    # the agent's own reading reaches ``lo`` first: its stop cannot carry less
            await self.h.wait_agent(lambda st: (Harness.session(st, c)["energy_wh"] or 0) >= round(lo) - 1,
                                    timeout=3, what="a reading at the register")
        except AGENT_ERRORS:
            return
        s.causes.append(Cause(how, self.now(), lo))
        self.aim_kill()
        try:
            if how == "remote":
                res = await self.h.csms_call("RemoteStopTransaction", {"transactionId": tx}, timeout=8)
                done = res["status"] == "Accepted"
            else:
                done = (await self.h.authorize(c, s.tag, timeout=12))["effect"] == "transaction stopped"
        except AGENT_ERRORS as exc:
            self.note(f"  {s.tag}: no answer ({type(exc).__name__})")
            done = False
        if done:
            s.stop_confirmed = self.now()
            hi = (await self.registers())[c]
            s.stop_hi = hi if s.stop_hi is None else min(s.stop_hi, hi)
        self.note(f"stop c{c} {s.tag} by {how} from {lo:g} Wh: {'confirmed' if done else 'no confirmation'}")

    # -- the link --
    def link(self) -> None:
        if self.cut_until is not None and time.monotonic() >= self.cut_until:
            self.h.restore_link()
            self.cut_until = None
            self.note("link restored")
        elif self.cut_until is None and self.rng.random() < 0.04:
            seconds = round(self.rng.uniform(0.5, 4.0), 1)
            self.h.cut_link()
            self.cuts += 1
            self.cut_until = time.monotonic() + seconds
            self.note(f"link cut for {seconds:g} s")

    # -- the loop --
    async def step(self, kills: bool) -> None:
        self.link()
        rng = self.rng
        if not self.agent_up:
            if rng.random() < 0.5:
                await self.site_action(agent=False)
            else:
                await asyncio.sleep(rng.uniform(0.0, 0.8))
                await self.restart()
                if kills and self.kills < self.opts.kills:
                    self.arm_kill(rng.uniform(0.0, 0.6) if rng.random() < 0.15 else rng.uniform(0.3, 2 * self.opts.uptime))
            return
        self.kills_on = kills and self.kills < self.opts.kills
        if self.kills_on:
            self.arm_kill(rng.uniform(0.3, 2 * self.opts.uptime))
        await self.site_action(agent=True)
        if rng.random() < 0.2:
            await self.retire()

    async def site_action(self, agent: bool) -> None:
        choices: list[tuple[str, int]] = [("wait", 0)] * 2
        for c in CONNECTORS:
            if self.plug_wh[c] is None:
                choices += [("plug", c)] * (3 if agent else 0)
                continue
            idle = not any(s.outcome in ("started", "uncertain") for s in self.open[c])
            choices += [("unplug", c)] * (1 if idle else 2)
            if agent and idle:
                choices += [("authorize", c)] * 4 + [("remote", c)] * 3
            if agent and self.stoppable(c):
                choices += [("local_stop", c), ("remote_stop", c)] + [("wait", 0)] * 4
        what, c = self.rng.choice(choices)
        if what == "wait":
            await asyncio.sleep(self.rng.uniform(0.1, 1.2))
        elif what == "plug":
            await self.plug(c)
        elif what == "unplug":
            await self.unplug(c)
        elif what in ("authorize", "remote"):
            await self.start(c, what)
        else:
            await self.stop(c, what.split("_")[0])

    async def setup(self) -> None:
        await self.h.wait_message("StatusNotification", match={"connectorId": CONNECTORS[-1]}, timeout=30)
        for key, value in (("AllowOfflineTxForUnknownId", "true"), ("MeterValueSampleInterval", "1")):
            assert await self.h.csms_call("ChangeConfiguration", {"key": key, "value": value}) == {"status": "Accepted"}

    async def drain(self) -> list[str]:
        """Link back, EVs out, everything delivered; the store's leftovers as problems."""
        if self.kill_timer is not None:
            # a kill under way is let finish: cancelled after its signal, it never saw the
            # process exit, so the agent looked up while dead and was not restarted
            if not self.killing:
                self.kill_timer.cancel()
            await asyncio.gather(self.kill_timer, return_exceptions=True)
        if not self.agent_up:
            await self.restart()
        self.h.restore_link()
        for c in CONNECTORS:
            if self.plug_wh[c] is not None:
                await self.unplug(c)
        for _ in range(5):
            await self.h.wait_agent(lambda st: st["sessions"]["link_online"] and all(
                Harness.session(st, c)["status"] == "Available" for c in CONNECTORS), timeout=60, what="an idle site")
            await self._all_stopped(timeout=60)
            await self.h.stop_agent()
            view = await read_store(self.h.config.store_path)   # type: ignore[union-attr]
            if not view.queued_tx:
                return view.problems()
            await self.restart()
        return view.problems()

    async def _all_stopped(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            txs = await self.h.csms("transactions")
            if all(t.get("stop") for t in txs.values()):
                return
            await asyncio.sleep(0.2)

    async def run(self) -> dict[str, Any]:
        sampler = RssSampler(lambda: self.h.agent_proc.pid if self.agent_up else None, self.opts.rss_period).start()
        try:
            await self.setup()
            while self.kills < self.opts.kills:
                await self.step(kills=True)
            steady_from = time.monotonic()
            while time.monotonic() - steady_from < self.opts.steady:
                if not self.agent_up:
                    await self.restart()
                await self.step(kills=False)
            rss = await sampler.stop()
            leftovers = await self.drain()
        finally:
            await sampler.stop()
            self.actions.close()
        result = check(self.sessions, read_messages(self.h.csms_log), STATION)
        result.problems += leftovers
        grew, memory = rss.verdict(self.opts.warmup) if self.opts.steady else (False, "no steady phase: not judged")
        if grew:
            result.problems.append(f"memory grew: {memory}")
        return {"ok": result.ok, "seed": self.opts.seed, "kills": self.kills, "link_cuts": self.cuts,
                "problems": result.problems, "stats": result.stats, "rss": {**rss.summary(), "verdict": memory},
                "replay": self.opts.replay(), "out": str(self.opts.out)}
