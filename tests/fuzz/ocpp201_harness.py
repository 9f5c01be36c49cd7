"""A 2.0.1 station with real parts and no network, for throwing frames at.

The twin of ``ocpp_harness.py`` (1.6): the station (agent/uplink/v201/station.Station)
routes each frame exactly as it does on a socket; its connection is a stub that keeps
what the station sends. Behind it: a real store file, settings, sessions, authorizer,
profile book and the 2.0.1 device model. The boot counts as Accepted, so calls reach
their handlers. ``snapshot()`` reads everything a CSMS call could change, to show that a
refused call changed nothing.
"""

from __future__ import annotations

import json
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
from agent.uplink.v201.device_model import STORE_KEY as VARIABLES_KEY
from agent.uplink.v201.session import PROFILE_EXTRAS_KEY, V201Uplink
from agent.uplink.v201.station import Station
from tests.fuzz.ocpp_harness import CONFIG, StubConnection

#: CSMS -> station actions of OCPP 2.0.1
ACTIONS_201 = (
    "CancelReservation", "CertificateSigned", "ChangeAvailability", "ClearCache", "ClearChargingProfile",
    "ClearDisplayMessage", "ClearVariableMonitoring", "CostUpdated", "CustomerInformation", "DataTransfer",
    "DeleteCertificate", "GetBaseReport", "GetChargingProfiles", "GetCompositeSchedule", "GetDisplayMessages",
    "GetInstalledCertificateIds", "GetLocalListVersion", "GetLog", "GetMonitoringReport", "GetReport",
    "GetTransactionStatus", "GetVariables", "InstallCertificate", "PublishFirmware", "RequestStartTransaction",
    "RequestStopTransaction", "ReserveNow", "Reset", "SendLocalList", "SetChargingProfile", "SetDisplayMessage",
    "SetMonitoringBase", "SetMonitoringLevel", "SetNetworkProfile", "SetVariableMonitoring", "SetVariables",
    "TriggerMessage", "UnlockConnector", "UnpublishFirmware", "UpdateFirmware",
)


class Harness201:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    async def start(self) -> Harness201:
        clock = SystemClock()
        text = CONFIG.format(dir=self.workdir).replace('[uplink]\n', '[uplink]\nocpp = "2.0.1"\n')
        config = load_config_text(text, "fuzz.toml", base_dir=self.workdir)
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
        self.uplink = V201Uplink(self.rt)
        await self.uplink.model.load()
        self.uplink.accepted = True
        self.uplink.boot_status = "Accepted"
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
            "profile_extras": await s.kv_get(PROFILE_EXTRAS_KEY),
            "variables": await s.kv_get(VARIABLES_KEY),
            "reservations": await s.reservations_all(),
            "outbox": await s.outbox_len(),
            "open": [t.tx_id for t in await s.open_transactions()],
        }
