"""A 1.6 station with real parts and no network, for throwing frames at.

The station (agent/uplink/v16/station.Station) routes each frame exactly as it does on
a socket; its connection is a stub that keeps what the station sends. Behind it: a
real store file, settings, sessions, authorizer and profile book. ``snapshot()`` reads
everything a CSMS call could change, to show that a refused call changed nothing.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agent.auth import Authorizer
from agent.charging_profiles import ProfileBook
from agent.clock import SystemClock
from agent.config.load import load_config_text
from agent.sessions import SessionManager
from agent.settings import Settings
from agent.store import Store
from agent.uplink.v16.session import V16Uplink
from agent.uplink.v16.station import Station

CONFIG = textwrap.dedent("""
    [site]
    state_dir = "{dir}"
    [uplink]
    url = "ws://127.0.0.1:1/ocpp"
    station_id = "FUZZ"
    [limits]
    fuse_amps = 32
    [[buses]]
    id = "lan"
    type = "tcp"
    host = "127.0.0.1"
    port = 1502
    [[devices]]
    id = "cp1"
    role = "charger"
    profile = "abb-terra-ac"
    bus = "lan"
    unit_id = 1
    connector_id = 1
    [[devices]]
    id = "cp2"
    role = "charger"
    profile = "abb-terra-ac"
    bus = "lan"
    unit_id = 2
    connector_id = 2
""")

#: CSMS -> station actions of OCPP 1.6 (with the security extension)
ACTIONS_16 = (
    "CancelReservation", "ChangeAvailability", "ChangeConfiguration", "ClearCache", "ClearChargingProfile",
    "DataTransfer", "GetCompositeSchedule", "GetConfiguration", "GetDiagnostics", "GetLocalListVersion",
    "RemoteStartTransaction", "RemoteStopTransaction", "ReserveNow", "Reset", "SendLocalList",
    "SetChargingProfile", "TriggerMessage", "UnlockConnector", "UpdateFirmware", "CertificateSigned",
    "DeleteCertificate", "ExtendedTriggerMessage", "GetInstalledCertificateIds", "GetLog",
    "InstallCertificate", "SignedUpdateFirmware",
)


class StubConnection:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def recv(self) -> str:  # the station's receive loop is not run
        raise RuntimeError("not used")


class Harness:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    async def start(self) -> Harness:
        clock = SystemClock()
        config = load_config_text(CONFIG.format(dir=self.workdir), "fuzz.toml", base_dir=self.workdir)
        self.store = await Store.open(self.workdir / "fuzz.db", clock)
        settings = await Settings.load(self.store, config)
        authorizer = Authorizer(self.store, policy=settings.auth_policy, clock=clock, is_online=lambda: False)
        sessions = SessionManager(config, self.store, clock, authorizer, settings)
        await sessions.start()
        self.restarts: list[str] = []
        self.rt = SimpleNamespace(config=config, clock=clock, store=self.store, sessions=sessions, settings=settings,
                                  authorizer=authorizer, energy=None, poller=None, control=None, maintenance=None,
                                  profiles=await ProfileBook(self.store, settings).load(),
                                  request_restart=self.restarts.append)
        self.uplink = V16Uplink(self.rt)
        self.conn = StubConnection()
        self.station = Station("FUZZ", self.conn, self.uplink, response_timeout=0.05)
        self.uplink.station = self.station
        return self

    async def close(self) -> None:
        await self.rt.sessions.close()
        await self.store.close()

    async def send(self, frame: str) -> Any:
        """Route one frame; the station's answer (parsed), or None when it sent none."""
        before = len(self.conn.sent)
        await self.station.route_message(frame)
        if len(self.conn.sent) == before:
            return None
        return json.loads(self.conn.sent[-1])

    async def snapshot(self) -> dict[str, Any]:
        s = self.store
        return {
            "settings": await s.settings_all(),
            "availability": await s.kv_get("availability"),
            "list": (await s.list_version(), await s.list_count()),
            "cache": await s.cache_count(),
            "profiles": await s.profiles_all(),
            "reservations": await s.reservations_all(),
            "outbox": await s.outbox_len(),
            "open": [t.tx_id for t in await s.open_transactions()],
        }
