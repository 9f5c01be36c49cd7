"""The controller as the poller uses it: SiteState in, setpoints out, with a real site
config, the profiles' abilities (failsafe register, phase switching), logging of binding
limits and dim commands, CSMS profiles and GetCompositeSchedule."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from agent.clock import SimClock
from agent.config import load_config_text
from agent.energy.controller import EnergyController
from agent.energy.profiles import ProfileError
from agent.site.devices import device_info
from agent.site.state import SiteState
from drivers.contract import ChargerReading, CpState, DeviceHealth, Measurement, Setpoint

CONFIG = """
[uplink]
enabled = false

[limits]
fuse_amps = 40
failsafe_amps = 12
grid_stale_after = 10

[[limits.circuits]]
id = "garage"
fuse_amps = 20

[[buses]]
id = "lan"
type = "tcp"
host = "127.0.0.1"

[[devices]]
id = "grid"
role = "grid_meter"
profile = "eastron-sdm630"
bus = "lan"
unit_id = 1

[[devices]]
id = "vestel"
role = "charger"
profile = "vestel-evc04"
bus = "lan"
unit_id = 2
connector_id = 1
max_current = 32
failsafe_current = 8
can_switch_phases = true

[[devices]]
id = "alfen"
role = "charger"
profile = "alfen-eve"
bus = "lan"
unit_id = 3
connector_id = 2
max_current = 16
circuit = "garage"

