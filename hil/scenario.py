"""Scenarios: what happens on an emulated site, as a data file of timed events.

A scenario is TOML, so a test engineer writes "an EV arrives at charger 2 after 30 s,
the grid meter dies at 120 s" without code, and the same file drives a unit test, the
in-process rig and ``evsite hil``. Files are checked strictly, because a typo in a
scenario silently changes what a test proves: unknown keys, wrong types, an unplug
with nothing plugged in are errors naming the file, the event (1-based, in file order,
with its line) and the key. ``check_against`` then checks a scenario against a site
config (device ids, roles, quantities of the device's profile).

```toml
[scenario]
name = "short"
description = "free text"
base_load = [4, 2, 2]            # A per phase at start (one number = every phase)
duration = 60                    # optional: seconds the scenario is meant to run

[[events]]
at = 1.0                         # seconds from start
action = "plug"                  # plug | unplug | base_load | silent | back | fault
device = "terra"
note = "free text, printed when the event happens"
ev = { capacity_kwh = 40, soc = 0.5, max_current = 16, phases = 3, ramp_delay = 2 }

[[events]]
at = 5
action = "base_load"
amps = 12                        # every phase; or [L1, L2, L3]; or with phase = "L2"

[[events]]
at = 8
action = "fault"                 # exception: every request (or one quantity's) answers code
device = "grid"                  # nan / garbage: one quantity reads NaN/sentinel / nonsense
kind = "nan"
quantity = "power"
```

``silent`` makes a device stop answering; ``back`` clears every fault on it.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

from hil.model import PHASES, Ev

SCENARIO_DIR = Path(__file__).with_name("scenarios")
ACTIONS = ("plug", "unplug", "base_load", "silent", "back", "fault")
FAULT_KINDS = ("exception", "nan", "garbage")
#: Modbus exception codes a scenario may inject
EXCEPTION_CODES = (1, 2, 3, 4, 5, 6, 10, 11)
EV_KEYS = tuple(f.name for f in fields(Ev))

_EVENT_KEYS = {
    "plug": {"device", "ev"},
    "unplug": {"device"},
    "base_load": {"amps", "phase"},
    "silent": {"device"},
    "back": {"device"},
    "fault": {"device", "kind", "quantity", "code"},
}
_COMMON_KEYS = {"at", "action", "note"}
_HEADER_KEYS = {"name", "description", "base_load", "duration"}


class ScenarioError(ValueError):
    """A scenario file is wrong; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Event:
    """One timed event. ``params`` holds the action's own keys, already checked."""

    index: int                      # 1-based position in the file
    at: float
    action: str
    device: str = ""
    note: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def new_ev(self) -> Ev:
        """A fresh EV for a plug event (an Ev is mutable: each run gets its own)."""
        return Ev(**self.params.get("ev", {}))

    def describe(self) -> str:
        """One line for logs and ``evsite hil`` output."""
        p = self.params
        if self.action == "plug":
            ev = self.new_ev()
            text = (f"plug {ev.name} into {self.device}: {ev.capacity_kwh:g} kWh at {ev.soc:.0%}, "
                    f"{ev.max_current:g} A x {ev.phases}")
        elif self.action == "base_load":
            text = "base load " + " ".join(f"{ph} {a:g} A" for ph, a in p["amps"].items())
        elif self.action == "fault":
            what = f" on {p['quantity']}" if p.get("quantity") else ""
            code = f" (code {p['code']})" if p["kind"] == "exception" else ""
            text = f"fault {self.device}: {p['kind']}{what}{code}"
        else:
            text = f"{self.action} {self.device}"
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class Scenario:
    name: str
    events: tuple[Event, ...]
    description: str = ""
    base_load: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    duration: float | None = None
    source: str = "<string>"

    def ordered(self) -> list[Event]:
        """Events by time; events at the same time keep their file order."""
        return sorted(self.events, key=lambda e: (e.at, e.index))

    @property
    def end(self) -> float:
        """When the last event happens (or ``duration``, if longer)."""
        last = max((e.at for e in self.events), default=0.0)
        return max(last, self.duration or 0.0)

    def devices(self) -> set[str]:
        return {e.device for e in self.events if e.device}


