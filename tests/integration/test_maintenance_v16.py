"""Remote maintenance over OCPP 1.6 (Firmware Management + security extension), in
process: the agent (run_agent, emulated site) against the test CSMS, release archives
and log uploads on a local HTTP server. What the CSMS receives is the assertion."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import tarfile
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agent.config.load import load_config_text
from agent.logsetup import setup_logging
from agent.maintenance import guard
from agent.supervisor import EXIT_RESTART, run_agent
from agent.timefmt import utc_text
from hil.csms.rules import TagRule
from hil.csms.server import CallErrorReply, TestCsms
from hil.model import Ev
from hil.rig import Rig
from tests.integration.test_uplink_v16 import STATION, free_port, site_toml, wait_until
from tests.maint_kit import FileServer, SigningPki, build_evsite_wheel, fake_tree, make_cert, new_key, pem, tiny_wheel

pytestmark = pytest.mark.slow
SECRET = "pa55-w0rd-for-the-csms"


@asynccontextmanager
async def maint_site(tmp_path: Path, *, extra: str = "", passwords: str | None = None, file_logs: bool = False,
                     csms: TestCsms | None = None, uplink: str = ""):
    """The agent with a release tree (running 0.1.0), a signing PKI and a file server.
    Yields (rt, rig, csms, srv, pki, box); box["code"] is the exit code afterwards.
    ``csms``: one the caller started (and stops); ``uplink``: extra [uplink] keys."""
    root = fake_tree(tmp_path / "opt", "0.1.0", current="0.1.0")
    pki = SigningPki(tmp_path / "pki")
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    auth = ""
    if passwords:
        pw = tmp_path / "csms-password"
        pw.write_text(passwords)
        pw.chmod(0o600)
        auth = f'security_profile = 1\npassword_file = "{pw}"\n'
    own = csms is None
    if csms is None:
        csms = TestCsms(ocpp="1.6", tags=TagRule.accept_all(), passwords=passwords)
        await csms.start()
    auth += uplink
    text = site_toml(tmp_path, csms.url, free_port(), "\n[maintenance]\n"
                     f'install_dir = "{root}"\nfirmware_signing_root = "{pki.root_path}"\n{extra}')
    text = text.replace('call_timeout = 3', 'call_timeout = 3\n' + auth)
    config = load_config_text(text, "site.toml", base_dir=tmp_path)
    logs = setup_logging("WARNING", state_dir=config.site.state_dir, stream=io.StringIO()) if file_logs else None
    rig = Rig(config)
    await rig.start()
    stop, ready = asyncio.Event(), asyncio.Event()
    box: dict[str, Any] = {}

    def on_ready(rt: Any) -> None:
        box["rt"] = rt
        ready.set()

    agent = asyncio.create_task(run_agent(config, stop=stop, handle_signals=False, ready=on_ready))
    waiter = asyncio.create_task(ready.wait())
    try:
        async with FileServer(www) as srv:
            await asyncio.wait({agent, waiter}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
            assert ready.is_set(), f"agent did not get ready: {agent.result() if agent.done() else 'timeout'}"
            rt = box["rt"]
            await wait_until(lambda: rt.sessions.link_online, timeout=10)
            yield rt, rig, csms, srv, pki, box
            stop.set()
            box["code"] = await asyncio.wait_for(agent, 15)
    finally:
        stop.set()
        if not agent.done():
            await asyncio.wait_for(agent, 15)
        waiter.cancel()
        await rig.stop()
        if own:
            await csms.stop()
        if logs is not None:
            logs.close()


async def settle(csms: TestCsms) -> None:
    """One round trip: the station has read every answer sent before it, so the
    library's fire-and-forget after-hook tasks have what they wait for."""
    await csms.call(STATION, "GetLocalListVersion", {})


def statuses(csms: TestCsms, action: str, since: int = 0) -> list[str]:
    return [m.payload["status"] for m in csms.messages(STATION, action, "in", "call") if m.seq >= since]


async def wait_status(csms: TestCsms, action: str, status: str, since: int = 0, timeout: float = 30) -> Any:
    return await csms.wait_for(action, station=STATION, since=since, timeout=timeout,
                               predicate=lambda m: m.payload["status"] == status)


