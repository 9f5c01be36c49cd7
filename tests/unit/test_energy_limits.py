"""The limits stack: fuse tree, measured headroom, stale grid failsafe and hold, dim,
CSMS limits."""

from __future__ import annotations

import pytest

from agent.config import load_config_text
from agent.energy.allocator import allocate
from agent.energy.limits import FuseTree, GridReading, dim_amps, stack_limits
from agent.energy.model import SITE, ConnectorInput
from drivers.contract import Setpoint

FUSES = FuseTree((63.0, 63.0, 63.0))


def names(limits, scope=SITE):
    return {lim.name: lim.amps for lim in limits.scopes[scope].limits}


def test_headroom_is_fuse_minus_other_load():
    ev = [ConnectorInput(1, state="C", measured=(10.0, 12.0, 0.0)),
          ConnectorInput(2, state="C", wiring=(2,), phases=1, measured=(0.0, 0.0, 5.0))]
    lim = stack_limits(fuses=FUSES, connectors=ev, grid=GridReading((30.0, 20.0, 5.0), age=1.0))
    # other load: 30-10=20, 20-12=8, 5-5=0
    assert names(lim)["headroom"] == (43.0, 55.0, 63.0)
    assert names(lim)["site fuse"] == (63.0, 63.0, 63.0)
    assert not lim.hold and lim.notes == ()


def test_stale_chargers_draw_stays_in_the_other_load():
    ev = [ConnectorInput(1, state="C", measured=(10.0, 10.0, 10.0), stale=True, failsafe_current=6.0),
          ConnectorInput(2, state="C", measured=(5.0, 5.0, 5.0))]
    lim = stack_limits(fuses=FUSES, connectors=ev, grid=GridReading((35.0, 35.0, 35.0), age=0.0))
    assert names(lim)["headroom"] == (33.0, 33.0, 33.0)  # 63 - (35 - 5)
    r = allocate(ev, lim)
    # the stale one is also counted at 6 A: CP2 gets 33 - 6 = 27 at most (max 16 here)
    assert r.allocations[2].amps == 16.0


def test_other_load_above_the_fuse_leaves_nothing_for_evs():
    ev = [ConnectorInput(1, state="C", measured=(0.0, 0.0, 0.0))]
    lim = stack_limits(fuses=FUSES, connectors=ev, grid=GridReading((70.0, 10.0, 10.0), age=0.0))
    assert names(lim)["headroom"][0] == -7.0
    r = allocate(ev, lim)
    assert not r.allocations[1].enabled


@pytest.mark.parametrize("grid, why", [
    (GridReading((10.0, 10.0, 10.0), age=10.5), "grid meter stale 10 s (> 10 s)"),
    (GridReading(None, age=None), "grid meter never read"),
    (GridReading((10.0, None, 10.0), age=1.0), "grid meter reading incomplete"),
])
def test_stale_grid_meter_means_failsafe(grid, why):
    lim = stack_limits(fuses=FUSES, grid=grid, grid_stale_after=10.0, failsafe_amps=18.0)
    assert names(lim)["failsafe"] == (18.0, 18.0, 18.0)
    assert "headroom" not in names(lim)
    assert lim.notes == (f"failsafe: {why}, all EVs together 18 A per phase",)
    r = allocate([ConnectorInput(i, state="C", max_current=32) for i in (1, 2, 3)], lim)
    assert sum(a.amps for a in r.allocations.values()) <= 18.0


def test_late_grid_reading_holds_everything_where_it_is():
    ev = [ConnectorInput(1, state="C", measured=(10.0,) * 3, setpoint=Setpoint(10), max_current=32),
          ConnectorInput(2, state="B", measured=(0.0,) * 3, setpoint=Setpoint(0, enabled=False), max_current=32)]
    lim = stack_limits(fuses=FUSES, connectors=ev, grid=GridReading((20.0,) * 3, age=4.0, late=True))
    assert lim.hold and lim.notes[0].startswith("hold: grid meter reading 4 s old")
    r = allocate(ev, lim)
    assert r.allocations[1].amps == 10.0 and "held at 10 A while the grid reading is late" in r.allocations[1].reason
    assert not r.allocations[2].enabled


def test_no_grid_meter_means_fuse_only():
    lim = stack_limits(fuses=FUSES, grid=None)
    assert set(names(lim)) == {"site fuse"}


def test_dim_limit_is_the_total_power_over_three_phases():
    assert dim_amps(4200.0, 2, 230.0) == pytest.approx(12.17, abs=0.01)
    lim = stack_limits(fuses=FUSES, dim=dim_amps(4200.0, 2, 230.0), dim_detail="2 x 4200 W")
    assert names(lim)["dim"][0] == pytest.approx(12.17, abs=0.01)
    r = allocate([ConnectorInput(1, state="C", max_current=32), ConnectorInput(2, state="C", max_current=32)], lim)
    power = sum(a.amps * 230.0 * 3 for a in r.allocations.values())
    assert power <= 8400.0
    r = allocate([ConnectorInput(1, state="C", wiring=(1,), phases=1, max_current=32)], lim)
    assert r.allocations[1].amps * 230.0 <= 8400.0
    with pytest.raises(ValueError):
        dim_amps(4200.0, 2, 0.0)


def test_csms_limits_station_and_connectors():
    lim = stack_limits(fuses=FUSES, station_amps=40.0, connector_amps={2: 10.0}, csms_detail="ChargePointMaxProfile 1")
    assert names(lim)["csms"] == (40.0, 40.0, 40.0)
    assert lim.connector_caps[2][0].amps == 10.0


def test_fuse_tree_from_the_config():
    cfg = load_config_text('''
[uplink]
enabled = false
[limits]
fuse_amps = 80
[[limits.circuits]]
id = "depot"
fuse_amps = 63
[[limits.circuits]]
id = "row-b"
fuse_amps = [32, 25, 32]
parent = "depot"
''')
    tree = FuseTree.from_config(cfg.limits)
    assert tree.site == (80.0, 80.0, 80.0)
    assert tree.circuits == {"depot": ((63.0,) * 3, SITE), "row-b": ((32.0, 25.0, 32.0), "depot")}
    lim = stack_limits(fuses=tree)
    assert lim.chain("row-b") == ("row-b", "depot", SITE)


def test_bad_fuse_values_are_named():
    class L:
        fuse_amps = [32, 32]
        circuits = ()
    with pytest.raises(ValueError, match=r"limits.fuse_amps: one number or \[L1, L2, L3\]"):
        FuseTree.from_config(L())
