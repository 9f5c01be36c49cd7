"""The OCPP uplink: one WebSocket to the CSMS (connection.py, with backoff.py and the
security profiles in security.py), the durable outbox, and one adapter per OCPP
version (v16/, v201/) run by the connection for the lifetime of each connection."""

from agent.uplink.connection import ConnState, Link, UplinkConnection, UplinkOptions


def open_uplink(rt):  # type: ignore[no-untyped-def]
    """The supervisor's hook (agent/uplink/service.py); imported lazily so that the
    connection module stays usable without the adapters."""
    from agent.uplink.service import open_uplink as real
    return real(rt)


__all__ = ["ConnState", "Link", "UplinkConnection", "UplinkOptions", "open_uplink"]