async def test_update_firmware_bad_inputs_reach_the_csms_as_statuses(tmp_path):
    async with maint_site(tmp_path) as (rt, rig, csms, srv, pki, box):
        root = Path(rt.config.maintenance.install_dir)
        soon = utc_text(datetime.now(timezone.utc))
        n = len(csms.log)
        assert await csms.call(STATION, "UpdateFirmware", {"location": "ftp://127.0.0.1/x.whl", "retrieveDate": soon}) == {}
        await wait_status(csms, "FirmwareStatusNotification", "DownloadFailed", n)
        (Path(srv.root) / "corrupt.tar.gz").write_bytes(b"\x1f\x8b" + os.urandom(4000))
        n = len(csms.log)
        await csms.call(STATION, "UpdateFirmware", {"location": srv.url("corrupt.tar.gz"), "retrieveDate": soon})
        await wait_status(csms, "FirmwareStatusNotification", "InstallationFailed", n)
        assert statuses(csms, "FirmwareStatusNotification", n) == ["Downloading", "Downloaded", "InstallationFailed"]
        assert guard.current_version(root) == "0.1.0" and os.listdir(root / "releases") == ["0.1.0"]
        with pytest.raises(CallErrorReply) as bad_date:
            await csms.call(STATION, "UpdateFirmware", {"location": srv.url("x.whl"), "retrieveDate": "tomorrow"})
        assert bad_date.value.code == "PropertyConstraintViolation" and "retrieveDate" in bad_date.value.description
        n = len(csms.log)
        trig = await csms.call(STATION, "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
        assert trig == {"status": "Accepted"}
        assert (await wait_status(csms, "FirmwareStatusNotification", "Idle", n)).payload == {"status": "Idle"}
        await settle(csms)
    assert box["code"] == 0


async def test_signed_update_refusals_answer_and_raise_security_events(tmp_path):
    async with maint_site(tmp_path) as (rt, rig, csms, srv, pki, box):
        good = tiny_wheel(tmp_path / "w", "evsite", "7.0")
        (Path(srv.root) / good.name).write_bytes(good.read_bytes())
        now = utc_text(datetime.now(timezone.utc))
        stranger = SigningPki(tmp_path / "stranger")
        firmware = {"location": srv.url(good.name), "retrieveDateTime": now, "signingCertificate": stranger.chain_pem,
                    "signature": stranger.sign(good.read_bytes())}
        answer = await csms.call(STATION, "SignedUpdateFirmware", {"requestId": 1, "firmware": firmware})
        assert answer == {"status": "InvalidCertificate"}
        ev = await csms.wait_for("SecurityEventNotification", station=STATION,
                                 predicate=lambda m: m.payload["type"] == "InvalidFirmwareSigningCertificate")
        assert "does not chain" in ev.payload["techInfo"]
        firmware.update(signingCertificate=pki.chain_pem, signature=pki.sign(b"other bytes"))
        n = len(csms.log)
        assert await csms.call(STATION, "SignedUpdateFirmware", {"requestId": 2, "firmware": firmware}) == {"status": "Accepted"}
        bad = await wait_status(csms, "SignedFirmwareStatusNotification", "InvalidSignature", n)
        assert bad.payload["requestId"] == 2
        assert statuses(csms, "SignedFirmwareStatusNotification", n) == ["Downloading", "Downloaded", "InvalidSignature"]
        await csms.wait_for("SecurityEventNotification", station=STATION,
                            predicate=lambda m: m.payload["type"] == "InvalidFirmwareSignature")
        firmware["location"] = "ftp://127.0.0.1/x"
        assert await csms.call(STATION, "SignedUpdateFirmware", {"requestId": 3, "firmware": firmware}) == {"status": "Rejected"}
        n = len(csms.log)
        assert await csms.call(STATION, "ExtendedTriggerMessage", {"requestedMessage": "FirmwareStatusNotification"}) == {"status": "Accepted"}
        assert (await csms.wait_for("SignedFirmwareStatusNotification", station=STATION, since=n)).payload == {"status": "Idle"}
        await settle(csms)


async def test_an_update_offered_during_a_session_waits_for_it_to_end(tmp_path):
    async with maint_site(tmp_path) as (rt, rig, csms, srv, pki, box):
        wheel = build_evsite_wheel(tmp_path, "9.9.1")
        (Path(srv.root) / wheel.name).write_bytes(wheel.read_bytes())
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "CARD")).accepted
        await csms.wait_for("StartTransaction", station=STATION)
        firmware = {"location": srv.url(wheel.name), "retrieveDateTime": utc_text(datetime.now(timezone.utc)),
                    "signingCertificate": pki.chain_pem, "signature": pki.sign(wheel.read_bytes())}
        n = len(csms.log)
        assert await csms.call(STATION, "SignedUpdateFirmware", {"requestId": 9, "firmware": firmware}) == {"status": "Accepted"}
        await wait_status(csms, "SignedFirmwareStatusNotification", "InstallScheduled", n)
        await asyncio.sleep(0.5)       # the session goes on; nothing is installed meanwhile
        assert statuses(csms, "SignedFirmwareStatusNotification", n)[-1] == "InstallScheduled"
        assert rt.sessions.connectors[1].tx is not None and not rt.stop.is_set()
        rig.charger("terra").unplug(rig.site.model.now)
        stop = await csms.wait_for("StopTransaction", station=STATION)
        await wait_status(csms, "SignedFirmwareStatusNotification", "Installing", n)
        await wait_status(csms, "SignedFirmwareStatusNotification", "InstallRebooting", n, timeout=60)
        await asyncio.wait_for(rt.stop.wait(), 15)
        assert stop.seq < csms.messages(STATION, "StatusNotification", "in", "call")[-1].seq   # drained first
        assert await rt.store.outbox_len() == 0
        assert guard.current_version(Path(rt.config.maintenance.install_dir)) == "9.9.1"
    assert box["code"] == EXIT_RESTART


