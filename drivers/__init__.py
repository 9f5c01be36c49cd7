"""Hardware: one contract (``drivers.contract``), transports, device profiles as data.

Drivers know nothing of OCPP or of the site: they read devices and apply setpoints.
"""
