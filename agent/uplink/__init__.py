"""The OCPP uplink: one WebSocket to the CSMS (connection.py, with backoff.py and the
security profiles in security.py), the durable outbox, and one adapter per OCPP
version (v16/, v201/) run by the connection for the lifetime of each connection."""

from agent.uplink.connection import ConnState, Link, UplinkConnection, UplinkOptions

__all__ = ["ConnState", "Link", "UplinkConnection", "UplinkOptions"]
