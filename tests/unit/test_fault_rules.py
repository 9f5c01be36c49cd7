"""The small rules the device-fault tests (tests/integration/test_device_faults*.py)
brought in, one by one: energy registers that go backwards, values that cannot be real,
a charger that applies something else than it was told."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest

from agent.clock import SimClock
from agent.sessions.connector import ActiveTx, Connector
from drivers.contract import DeviceError
from drivers.modbus import plausible
from drivers.modbus.applied import REINIT_BACKOFF, AppliedWatch

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def test_a_register_reset_during_a_transaction_is_counted_across():
    c = Connector(1, "cp1")
    assert c.count_energy(1000.0) is None
    c.tx = ActiveTx("tx-1", "TAG", None, T0, 1000, last_sample_mono=0.0)
    assert c.count_energy(1500.0) is None and c.energy_wh == 1500
    problem = c.count_energy(20.0)                  # replaced: the new register starts low
    assert problem is not None and "went backwards (1500 -> 20 Wh)" in problem and "counts on from 1500" in problem
    assert c.energy_wh == 1500
    assert c.count_energy(70.0) is None and c.energy_wh == 1550   # 50 Wh more, once
    c.tx = None
    c.end_energy_offset()
    assert c.energy_wh == 70                        # the register's own value again
    assert c.count_energy(75.0) is None


def test_outside_a_transaction_only_a_lifetime_register_going_back_is_news():
    c = Connector(1, "cp1")
    c.count_energy(500.0, session_register=True)
    assert c.count_energy(0.0, session_register=True) is None     # a new session starts at 0
    c.count_energy(500.0)
    assert "went backwards" in (c.count_energy(0.0) or "")
    assert c.energy_offset == 0


@pytest.mark.parametrize("kind,quantity,value,ok", [
    ("charger", "current_l1", 4294967.295, False),   # a uint32 in mA of all ones
    ("charger", "current_l1", 40.0, True),            # more than its max: real, an overdraw
    ("charger", "applied_current", 6553.5, False),
    ("charger", "voltage_l2", 231.0, True),
    ("meter", "current_l3", 2500.0, True),            # a large site, CTs
    ("meter", "power", -5e9, False),
    ("meter", "energy_import", -1.0, False),
    ("meter", "energy_import", 4e9, True),
    ("charger", "state", "C", True),
])
def test_values_that_cannot_be_real(kind, quantity, value, ok):
    if ok:
        plausible.check("dev", kind, quantity, value)
    else:
        with pytest.raises(DeviceError, match=f"dev: {quantity} reads"):
            plausible.check("dev", kind, quantity, value)


async def test_applied_watch_asks_for_a_reinit_once_per_backoff(caplog):
    caplog.set_level(logging.INFO)
    clock = SimClock(start=T0)
    w = AppliedWatch("cp1", clock)
    assert not w.check(16.0, 16.0)
    assert not w.check(16.0, 0.0)                    # one reading may predate the write
    assert w.check(16.0, 0.0)                        # two: it forgot
    w.written()
    assert not w.check(16.0, 0.0) and not w.check(16.0, 0.0)   # that did not help: wait
    await clock.advance(REINIT_BACKOFF)
    assert w.check(16.0, 0.0)                        # once more, not logged again
    assert not w.check(16.0, 16.0)
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["cp1: applies 0.0 A, not the 16.0 A written: it lost its settings (rebooted?); writing them again",
                    "cp1: applies its setpoint (16.0 A) again"]
    assert not w.check(None, 0.0) and not w.check(16.0, None)
