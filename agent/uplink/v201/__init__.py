"""The OCPP 2.0.1 adapter: the same site, sessions, store and outbox as 1.6, other words.

- ``variables.py``: the device model as data (components, variables, where each value
  lives); ``device_model.py``: Get/SetVariables and reports over it.
- ``messages.py``: queued events -> 2.0.1 payloads (TransactionEvent, StatusNotification,
  MeterValues, SecurityEventNotification), rebuilt identically on every retry.
- ``profiles.py``: 2.0.1 charging profiles <-> the profile book's 1.6 shape.
- ``station.py`` (with ``handlers_*.py``): the CSMS's calls, answered by the site's parts.
- ``session.py``: one connection's life (boot, statuses, heartbeats, outbox);
  ``V201Uplink`` is what ``agent.uplink.service`` instantiates.
"""