[[devices]]
id = "wallbox-l2"
role = "charger"
profile = "alfen-eve"
bus = "lan"
unit_id = 4
connector_id = 3
phases = 1
wiring = ["L2"]
max_current = 16
circuit = "garage"
"""

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def config():
    return load_config_text(CONFIG)


@pytest.fixture
def clock():
    return SimClock(start=T0, monotonic=1000.0)


def grid_health(current, mono=1000.0, *, read_at=None, stale=False, failures=0):
    mono = mono if read_at is None else read_at
    m = Measurement(timestamp=T0, monotonic=mono, current=current)
    return DeviceHealth("grid", last_good=m, last_good_at=T0, last_good_mono=mono, stale=stale,
                        consecutive_failures=failures)


def charger_health(name, state="C", current=(0.0, 0.0, 0.0), mono=1000.0, stale=False):
    r = ChargerReading(timestamp=T0, monotonic=mono, state=CpState(state), current=current)
    return DeviceHealth(name, last_good=r, last_good_at=T0, last_good_mono=mono, stale=stale)


def snapshot(config, mono=1000.0, *, grid=(10.0, 10.0, 10.0), grid_kw=None, chargers=None, setpoints=None):
    health = {"grid": grid_health(grid, mono, **(grid_kw or {}))}
    chargers = chargers or {}
    for d in config.chargers():
        health[d.id] = chargers.get(d.id) or charger_health(d.id, "A", mono=mono)
    devices = {d.id: device_info(d) for d in config.devices}
    return SiteState(taken_at=T0 + timedelta(seconds=mono - 1000.0), monotonic=mono, tick=1, health=health,
                     devices=devices, setpoints=setpoints or {})


def test_abilities_come_from_the_device_profiles(config, clock):
    ctl = EnergyController(config, clock)
    assert ctl.specs[1].failsafe_current == 8.0 and ctl.specs[1].can_switch_phases
    assert ctl.specs[2].failsafe_current is None  # alfen-eve has no failsafe register: counted at max
    assert ctl.specs[3].wiring == (1,)


def test_policy_gives_every_charger_a_setpoint_within_the_limits(config, clock):
    ctl = EnergyController(config, clock)
    state = snapshot(config, chargers={
        "vestel": charger_health("vestel", "C", (8.0, 8.0, 8.0)),
        "alfen": charger_health("alfen", "C", (6.0, 6.0, 6.0)),
        "wallbox-l2": charger_health("wallbox-l2", "C", (6.0, None, None)),
    }, grid=(30.0, 36.0, 30.0), setpoints={1: Setpoint(8), 2: Setpoint(6), 3: Setpoint(6, phases=1)})
    sps = ctl.policy(state)
    assert set(sps) == {1, 2, 3}
    # headroom: other load = 30-14=16, 36-20=16, 30-14=16 -> 24 A per phase for all EVs;
    # garage 20 A: CP2 and CP3 share L2 there
    # all three share the site headroom on L2 (the 1-phase one is on L2): 8 A each
    assert sps == {1: Setpoint(8), 2: Setpoint(8), 3: Setpoint(8, phases=1)}
    lines = ctl.status()["lines"]
    assert lines[:2] == ["L1: site fuse 40 A, headroom 24 A; EVs 16 A",
                         "L2: site fuse 40 A, headroom 24 A (binds); EVs 24 A"]
    assert "circuit garage L2: fuse 20 A; EVs 16 A" in lines
    assert "CP3 8 A: share of site headroom L2, priority 1" in lines
    assert ctl.explanation() is not None


def test_binding_limit_change_is_logged_once(config, clock, caplog):
    caplog.set_level(logging.INFO, logger="evsite.energy")
    ctl = EnergyController(config, clock)
    busy = {"vestel": charger_health("vestel", "C", (10.0, 10.0, 10.0))}
    for mono in (1000.0, 1001.0, 1002.0):
        ctl.policy(snapshot(config, mono, chargers=busy, grid=(35.0, 35.0, 35.0), setpoints={1: Setpoint(10)}))
    first = [r.getMessage() for r in caplog.records if r.getMessage().startswith("binding limits now")]
    assert first == ["binding limits now: L1 headroom, L2 headroom, L3 headroom"]
    ctl.policy(snapshot(config, 1003.0, chargers=busy, grid=(12.0, 12.0, 12.0), setpoints={1: Setpoint(10)}))
    ctl.policy(snapshot(config, 1004.0, chargers=busy, grid=(12.0, 12.0, 12.0), setpoints={1: Setpoint(10)}))
    msgs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("binding limits now")]
    assert msgs[1:] == ["binding limits now: L1 none, L2 none, L3 none"]  # CP1 at its max now
    assert any("CP1 32 A: its max 32 A" in r.getMessage() for r in caplog.records)


def test_stale_grid_meter_falls_to_the_failsafe(config, clock):
    ctl = EnergyController(config, clock)
    ev = {"vestel": charger_health("vestel", "C", (10.0, 10.0, 10.0), mono=1020.0)}
    state = snapshot(config, 1020.0, chargers=ev, grid_kw=dict(read_at=1005.0, stale=True, failures=15),
                     setpoints={1: Setpoint(10)})
    sps = ctl.policy(state)
    assert sps[1].amps <= 12.0
    assert any(n.startswith("failsafe: grid meter stale 15 s") for n in ctl.status()["notes"])


def test_stale_charger_is_counted_at_its_failsafe_or_its_max(config, clock):
    ctl = EnergyController(config, clock)
    stale = {"alfen": charger_health("alfen", "C", (10.0, 10.0, 10.0), stale=True),
             "vestel": charger_health("vestel", "C", (0.0, 0.0, 0.0))}
    ctl.policy(snapshot(config, chargers=stale, grid=(20.0, 20.0, 20.0), setpoints={1: Setpoint(6)}))
    reasons = {a["connector_id"]: a["reason"] for a in ctl.status()["connectors"]}
    assert reasons[2] == "stale: counted at its max 16 A (no failsafe register)"


def test_dim_command_logged_with_time_source_and_effect(config, clock, caplog):
    caplog.set_level(logging.INFO, logger="evsite.energy")
    ctl = EnergyController(config, clock)
    ctl.set_dim(True, "gpio GPIO17")
    assert caplog.records[-1].getMessage() == (
        "dim signal ACTIVE at 2026-03-02T12:00:00.000Z from gpio GPIO17: "
        "EVs held to 3 x 4200 W = 12600 W (18.3 A per phase)")
    busy = {"vestel": charger_health("vestel", "C", (16.0, 16.0, 16.0))}
    sps = ctl.policy(snapshot(config, chargers=busy, grid=(20.0, 20.0, 20.0), setpoints={1: Setpoint(16)}))
    assert sps[1].amps <= 18.3
    assert ctl.status()["dim"] == {"active": True, "source": "gpio GPIO17"}
    ctl.set_dim(True, "gpio GPIO17")
    assert caplog.records[-1].getMessage().endswith("no change, already dimmed")
    ctl.set_dim(False, "gpio GPIO17")
    assert caplog.records[-1].getMessage().endswith("from gpio GPIO17: dim limit lifted")


def _tx_default(limit, pid=1):
    return {"connectorId": 0, "chargingProfileId": pid, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {"startSchedule": "2026-03-02T00:00:00Z", "chargingRateUnit": "A",
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}}


def test_csms_profile_applies_and_composite_schedule_reports_it(config, clock):
    ctl = EnergyController(config, clock)
    ctl.set_profiles([_tx_default(16)])
    busy = {"vestel": charger_health("vestel", "C", (16.0, 16.0, 16.0))}
    sps = ctl.policy(snapshot(config, chargers=busy, grid=(20.0, 20.0, 20.0), setpoints={1: Setpoint(16)}))
    assert sps[1].amps == 16.0
    assert any(a["reason"].startswith("csms limit 16 A") for a in ctl.status()["connectors"])
    cs = ctl.composite_schedule(1, 3600)
    assert [(p.start_period, p.limit) for p in cs.periods] == [(0, 16.0)]
    assert cs.start == T0
    early = ctl.composite_schedule(1, 86400, "W", start=datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc))
    assert [(p.start_period, p.limit) for p in early.periods] == [(0, None), (43200, 16.0 * 230 * 3)]
    with pytest.raises(ValueError, match="no connector 9"):
        ctl.composite_schedule(9, 60)


def test_a_bad_profile_changes_nothing(config, clock):
    ctl = EnergyController(config, clock)
    ctl.set_profiles([_tx_default(16)])
    bad = _tx_default(10, pid=2)
    bad["stackLevel"] = -1
    with pytest.raises(ProfileError, match=r"\[1\] charging profile 2: stackLevel: must be >= 0"):
        ctl.set_profiles([_tx_default(20), bad])
    assert [p.id for p in ctl.profiles()] == [1] and ctl.profiles()[0].periods[0].limit == 16


def test_profiles_from_a_source_and_tx_profiles_for_a_running_transaction(config, clock):
    store = [_tx_default(20)]
    ctl = EnergyController(config, clock, profiles_source=lambda: store)
    in_force = {1: Setpoint(10)}

    def amps_now(mono):
        a = in_force[1].amps
        busy = {"vestel": charger_health("vestel", "C", (a, a, a), mono=mono)}
        state = snapshot(config, mono, chargers=busy, grid=(20.0, 20.0, 20.0), setpoints=in_force)
        in_force.update(ctl.policy(state))
        return in_force[1].amps

    assert amps_now(1000.0) == 20.0
    store.append({**_tx_default(10, pid=5), "connectorId": 1, "chargingProfilePurpose": "TxProfile",
                  "transactionId": 77})
    assert amps_now(1100.0) == 20.0  # no transaction known yet
    ctl.set_transaction(1, T0, tx_id=77)
    assert amps_now(1200.0) == 10.0
    ctl.end_transaction(1)
    assert amps_now(1300.0) == 20.0
