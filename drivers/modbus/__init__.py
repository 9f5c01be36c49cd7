"""Modbus transport: our one wrapper over pymodbus (bus.py) and the generic
profile-driven driver (device.py). Nothing else in evsite imports pymodbus client APIs."""
