"""The supervisor's uplink hook: one connection, the adapter its subprotocol asks for.

``open_uplink(runtime)`` is an async context manager whose value has ``run()``: the
connection loop (reconnects forever). Each connection gets the adapter of the version
the CSMS chose: 1.6 (agent/uplink/v16) or 2.0.1 (agent/uplink/v201, when built). The
adapters share the sessions, store, outbox and settings; only messages differ.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from typing import Any

from agent.uplink.connection import Link, UplinkConnection, UplinkOptions

log = logging.getLogger("evsite.uplink")


class Uplink:
    def __init__(self, rt: Any, connection: UplinkConnection) -> None:
        self.rt = rt
        self.connection = connection
        self.adapters: dict[str, Any] = {}

    def adapter(self, version: str) -> Any:
        if version not in self.adapters:
            if version == "1.6":
                from agent.uplink.v16.session import V16Uplink
                self.adapters[version] = V16Uplink(self.rt)
            else:
                module = importlib.import_module("agent.uplink.v201.session")
                self.adapters[version] = module.V201Uplink(self.rt)
        return self.adapters[version]

    async def session(self, link: Link) -> None:
        await self.adapter(link.version).run_link(link)

    async def run(self) -> None:
        await self.connection.run(self.session)

    def status(self) -> dict[str, Any]:
        c = self.connection
        out: dict[str, Any] = {
            "url": c.options.url, "station_id": c.options.station_id, "state": c.state.value,
            "version": c.negotiated, "connections": c.connections, "failed_attempts": c.failed_attempts,
            "last_error": c.last_error, "last_disconnect": c.last_disconnect,
        }
        if c.negotiated and c.negotiated in self.adapters:
            out.update(self.adapters[c.negotiated].status())
        return out


@contextlib.asynccontextmanager
async def open_uplink(rt: Any) -> AsyncIterator[Uplink | None]:
    config = rt.config
    if not config.uplink.enabled or not config.uplink.url:
        log.warning("uplink disabled in the config: running without a CSMS")
        yield None
        return
    if rt.sessions is None or rt.store is None:
        log.warning("uplink needs the store and sessions, which are not running: no CSMS connection")
        yield None
        return
    overrides: dict[str, Any] = {}
    if importlib.util.find_spec("agent.uplink.v201") is None:
        if config.uplink.ocpp == "2.0.1":
            raise RuntimeError("uplink.ocpp = \"2.0.1\": OCPP 2.0.1 is not available in this build; use \"1.6\"")
        overrides["versions"] = ("1.6",)
    settings = getattr(rt, "settings", None)
    ping = settings.get("WebSocketPingInterval") if hasattr(settings, "get") else None
    if ping is not None:  # WebSocketPingInterval as the CSMS set it (a change applies from the next start)
        overrides["ping_interval"] = ping or None
    options = UplinkOptions.from_config(config.uplink, **overrides)
    connection = UplinkConnection(options, clock=rt.clock)
    uplink = Uplink(rt, connection)
    if rt.control is not None:
        rt.control.add_status_section("uplink", uplink.status)
    try:
        yield uplink
    finally:
        connection.stop()
