"""The dim contact on a GPIO input, with gpiozero's mock pin factory (the hardware edge)."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPin

from agent.clock import SimClock
from agent.config import load_config_text
from agent.energy.controller import EnergyController
from drivers.gpio import DimInput, GpioError


@pytest.fixture
def factory():
    old = Device.pin_factory
    Device.pin_factory = f = MockFactory()
    yield f
    f.close()
    Device.pin_factory = old


def recorder():
    seen: list[tuple[bool, str]] = []
    return seen, lambda active, source: seen.append((active, source))


def test_active_high_contact_reports_each_edge(factory):
    seen, cb = recorder()
    dim = DimInput("GPIO17", cb, bounce_time=None)
    dim.start()
    assert seen == [(False, "gpio GPIO17")]  # the state at start, once
    pin = factory.pin(17)
    pin.drive_high()
    assert dim.active and seen[-1] == (True, "gpio GPIO17")
    pin.drive_low()
    assert not dim.active and seen == [(False, "gpio GPIO17"), (True, "gpio GPIO17"), (False, "gpio GPIO17")]
    dim.close()


def test_active_low_contact_uses_the_pull_up(factory):
    seen, cb = recorder()
    with DimInput("BCM27", cb, active_high=False, bounce_time=None) as dim:
        assert seen == [(False, "gpio BCM27")]
        factory.pin(27).drive_low()  # contact closes to ground
        assert dim.active and seen[-1] == (True, "gpio BCM27")
    assert not dim.active


class ClosedContact(MockPin):
    """A pin held high by a closed contact: the weak internal pull-down cannot move it."""

    def _set_pull(self, value):
        self._pull = value


def test_a_contact_closed_at_start_is_reported_at_once(factory):
    factory.pin(22, pin_class=ClosedContact).drive_high()
    seen, cb = recorder()
    with DimInput("GPIO22", cb, bounce_time=None):
        assert seen == [(True, "gpio GPIO22")]


def test_close_is_idempotent_and_releases_the_pin(factory):
    seen, cb = recorder()
    dim = DimInput("GPIO17", cb, bounce_time=None)
    dim.start()
    dim.close()
    dim.close()
    factory.pin(17).drive_high()
    assert seen == [(False, "gpio GPIO17")]  # no callbacks after close
    again = DimInput("GPIO17", cb, bounce_time=None)
    again.start()  # the pin is free again
    again.close()


def test_bad_pin_is_a_clear_error(factory):
    with pytest.raises(GpioError, match="dim input on GPIO99"):
        DimInput("GPIO99", lambda *a: None).start()
    with pytest.raises(GpioError, match="no pin configured"):
        DimInput("", lambda *a: None)


def test_a_failing_handler_is_logged_not_raised(factory, caplog):
    def boom(active, source):
        raise RuntimeError("handler bug")

    with DimInput("GPIO17", boom, bounce_time=None):
        factory.pin(17).drive_high()
    assert any("handler failed" in r.getMessage() for r in caplog.records)


async def test_edges_from_another_thread_arrive_in_the_event_loop(factory):
    got = asyncio.Event()
    seen = []
    loop_thread = threading.get_ident()

    def cb(active, source):
        seen.append((active, threading.get_ident()))
        if active:
            got.set()

    dim = DimInput("GPIO17", cb, bounce_time=None, loop=asyncio.get_running_loop())
    dim.start()
    worker = threading.Thread(target=factory.pin(17).drive_high)
    worker.start()
    worker.join()
    await asyncio.wait_for(got.wait(), 5)
    assert seen[-1] == (True, loop_thread)
    assert all(t == loop_thread for _, t in seen)
    dim.close()


def test_dim_contact_drives_the_controller(factory, caplog):
    caplog.set_level(logging.INFO, logger="evsite.energy")
    cfg = load_config_text('''
[uplink]
enabled = false
[limits]
fuse_amps = 32
[gpio]
dim_pin = "GPIO17"
dim_power_w = 4200
[[buses]]
id = "lan"
type = "tcp"
host = "127.0.0.1"
[[devices]]
id = "wb"
role = "charger"
profile = "alfen-eve"
bus = "lan"
connector_id = 1
''')
    ctl = EnergyController(cfg, SimClock())
    with DimInput(cfg.gpio.dim_pin, ctl.set_dim, active_high=cfg.gpio.dim_active_high, bounce_time=None):
        assert not ctl.dim_active
        factory.pin(17).drive_high()
        assert ctl.dim_active and ctl.dim_source == "gpio GPIO17"
        assert caplog.records[-1].getMessage() == (
            "dim signal ACTIVE at 2026-01-01T00:00:00.000Z from gpio GPIO17: "
            "EVs held to 1 x 4200 W = 4200 W (6.1 A per phase)")
        factory.pin(17).drive_low()
        assert not ctl.dim_active
