"""Scenario files (hil.scenario): parsing, every error case, checks against a site
config, and playback on a simulated clock."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from agent.clock import SimClock
from agent.config.model import BusSection, DeviceSection, LimitsSection, SiteConfig
from hil.scenario import (
    ScenarioError, check_against, load_scenario, parse_scenario, play, scenario_names,
)

GOOD = """
[scenario]
name = "t"
base_load = [3, 2, 1]

[[events]]
at = 2
action = "unplug"
device = "c1"

[[events]]
at = 1
action = "plug"
device = "c1"
ev = { capacity_kwh = 40, soc = 0.5, phases = 1, rfid = "AB12" }

[[events]]
at = 2
action = "base_load"
amps = 7
phase = "L3"
"""


def parse(text: str):
    return parse_scenario(textwrap.dedent(text), "s.toml")


def errors_of(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        parse(text)
    return info.value.problems


def test_good_scenario_parses_and_orders_events_stably():
    s = parse(GOOD)
    assert s.name == "t" and s.base_load == {"L1": 3.0, "L2": 2.0, "L3": 1.0}
    assert [(e.at, e.action) for e in s.ordered()] == [(1.0, "plug"), (2.0, "unplug"), (2.0, "base_load")]
    plug = s.ordered()[0]
    ev = plug.new_ev()
    assert (ev.capacity_kwh, ev.soc, ev.phases, ev.rfid) == (40, 0.5, 1, "AB12")
    assert plug.new_ev() is not ev                      # each run gets a fresh EV
    assert s.ordered()[2].params["amps"] == {"L3": 7.0}
    assert s.end == 2.0 and s.devices() == {"c1"}


@pytest.mark.parametrize("name", scenario_names())
def test_shipped_scenarios_parse(name):
    s = load_scenario(name)
    assert s.events, f"{name} has no events"


@pytest.mark.parametrize("event, expected", [
    ('at = 1\ndevice = "c1"', "event 1: action: missing"),
    ('at = 1\naction = "explode"', "event 1: action: must be one of plug, unplug"),
    ('action = "silent"\ndevice = "c1"', "event 1: at: missing"),
    ('at = -1\naction = "silent"\ndevice = "c1"', "event 1: at: must be a number of seconds >= 0, got -1"),
    ('at = "soon"\naction = "silent"\ndevice = "c1"', "event 1: at: must be a number of seconds"),
    ('at = 1\naction = "silent"', "event 1: device: missing"),
    ('at = 1\naction = "silent"\ndevice = 3', "event 1: device: must be text, got 3"),
    ('at = 1\naction = "silent"\ndevice = ""', "event 1: device: must not be empty"),
    ('at = 1\naction = "silent"\ndevice = "c1"\namps = 3', "event 1: amps: unknown key for action 'silent'"),
    ('at = 1\naction = "plug"\ndevice = "c1"\nev = { soc = 1.5 }', "event 1: ev.soc: must be between 0 and 1, got 1.5"),
    ('at = 1\naction = "plug"\ndevice = "c1"\nev = { socc = 0.5 }', "event 1: ev.socc: unknown EV parameter"),
    ('at = 1\naction = "plug"\ndevice = "c1"\nev = { phases = "three" }', "event 1: ev.phases: must be a number"),
    ('at = 1\naction = "plug"\ndevice = "c1"\nev = { phases = 2 }', "event 1: ev.phases: must be 1 or 3"),
    ('at = 1\naction = "plug"\ndevice = "c1"\nev = { rfid = 5 }', "event 1: ev.rfid: must be text"),
    ('at = 1\naction = "plug"\ndevice = "c1"\nev = 5', "event 1: ev: must be a table"),
    ('at = 1\naction = "base_load"', "event 1: amps: missing"),
    ('at = 1\naction = "base_load"\namps = [1, 2]', "event 1: amps: must be a number of amps"),
    ('at = 1\naction = "base_load"\namps = true', "event 1: amps: must be a number of amps"),
    ('at = 1\naction = "base_load"\namps = 5\nphase = "L4"', "event 1: phase: must be one of L1, L2, L3"),
    ('at = 1\naction = "base_load"\namps = [1, 2, 3]\nphase = "L1"', "event 1: amps: must be a number"),
    ('at = 1\naction = "base_load"\namps = 1e9', "event 1: amps: 1000000000.0 A is not a plausible load"),
    ('at = 1\naction = "fault"\ndevice = "m"', "event 1: kind: missing"),
    ('at = 1\naction = "fault"\ndevice = "m"\nkind = "fire"', "event 1: kind: must be one of exception, nan, garbage"),
    ('at = 1\naction = "fault"\ndevice = "m"\nkind = "nan"', "event 1: quantity: missing: a nan fault needs"),
    ('at = 1\naction = "fault"\ndevice = "m"\nkind = "exception"\ncode = 99', "event 1: code: must be a Modbus exception code"),
    ('at = 1\naction = "fault"\ndevice = "m"\nkind = "nan"\nquantity = "power"\ncode = 4', "event 1: code: only an exception fault"),
    ('at = 1\naction = "silent"\ndevice = "c1"\nnote = 4', "event 1: note: must be text"),
])
def test_every_event_error_names_file_line_event_and_key(event, expected):
    problems = errors_of(f"[scenario]\nname = 'x'\n\n[[events]]\n{event}\n")
    assert any(expected in p for p in problems), problems
    assert all(p.startswith("s.toml:4: event 1: ") for p in problems), problems


def test_header_errors_and_every_problem_is_reported():
    problems = errors_of("""
        extra = 1
        [scenario]
        name = 5
        colour = "red"
        base_load = "lots"
        duration = -3

        [[events]]
        at = 1
        action = "silent"

        [[events]]
        at = 2
        action = "nope"
        """)
    text = "\n".join(problems)
    for expected in ("s.toml: extra: unknown key", "s.toml: scenario.name: must be text",
                     "s.toml: scenario.colour: unknown key", "s.toml: scenario.base_load: must be a number",
                     "s.toml: scenario.duration: must be a number of seconds >= 0",
                     "event 1: device: missing", "event 2: action: must be one of"):
        assert expected in text, text
    assert len(problems) == 7


def test_plug_and_unplug_must_make_sense_in_time_order():
    problems = errors_of("""
        [[events]]
        at = 5
        action = "plug"
        device = "c1"

        [[events]]
        at = 1
        action = "unplug"
        device = "c1"

        [[events]]
        at = 6
        action = "plug"
        device = "c1"
        """)
    assert any("event 2: device: c1 has no EV plugged in at 1 s" in p for p in problems), problems
    assert any("event 3: device: c1 already has an EV plugged in (event 1) at 6 s" in p for p in problems), problems


def test_syntax_error_and_unreadable_files(tmp_path):
    with pytest.raises(ScenarioError, match="s.toml: not valid TOML"):
        parse("[[events]\nat = 1")
    with pytest.raises(ScenarioError, match="no such scenario file .*shipped scenarios: .*demo"):
        load_scenario(tmp_path / "missing.toml")
    with pytest.raises(ScenarioError, match="is a directory"):
        load_scenario(tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(bad)
    events_not_tables = tmp_path / "e.toml"
    events_not_tables.write_text("events = [1, 2]\n")
    with pytest.raises(ScenarioError, match="events: must be an array of tables"):
        load_scenario(events_not_tables)


def site() -> SiteConfig:
    return SiteConfig(
        limits=LimitsSection(fuse_amps=32),
        buses=[BusSection(id="lan", type="tcp", host="127.0.0.1", port=1502)],
        devices=[
            DeviceSection(id="grid", role="grid_meter", profile="eastron-sdm630", bus="lan"),
            DeviceSection(id="c1", role="charger", profile="abb-terra-ac", bus="lan", connector_id=1),
        ],
    )


def test_check_against_a_site_config():
    s = parse("""
        [[events]]
        at = 1
        action = "plug"
        device = "grid"

        [[events]]
        at = 1
        action = "silent"
        device = "nowhere"

        [[events]]
        at = 2
        action = "fault"
        device = "grid"
        kind = "nan"
        quantity = "rfid"

        [[events]]
        at = 2
        action = "fault"
        device = "c1"
        kind = "garbage"
        quantity = "current"

        [[events]]
        at = 3
        action = "fault"
        device = "c1"
        kind = "exception"
        quantity = "current"
        """)
    problems = check_against(s, site())
    assert problems[0] == "s.toml: event 1: device: grid is a grid_meter; only a charger takes an EV"
    assert problems[1].startswith("s.toml: event 2: device: no device 'nowhere' in the site config (devices: c1, grid)")
    assert problems[2].startswith("s.toml: event 3: quantity: grid (eastron-sdm630) has no 'rfid'")
    assert problems[3] == "s.toml: event 4: quantity: a garbage fault needs a read quantity, 'current' is only written"
    assert len(problems) == 4                       # an exception on a write register is fine
    assert check_against(parse(GOOD), site()) == []


async def test_play_applies_events_at_their_times_on_the_clock():
    clock = SimClock()
    t0 = clock.monotonic()
    seen: list[tuple[float, str]] = []

    async def apply(event):
        seen.append((clock.monotonic() - t0, event.action))

    task = asyncio.create_task(play(parse(GOOD).events, clock, apply, start=t0))
    await clock.advance(0.5)
    assert seen == []
    await clock.advance(0.5)
    assert seen == [(1.0, "plug")]
    await clock.advance(1.0)
    assert seen == [(1.0, "plug"), (2.0, "unplug"), (2.0, "base_load")]
    await task


async def test_play_applies_overdue_events_at_once_without_drifting():
    clock = SimClock()
    t0 = clock.monotonic() - 1.5                      # started 1.5 s ago: the first event is due
    seen: list[float] = []
    task = asyncio.create_task(play(parse(GOOD).events, clock, lambda e: seen.append(clock.monotonic() - t0),
                                    start=t0))
    await clock.advance(0)
    assert seen == [1.5]
    await clock.advance(0.5)
    assert seen == [1.5, 2.0, 2.0]
    await task
