"""Values that decode but cannot be real.

A register of all ones (an unset value, a device mid-reboot, a misread word) decodes to
a number like any other: 0xFFFFFFFF mA is 4294967 A. Sentinels catch the patterns a
profile declares; these bounds catch the rest, per quantity and device kind, so that
garbage fails the reading, naming the quantity, as NaN does, and never reaches load
management or the CSMS. The bounds are wide on purpose: a charger drawing more than it
was told is real and must be seen (AC chargers stop at 63 A; a site meter may read
thousands of amps).
"""

from __future__ import annotations

from typing import Any

from drivers.contract import DeviceError

#: largest magnitude a reading can have and still be real, by device kind and quantity
#: prefix (A, V, W, Hz, C)
PLAUSIBLE = {
    "charger": {"current": 100.0, "applied": 100.0, "failsafe": 100.0, "voltage": 1000.0, "power": 150_000.0,
                "frequency": 100.0, "temperature": 200.0},
    "meter": {"current": 10_000.0, "voltage": 100_000.0, "power": 100e6, "frequency": 100.0},
}
#: energy counters never go below zero
COUNTERS = ("energy_import", "energy_export", "session_energy")


def check(device: str, kind: str, quantity: str, value: Any) -> None:
    """Raise ``DeviceError`` naming ``device`` and ``quantity`` if ``value`` cannot be real."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if quantity in COUNTERS:
        if value < 0:
            raise DeviceError(f"{device}: {quantity} reads {value:g}, a counter below zero (garbage?)")
        return
    bound = PLAUSIBLE.get(kind, {}).get(quantity.split("_")[0])
    if bound is not None and abs(value) > bound:
        raise DeviceError(f"{device}: {quantity} reads {value:g}, beyond anything real (garbage?)")
