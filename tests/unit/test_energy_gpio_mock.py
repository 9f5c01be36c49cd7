"""The test-only mock dim contact (EVSITE_GPIO_MOCK=1): the control route drives a mock pin
that a DimInput reads, over a real Unix socket; without the variable neither exists."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile

import pytest

from agent.control.client import ControlAPIError, ControlClient
from agent.control.server import ControlServer
from agent.energy.wiring import add_gpio_test_route
from drivers import gpio
from drivers.gpio import MOCK_ENV, DimInput, GpioError, drive_mock_pin


@pytest.fixture
def sock():
    d = tempfile.mkdtemp(prefix="evs-", dir="/tmp")   # sun_path is short
    yield os.path.join(d, "control.sock")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def mock_env(monkeypatch):
    monkeypatch.setenv(MOCK_ENV, "1")
    monkeypatch.setattr(gpio, "_mock_factory", None)   # a fresh MockFactory for this test
    yield
    if gpio._mock_factory is not None:
        gpio._mock_factory.close()


def test_real_pins_cannot_be_driven_without_the_variable(monkeypatch):
    monkeypatch.delenv(MOCK_ENV, raising=False)
    with pytest.raises(GpioError, match=f"{MOCK_ENV}=1 is not set"):
        drive_mock_pin("GPIO17", True)


def test_no_route_without_the_variable(monkeypatch, sock):
    monkeypatch.delenv(MOCK_ENV, raising=False)
    server = ControlServer(sock)
    add_gpio_test_route(server)
    assert ("POST", "/test/gpio") not in server._routes


async def test_the_route_closes_and_opens_the_contact_a_dim_input_reads(mock_env, sock):
    seen: list[tuple[bool, str]] = []
    dim = DimInput("GPIO17", lambda active, source: seen.append((active, source)), bounce_time=None,
                   loop=asyncio.get_running_loop())
    dim.start()
    server = ControlServer(sock)
    add_gpio_test_route(server)
    try:
        async with server:
            api = ControlClient(sock)
            assert await api.post("/test/gpio", {"pin": "GPIO17", "state": True}) == {"pin": "GPIO17", "state": True}
            assert dim.active
            await api.post("/test/gpio", {"pin": "GPIO17", "state": False})
            assert not dim.active
            for body, why in (({"pin": "GPIO17", "state": 1}, "state must be true"),
                              ({"state": True}, "pin must be a pin name"),
                              ({"pin": "NOPE", "state": True}, "mock pin 'NOPE'")):
                with pytest.raises(ControlAPIError, match=why):
                    await api.post("/test/gpio", body)
    finally:
        dim.close()
    assert seen == [(False, "gpio GPIO17"), (True, "gpio GPIO17"), (False, "gpio GPIO17")]