async def test_get_log_and_get_diagnostics_upload_archives_without_secrets(tmp_path):
    async with maint_site(tmp_path, passwords=SECRET, file_logs=True) as (rt, rig, csms, srv, pki, box):
        logging.getLogger("evsite.test").warning("a careless line with the key %s in it", SECRET)
        await rt.maintenance.security_event("SettingSystemTime", "clock set by the test")
        base = f"http://127.0.0.1:{srv.port}/up/"
        start = utc_text(datetime.now(timezone.utc) - timedelta(minutes=5))
        n = len(csms.log)
        answer = await csms.call(STATION, "GetLog", {"logType": "DiagnosticsLog", "requestId": 17,
                                                     "log": {"remoteLocation": base, "oldestTimestamp": start}})
        assert answer["status"] == "Accepted" and answer["filename"].startswith(f"{STATION}-diagnostics-")
        done = await wait_status(csms, "LogStatusNotification", "Uploaded", n)
        assert done.payload["requestId"] == 17
        assert statuses(csms, "LogStatusNotification", n) == ["Uploading", "Uploaded"]
        data = srv.uploads[answer["filename"]]
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            files = {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode() for m in tar if m.isfile()}
        assert {"about.json", "config.json", "store.json", "ocpp-recent.txt", "logs/evsite.log"} <= set(files)
        assert json.loads(files["config.json"])["uplink"]["station_id"] == STATION
        assert "careless line" in files["logs/evsite.log"] and "BootNotification" in files["ocpp-recent.txt"]
        assert "SettingSystemTime" in files["security/security.log"]
        assert SECRET not in "".join(files.values())

        n = len(csms.log)
        sec = await csms.call(STATION, "GetLog", {"logType": "SecurityLog", "requestId": 18, "log": {"remoteLocation": base}})
        await wait_status(csms, "LogStatusNotification", "Uploaded", n)
        with tarfile.open(fileobj=io.BytesIO(srv.uploads[sec["filename"]]), mode="r:gz") as tar:
            assert sorted(m.name.split("/", 1)[1] for m in tar if m.isfile()) == ["about.json", "security/security.log"]

        n = len(csms.log)
        diag = await csms.call(STATION, "GetDiagnostics", {"location": base + "diag/"})
        assert diag["fileName"].endswith(".tar.gz")
        await wait_status(csms, "DiagnosticsStatusNotification", "Uploaded", n)
        assert f"diag/{diag['fileName']}" in srv.uploads
        refused = await csms.call(STATION, "GetLog", {"logType": "DiagnosticsLog", "requestId": 19,
                                                      "log": {"remoteLocation": "ftp://127.0.0.1/x"}})
        assert refused == {"status": "Rejected"}
        assert await csms.call(STATION, "GetDiagnostics", {"location": "ftp://127.0.0.1/x"}) == {}


async def test_installed_certificates_are_listed_and_deleted_by_hash(tmp_path):
    async with maint_site(tmp_path) as (rt, rig, csms, srv, pki, box):
        root = make_cert("csms root", new_key(), ca=True)
        assert await csms.call(STATION, "GetInstalledCertificateIds", {"certificateType": "CentralSystemRootCertificate"}) \
            == {"status": "NotFound"}
        ok = await csms.call(STATION, "InstallCertificate", {"certificateType": "CentralSystemRootCertificate",
                                                            "certificate": pem(root)})
        assert ok == {"status": "Accepted"}
        leaf = make_cert("not a ca", new_key(), ca=False)
        assert (await csms.call(STATION, "InstallCertificate", {"certificateType": "ManufacturerRootCertificate",
                                                               "certificate": pem(leaf)})) == {"status": "Rejected"}
        listed = await csms.call(STATION, "GetInstalledCertificateIds", {"certificateType": "CentralSystemRootCertificate"})
        assert listed["status"] == "Accepted"
        [h] = listed["certificateHashData"]
        assert h["serialNumber"] == format(root.serial_number, "x") and h["hashAlgorithm"] == "SHA256"
        assert await csms.call(STATION, "DeleteCertificate", {"certificateHashData": h}) == {"status": "Accepted"}
        assert await csms.call(STATION, "DeleteCertificate", {"certificateHashData": h}) == {"status": "NotFound"}
        n = len(csms.log)
        assert await csms.call(STATION, "ExtendedTriggerMessage", {"requestedMessage": "Heartbeat"}) == {"status": "Accepted"}
        await csms.wait_for("Heartbeat", station=STATION, since=n)
        await settle(csms)
        assert await csms.call(STATION, "ExtendedTriggerMessage", {"requestedMessage": "StatusNotification",
                                                                  "connectorId": 9}) == {"status": "Rejected"}
        n = len(csms.log)
        assert await csms.call(STATION, "ExtendedTriggerMessage", {"requestedMessage": "LogStatusNotification"}) == {"status": "Accepted"}
        assert (await csms.wait_for("LogStatusNotification", station=STATION, since=n)).payload == {"status": "Idle"}
        await settle(csms)
