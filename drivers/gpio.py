"""GPIO inputs: the grid operator's dim contact (e.g. Germany's §14a EnWG control box).

A thin wrapper over gpiozero's ``DigitalInputDevice`` that knows nothing of load
management: it reports "active" / "not active" to one callback, with a source text
naming the pin. Choices:

- ``active_high=True``: the closed contact pulls the pin high, so the internal pull-down
  is used; ``False``: the contact pulls it low, internal pull-up. Either way
  "active" means "contact closed".
- The state at ``start()`` is reported once, so a contact already closed when the
  agent starts is honoured at once, not at its next edge.
- gpiozero calls back from its own thread on real pins. Given an event ``loop``, the
  callback is handed to that loop (``call_soon_threadsafe``), so the controller is only
  ever touched from the asyncio thread. Without one it is called directly (tests with
  gpiozero's ``MockFactory`` drive pins from the test thread).
- Contact bounce is filtered by gpiozero (``bounce_time``, 50 ms by default).

Test only: with ``EVSITE_GPIO_MOCK=1`` in the environment, pins are gpiozero's mock pins
(``MockFactory``) instead of the board's, so an end-to-end test can close the contact
of a real agent process: ``drive_mock_pin`` is what the agent's control route
``POST /test/gpio`` (registered only under that variable) calls. Never set on a gateway:
the agent logs a warning at start when it is.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger("evsite.gpio")

OnChange = Callable[[bool, str], None]


class GpioError(Exception):
    """The pin cannot be used (unknown name, in use, no GPIO on this machine)."""


#: set to "1" to use mock pins (tests of a real agent process; see the module doc)
MOCK_ENV = "EVSITE_GPIO_MOCK"
_mock_factory: Any = None


def mock_gpio() -> bool:
    """True when this process runs on mock pins (``EVSITE_GPIO_MOCK=1``)."""
    return os.environ.get(MOCK_ENV) == "1"


def mock_factory() -> Any:
    """The process's one gpiozero ``MockFactory`` (made on first use)."""
    global _mock_factory
    if _mock_factory is None:
        from gpiozero.pins.mock import MockFactory

        _mock_factory = MockFactory()
    return _mock_factory


def drive_mock_pin(pin: str, high: bool) -> None:
    """Drive a mock pin high or low, as a contact wired to it would (test only)."""
    if not mock_gpio():
        raise GpioError(f"{MOCK_ENV}=1 is not set: real pins cannot be driven from software")
    from gpiozero.exc import GPIOZeroError

    try:
        p = mock_factory().pin(pin)
    except (GPIOZeroError, ValueError) as exc:
        raise GpioError(f"mock pin {pin!r}: {exc}") from None
    if high:
        p.drive_high()
    else:
        p.drive_low()


class DimInput:
    def __init__(
        self,
        pin: str,
        on_change: OnChange,
        *,
        active_high: bool = True,
        bounce_time: float | None = 0.05,
        pin_factory: Any = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not pin:
            raise GpioError("dim input: no pin configured (gpio.dim_pin)")
        self.pin = pin
        self.on_change = on_change
        self.active_high = active_high
        self.bounce_time = bounce_time
        self.pin_factory = pin_factory
        self.loop = loop
        self.source = f"gpio {pin}"
        self._device: Any = None

    def start(self) -> None:
        """Claim the pin and report its present state once."""
        if self._device is not None:
            return
        from gpiozero import DigitalInputDevice
        from gpiozero.exc import GPIOZeroError

        factory = self.pin_factory
        if factory is None and mock_gpio():
            log.warning("%s=1: dim input on %s is a MOCK pin, driven by POST /test/gpio (tests only)", MOCK_ENV, self.pin)
            factory = mock_factory()
        try:
            self._device = DigitalInputDevice(
                self.pin, pull_up=not self.active_high, bounce_time=self.bounce_time, pin_factory=factory)
        except (GPIOZeroError, ValueError, OSError) as exc:
            raise GpioError(f"dim input on {self.pin}: {type(exc).__name__}: {exc}") from exc
        self._device.when_activated = lambda: self._report(True)
        self._device.when_deactivated = lambda: self._report(False)
        log.info("dim input on %s (contact closed = %s): %s", self.pin,
                 "high" if self.active_high else "low", "active" if self.active else "not active")
        self._report(self.active)

    @property
    def active(self) -> bool:
        """The contact is closed now (False before ``start``/after ``close``)."""
        return bool(self._device is not None and self._device.is_active)

    def _report(self, active: bool) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._deliver, active)
        else:
            self._deliver(active)

    def _deliver(self, active: bool) -> None:
        try:
            self.on_change(active, self.source)
        except Exception:  # a bad handler must not kill gpiozero's thread silently
            log.exception("dim input on %s: handler failed", self.pin)

    def close(self) -> None:
        """Release the pin; idempotent."""
        dev, self._device = self._device, None
        if dev is not None:
            dev.when_activated = dev.when_deactivated = None
            dev.close()

    def __enter__(self) -> DimInput:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