# -- loading --------------------------------------------------------------------------------

def scenario_names() -> list[str]:
    """Names of the scenarios shipped in hil/scenarios."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def resolve(path_or_name: str | Path) -> Path:
    """A path as given, or a shipped scenario's file when given a bare name ("demo")."""
    p = Path(path_or_name)
    if p.suffix != ".toml" and len(p.parts) == 1 and not p.exists():
        return SCENARIO_DIR / f"{p.name}.toml"
    return p


def load_scenario(path_or_name: str | Path) -> Scenario:
    """Read and check a scenario file (or a shipped one by name); raises ScenarioError."""
    path = resolve(path_or_name)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        shipped = ", ".join(scenario_names()) or "(none)"
        raise ScenarioError([f"{path_or_name}: no such scenario file (shipped scenarios: {shipped})"]) from None
    except IsADirectoryError:
        raise ScenarioError([f"{name}: is a directory, not a scenario file"]) from None
    except UnicodeDecodeError as exc:
        raise ScenarioError([f"{name}: not UTF-8 text ({exc.reason})"]) from None
    except OSError as exc:
        raise ScenarioError([f"{name}: cannot read: {exc.strerror or exc}"]) from None
    return parse_scenario(text, name)


def parse_scenario(text: str, source: str = "<string>") -> Scenario:
    """Check scenario TOML text; every problem is reported, not just the first."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError([f"{source}: not valid TOML: {exc}"]) from None
    return _Parser(source, _event_lines(text)).scenario(data)


def _event_lines(text: str) -> list[int]:
    """Line of each ``[[events]]`` header, to point at events in messages."""
    return [n for n, line in enumerate(text.splitlines(), 1) if re.match(r"\s*\[\[\s*events\s*\]\]", line)]


class _Parser:
    def __init__(self, source: str, lines: list[int]) -> None:
        self.source = source
        self.lines = lines
        self.problems: list[str] = []

    def where(self, index: int | None) -> str:
        if index is None:
            return self.source
        if len(self.lines) >= index:
            return f"{self.source}:{self.lines[index - 1]}: event {index}"
        return f"{self.source}: event {index}"

    def bad(self, index: int | None, key: str, problem: str) -> None:
        self.problems.append(f"{self.where(index)}: {key}: {problem}")

    def scenario(self, data: dict[str, Any]) -> Scenario:
        for key in sorted(set(data) - {"scenario", "events"}):
            self.bad(None, key, "unknown key (expected [scenario] and [[events]])")
        header = data.get("scenario", {})
        if not isinstance(header, dict):
            self.bad(None, "scenario", "must be a table ([scenario])")
            header = {}
        for key in sorted(set(header) - _HEADER_KEYS):
            self.bad(None, f"scenario.{key}", f"unknown key (known: {', '.join(sorted(_HEADER_KEYS))})")
        name = self.text(None, "scenario.name", header.get("name", Path(self.source).stem))
        description = self.text(None, "scenario.description", header.get("description", ""))
        base = self.amps(None, "scenario.base_load", header.get("base_load", 0.0), None)
        duration = header.get("duration")
        if duration is not None and not self.seconds(None, "scenario.duration", duration):
            duration = None
        raw_events = data.get("events", [])
        if not isinstance(raw_events, list) or not all(isinstance(e, dict) for e in raw_events):
            self.bad(None, "events", "must be an array of tables ([[events]])")
            raw_events = []
        events = [e for e in (self.event(i, raw) for i, raw in enumerate(raw_events, 1)) if e is not None]
        if not self.problems:
            self.check_sequence(events)
        if self.problems:
            raise ScenarioError(self.problems)
        return Scenario(name=name, events=tuple(events), description=description, base_load=base or {},
                        duration=float(duration) if duration is not None else None, source=self.source)

    # -- one event ---------------------------------------------------------------------------
    def event(self, i: int, raw: dict[str, Any]) -> Event | None:
        before = len(self.problems)
        action = raw.get("action")
        if action is None:
            self.bad(i, "action", f"missing (one of {', '.join(ACTIONS)})")
            return None
        if action not in ACTIONS:
            self.bad(i, "action", f"must be one of {', '.join(ACTIONS)}, got {action!r}")
            return None
        allowed = _COMMON_KEYS | _EVENT_KEYS[action]
        for key in sorted(set(raw) - allowed):
            self.bad(i, key, f"unknown key for action {action!r} (allowed: {', '.join(sorted(allowed))})")
        at = raw.get("at")
        if at is None:
            self.bad(i, "at", "missing (seconds from the start)")
        else:
            self.seconds(i, "at", at)
        note = self.text(i, "note", raw.get("note", ""))
        device = ""
        if "device" in _EVENT_KEYS[action]:
            if "device" not in raw:
                self.bad(i, "device", f"missing (the id of the device to {action.replace('_', ' ')})")
            else:
                device = self.text(i, "device", raw["device"])
                if not device and isinstance(raw["device"], str):
                    self.bad(i, "device", "must not be empty")
        params: dict[str, Any] = {}
        if action == "plug":
            params["ev"] = self.ev(i, raw.get("ev", {}))
        elif action == "base_load":
            if "amps" not in raw:
                self.bad(i, "amps", "missing (A: one number, or [L1, L2, L3])")
            else:
                params["amps"] = self.amps(i, "amps", raw["amps"], raw.get("phase"))
        elif action == "fault":
            params.update(self.fault(i, raw))
        if len(self.problems) > before:
            return None
        return Event(index=i, at=float(at), action=action, device=device, note=note, params=params)

    def ev(self, i: int, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.bad(i, "ev", "must be a table of EV parameters")
            return {}
        ok = True
        for key in sorted(set(raw) - set(EV_KEYS)):
            self.bad(i, f"ev.{key}", f"unknown EV parameter (known: {', '.join(EV_KEYS)})")
            ok = False
        for key, value in raw.items():
            if key in ("full_state", "rfid", "name"):
                if not isinstance(value, str):
                    self.bad(i, f"ev.{key}", f"must be text, got {value!r}")
                    ok = False
            elif key in EV_KEYS and not _is_number(value):
                self.bad(i, f"ev.{key}", f"must be a number, got {value!r}")
                ok = False
        if not ok:
            return {}
        try:
            Ev(**raw)
        except ValueError as exc:
            for part in str(exc).split("; "):
                key = part.split(" ", 1)[0]
                self.bad(i, f"ev.{key}", part.split(" ", 1)[1] if " " in part else part)
        return dict(raw)

    def fault(self, i: int, raw: dict[str, Any]) -> dict[str, Any]:
        kind = raw.get("kind")
        out: dict[str, Any] = {}
        if kind not in FAULT_KINDS:
            self.bad(i, "kind", f"must be one of {', '.join(FAULT_KINDS)}, got {kind!r}"
                     if kind is not None else f"missing (one of {', '.join(FAULT_KINDS)})")
            return out
        out["kind"] = kind
        quantity = raw.get("quantity")
        if quantity is not None and (not isinstance(quantity, str) or not quantity):
            self.bad(i, "quantity", f"must be a quantity name, got {quantity!r}")
        elif quantity is None and kind != "exception":
            self.bad(i, "quantity", f"missing: a {kind} fault needs the quantity that reads wrong")
        out["quantity"] = quantity
        code = raw.get("code", 4)
        if kind != "exception" and "code" in raw:
            self.bad(i, "code", "only an exception fault has a code")
        elif isinstance(code, bool) or code not in EXCEPTION_CODES:
            self.bad(i, "code", f"must be a Modbus exception code ({', '.join(map(str, EXCEPTION_CODES))}), got {code!r}")
        out["code"] = code
        return out

    # -- values ---------------------------------------------------------------------------------
    def seconds(self, i: int | None, key: str, value: Any) -> bool:
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            self.bad(i, key, f"must be a number of seconds >= 0, got {value!r}")
            return False
        return True

    def text(self, i: int | None, key: str, value: Any) -> str:
        if not isinstance(value, str):
            self.bad(i, key, f"must be text, got {value!r}")
            return ""
        return value

    def amps(self, i: int | None, key: str, value: Any, phase: Any) -> dict[str, float]:
        if phase is not None and phase not in PHASES:
            self.bad(i, "phase", f"must be one of {', '.join(PHASES)}, got {phase!r}")
            return {}
        if _is_number(value) and math.isfinite(value):
            if abs(value) > 10_000:
                self.bad(i, key, f"{value!r} A is not a plausible load")
                return {}
            return {phase: float(value)} if phase else dict.fromkeys(PHASES, float(value))
        if isinstance(value, list) and phase is None:
            if len(value) == 3 and all(_is_number(a) and math.isfinite(a) and abs(a) <= 10_000 for a in value):
                return dict(zip(PHASES, map(float, value)))
        self.bad(i, key, "must be a number of amps (or [L1, L2, L3] without 'phase'), got " + repr(value))
        return {}

    def check_sequence(self, events: list[Event]) -> None:
        """Plug/unplug must make sense in time order."""
        plugged: dict[str, int] = {}
        for e in sorted(events, key=lambda e: (e.at, e.index)):
            if e.action == "plug":
                if e.device in plugged:
                    self.bad(e.index, "device", f"{e.device} already has an EV plugged in "
                             f"(event {plugged[e.device]}) at {e.at:g} s")
                plugged[e.device] = e.index
            elif e.action == "unplug":
                if e.device not in plugged:
                    self.bad(e.index, "device", f"{e.device} has no EV plugged in at {e.at:g} s")
                plugged.pop(e.device, None)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# -- against a site config -----------------------------------------------------------------------

def check_against(scenario: Scenario, config: Any) -> list[str]:
    """Problems running ``scenario`` on the site ``config`` (an agent.config SiteConfig)."""
    from drivers.profile import ProfileError, load_profile

    devices = {d.id: d for d in config.devices}
    problems = []
    for e in scenario.events:
        if not e.device:
            continue
        where = f"{scenario.source}: event {e.index}: device"
        d = devices.get(e.device)
        if d is None:
            known = ", ".join(sorted(devices)) or "(none)"
            problems.append(f"{where}: no device {e.device!r} in the site config (devices: {known})")
            continue
        if e.action in ("plug", "unplug") and d.role != "charger":
            problems.append(f"{where}: {e.device} is a {d.role}; only a charger takes an EV")
        quantity = e.params.get("quantity")
        if quantity:
            try:
                profile = load_profile(d.profile)
            except ProfileError:
                continue                       # the config check reports the profile
            if quantity not in profile.reads and quantity not in profile.writes:
                problems.append(f"{scenario.source}: event {e.index}: quantity: {e.device} ({d.profile}) "
                                f"has no {quantity!r} (it has: {', '.join(profile.reads)})")
            elif e.params["kind"] != "exception" and quantity not in profile.reads:
                problems.append(f"{scenario.source}: event {e.index}: quantity: a {e.params['kind']} fault "
                                f"needs a read quantity, {quantity!r} is only written")
    return problems


# -- playback -------------------------------------------------------------------------------------

Apply = Callable[[Event], Awaitable[None] | None]


async def play(events: Iterable[Event], clock: Any, apply: Apply, *, start: float | None = None) -> None:
    """Call ``apply(event)`` at ``start + event.at`` on ``clock`` (monotonic), in order.

    Events already due are applied at once (a slow apply never makes later events
    drift: each waits for its own time, not for a fixed gap after the previous one).
    """
    t0 = clock.monotonic() if start is None else start
    for event in sorted(events, key=lambda e: (e.at, e.index)):
        delay = t0 + event.at - clock.monotonic()
        if delay > 0:
            await clock.sleep(delay)
        result = apply(event)
        if inspect.isawaitable(result):
            await result
        await asyncio.sleep(0)
