"""Shared by the end-to-end tests: a small site the harness runs as real processes, and
checks on what the test CSMS process logged.

The chargers are Phoenix EV-CC controllers: a lifetime energy register in Wh (so
meterStart and meterStop are real counter readings, not session energy) and no
watchdog, so the emulated physics can run faster than the agent's real-time clock
without a charger falling back to its failsafe current between two setpoint writes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.ocpp_schemas import OcppSchemaError, check_message

STATION = "E2E-SITE"


def write_site(tmp_path: Path, chargers: int = 2) -> Path:
    """The site config the harness derives its copy from (ports and paths are its own)."""
    devices = "".join(textwrap.dedent(f"""
        [[devices]]
        id = "c{n}"
        role = "charger"
        profile = "phoenix-evcc-eth"
        bus = "lan"
        unit_id = {n}
        connector_id = {n}
        max_current = 16
        """) for n in range(1, chargers + 1))
    path = tmp_path / "site.toml"
    path.write_text(textwrap.dedent(f"""
        [site]
        name = "e2e site"
        poll_interval = 0.5
        state_dir = "state"

        [uplink]
        url = "ws://127.0.0.1:9/ocpp"
        station_id = "{STATION}"
        call_timeout = 5
        backoff_initial = 0.2
        backoff_max = 1
        ping_interval = 5

        [limits]
        fuse_amps = 63

        [[buses]]
        id = "lan"
        type = "tcp"
        host = "127.0.0.1"
        port = 1502
        timeout = 0.5

        [[devices]]
        id = "grid"
        role = "grid_meter"
        profile = "eastron-sdm630"
        bus = "lan"
        unit_id = 100
        """) + devices)
    return path


def local_list(version: int, tags: list[str]) -> dict[str, Any]:
    """A full SendLocalList payload accepting ``tags``."""
    return {"listVersion": version, "updateType": "Full",
            "localAuthorizationList": [{"idTag": t, "idTagInfo": {"status": "Accepted"}} for t in tags]}


def schema_violations(messages: list[dict[str, Any]]) -> list[str]:
    """Every message the agent sent (calls and its answers) checked against the OCA
    JSON schemas, as the in-process suite does for TestCsms."""
    bad = []
    for m in messages:
        if m["dir"] != "in":
            continue
        msg = SimpleNamespace(kind=m["kind"], version=m["version"], action=m["action"], payload=m["payload"],
                              unique_id=m["id"])
        try:
            check_message(msg)
        except (OcppSchemaError, ValueError) as exc:
            bad.append(f"#{m['seq']} {m['action']}: {exc}")
    return bad


def energy_register(meter_values_payload: dict[str, Any]) -> list[float]:
    """Energy.Active.Import.Register values in a MeterValues payload."""
    return [float(v["value"]) for mv in meter_values_payload["meterValue"] for v in mv["sampledValue"]
            if v.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register"]
