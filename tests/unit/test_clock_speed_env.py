"""The test-only switch EVSITE_CLOCK_SPEED (agent/clock.py ``clock_from_env``): unset it
is real time, a positive number is a ScaledClock at that speed, anything else is refused
by ``evsite run`` with a message naming the variable and the value, before starting."""

from __future__ import annotations

import argparse
import asyncio
import time

import pytest

from agent import cli_run
from agent.clock import SPEED_ENV, ClockSpeedError, ScaledClock, SystemClock, clock_from_env


def test_unset_or_empty_is_real_time():
    for env in ({}, {SPEED_ENV: ""}, {SPEED_ENV: "  "}):
        clock, speed = clock_from_env(env)
        assert isinstance(clock, SystemClock) and speed is None


async def test_a_positive_number_is_a_scaled_clock_at_that_speed():
    clock, speed = clock_from_env({SPEED_ENV: "120"})
    assert isinstance(clock, ScaledClock) and speed == 120.0 and clock.speed == 120.0
    t0, r0 = clock.monotonic(), time.monotonic()
    await clock.sleep(12.0)               # 12 s of site time: 0.1 s real
    site, real = clock.monotonic() - t0, time.monotonic() - r0
    assert site >= 12.0 - 1e-6 and real < 5.0
    assert site == pytest.approx(real * 120, rel=0.01)


@pytest.mark.parametrize("bad", ["0", "-2", "fast", "nan", "inf", "1e400", "120x"])
def test_anything_else_is_refused_naming_the_variable_and_value(bad):
    with pytest.raises(ClockSpeedError) as err:
        clock_from_env({SPEED_ENV: bad})
    assert SPEED_ENV in str(err.value) and repr(bad) in str(err.value)
    assert "positive number" in str(err.value)


def test_evsite_run_refuses_a_bad_speed_before_starting(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "site.toml"
    cfg.write_text(f'[site]\nname = "x"\nstate_dir = "{tmp_path / "state"}"\n\n[uplink]\nenabled = false\n\n[limits]\nfuse_amps = 32\n')
    monkeypatch.setenv(SPEED_ENV, "zero")
    ran = []
    monkeypatch.setattr(asyncio, "run", lambda coro: ran.append(coro.close()))
    assert cli_run.run(argparse.Namespace(config=str(cfg), log_level=None)) == cli_run.EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{SPEED_ENV} must be a positive number" in err and "'zero'" in err and "not starting" in err
    assert ran == [] and not (tmp_path / "state").exists()
