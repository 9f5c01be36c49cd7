"""Remote maintenance over OCPP 2.0.1 (L firmware, N GetLog, M certificates, A02-A04), in
process: the agent (run_agent, emulated site) as a 2.0.1 station against the test CSMS,
release archives and log uploads on a local HTTP server, the same machinery 1.6 uses
(tests/integration/test_maintenance_v16.py). What the CSMS receives is the assertion,
every message checked against the OCA 2.0.1 schemas (tests/ocpp_schemas.py)."""

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

from agent import __version__
from agent.clock import SystemClock
from agent.config.load import load_config_text
from agent.logsetup import setup_logging
from agent.maintenance import guard
from agent.maintenance.update import KV_KEY
from agent.store import Store
from agent.supervisor import EXIT_RESTART, run_agent
from agent.timefmt import parse_utc, utc_text
from hil.csms.pki import TestPki
from hil.csms.rules import TagRule
from hil.csms.server import CallErrorReply, ServerTls, TestCsms
from hil.model import Ev
from hil.rig import Rig
from tests.integration.test_maintenance_tls import peer_serial, sign_csr
from tests.integration.test_uplink_v201 import STATION, free_port, site_toml, wait_until
from tests.maint_kit import FileServer, SigningPki, build_evsite_wheel, fake_tree, make_cert, new_key, pem, tiny_wheel

pytestmark = pytest.mark.slow
SECRET = "pa55-w0rd-for-the-2.0.1-csms"


@asynccontextmanager
async def maint_site(tmp_path: Path, *, extra: str = "", uplink: str = "", csms: TestCsms | None = None,
                     passwords: str | None = None, file_logs: bool = False, before: Any = None):
    """A 2.0.1 agent with a release tree (running 0.1.0), a signing PKI and a file
    server. Yields (rt, rig, csms, srv, pki, box); box["code"] is the exit code
    afterwards. ``before(config)``: awaited before the agent starts (to seed its store)."""
    root = fake_tree(tmp_path / "opt", "0.1.0", current="0.1.0")
    pki = SigningPki(tmp_path / "pki")
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    if passwords:
        pw = tmp_path / "csms-password"
        pw.write_text(passwords)
        pw.chmod(0o600)
        uplink += f'\nsecurity_profile = 1\npassword_file = "{pw}"\n'
    own = csms is None
    if csms is None:
        csms = TestCsms(ocpp="2.0.1", tags=TagRule.accept_all(), passwords=passwords)
        await csms.start()
    text = site_toml(tmp_path, csms.url, free_port(), "\n[maintenance]\n"
                     f'install_dir = "{root}"\nfirmware_signing_root = "{pki.root_path}"\n{extra}', uplink=uplink)
    config = load_config_text(text, "site.toml", base_dir=tmp_path)
    if before is not None:
        await before(config)
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


def firmware_statuses(csms: TestCsms, since: int = 0) -> list[tuple[str, int | None]]:
    return [(m.payload["status"], m.payload.get("requestId"))
            for m in csms.messages(STATION, "FirmwareStatusNotification", "in", "call") if m.seq >= since]


async def wait_status(csms: TestCsms, action: str, status: str, since: int = 0, timeout: float = 30) -> Any:
    return await csms.wait_for(action, station=STATION, since=since, timeout=timeout,
                               predicate=lambda m: m.payload["status"] == status)


async def security_event(csms: TestCsms, kind: str, since: int = 0) -> Any:
    return await csms.wait_for("SecurityEventNotification", station=STATION, since=since, timeout=10,
                               predicate=lambda m: m.payload["type"] == kind)


async def settle(csms: TestCsms) -> None:
    """One round trip, so the library's after-hook tasks have run."""
    await csms.call(STATION, "GetLocalListVersion", {})


def now_text() -> str:
    return utc_text(datetime.now(timezone.utc))


async def test_update_firmware_refusals_are_answers_and_bad_downloads_statuses(tmp_path):
    async with maint_site(tmp_path) as (rt, rig, csms, srv, pki, box):
        root = Path(rt.config.maintenance.install_dir)
        ftp = await csms.call(STATION, "UpdateFirmware", {"requestId": 1, "firmware": {
            "location": "ftp://127.0.0.1/x.whl", "retrieveDateTime": now_text()}})
        assert ftp["status"] == "Rejected" and ftp["statusInfo"]["reasonCode"] == "InvalidURL"
        assert "ftp" in ftp["statusInfo"]["additionalInfo"]
        half = await csms.call(STATION, "UpdateFirmware", {"requestId": 2, "firmware": {
            "location": srv.url("x.whl"), "retrieveDateTime": now_text(), "signature": "AAAA"}})
        assert half["status"] == "Rejected" and "signingCertificate is missing" in half["statusInfo"]["additionalInfo"]
        with pytest.raises(CallErrorReply) as bad_date:
            await csms.call(STATION, "UpdateFirmware", {"requestId": 3, "firmware": {
                "location": srv.url("x.whl"), "retrieveDateTime": "tomorrow"}})
        assert bad_date.value.code == "PropertyConstraintViolation" and "retrieveDateTime" in bad_date.value.description
        assert firmware_statuses(csms) == []                       # nothing started by any of them

        (Path(srv.root) / "corrupt.tar.gz").write_bytes(b"\x1f\x8b" + os.urandom(4000))
        n = len(csms.log)
        ok = await csms.call(STATION, "UpdateFirmware", {"requestId": 4, "firmware": {
            "location": srv.url("corrupt.tar.gz"), "retrieveDateTime": now_text()}})
        assert ok == {"status": "Accepted"}
        await wait_status(csms, "FirmwareStatusNotification", "InstallationFailed", n)
        assert firmware_statuses(csms, n) == [("Downloading", 4), ("Downloaded", 4), ("InstallationFailed", 4)]
        n = len(csms.log)
        await csms.call(STATION, "UpdateFirmware", {"requestId": 5, "firmware": {
            "location": srv.url("missing.whl"), "retrieveDateTime": now_text()}})
        await wait_status(csms, "FirmwareStatusNotification", "DownloadFailed", n)
        assert guard.current_version(root) == "0.1.0" and os.listdir(root / "releases") == ["0.1.0"]

        await wait_until(lambda: not rt.maintenance.firmware.running)     # its last status answered
        n = len(csms.log)
        trig = await csms.call(STATION, "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
        assert trig == {"status": "Accepted"}
        assert (await wait_status(csms, "FirmwareStatusNotification", "Idle", n)).payload == {"status": "Idle"}
        await settle(csms)
    assert box["code"] == 0


async def test_updates_refused_where_no_release_tree_is_usable_or_unsigned_is_not_allowed(tmp_path):
    async with maint_site(tmp_path, extra="signed_only = true\n") as (rt, rig, csms, srv, pki, box):
        unsigned = await csms.call(STATION, "UpdateFirmware", {"requestId": 1, "firmware": {
            "location": srv.url("x.whl"), "retrieveDateTime": now_text()}})
        assert unsigned["status"] == "Rejected" and "signed_only" in unsigned["statusInfo"]["additionalInfo"]
        os.unlink(Path(rt.config.maintenance.install_dir) / "current")
        signed = await csms.call(STATION, "UpdateFirmware", {"requestId": 2, "firmware": {
            "location": srv.url("x.whl"), "retrieveDateTime": now_text(), "signingCertificate": pki.chain_pem,
            "signature": pki.sign(b"x")}})
        assert signed["status"] == "Rejected" and signed["statusInfo"]["reasonCode"] == "NotSupported"
        assert "current is not a symlink" in signed["statusInfo"]["additionalInfo"]
        await settle(csms)
        assert firmware_statuses(csms) == [] and srv.requests == []


async def test_signed_update_refusals_raise_security_events(tmp_path):
    async with maint_site(tmp_path) as (rt, rig, csms, srv, pki, box):
        good = tiny_wheel(tmp_path / "w", "evsite", "7.0")
        (Path(srv.root) / good.name).write_bytes(good.read_bytes())
        stranger = SigningPki(tmp_path / "stranger")
        firmware = {"location": srv.url(good.name), "retrieveDateTime": now_text(),
                    "signingCertificate": stranger.chain_pem, "signature": stranger.sign(good.read_bytes())}
        answer = await csms.call(STATION, "UpdateFirmware", {"requestId": 1, "firmware": firmware})
        assert answer["status"] == "InvalidCertificate" and "does not chain" in answer["statusInfo"]["additionalInfo"]
        event = await security_event(csms, "InvalidFirmwareSigningCertificate")
        assert "does not chain" in event.payload["techInfo"]
        firmware.update(signingCertificate=pki.chain_pem, signature=pki.sign(b"other bytes"))
        n = len(csms.log)
        assert await csms.call(STATION, "UpdateFirmware", {"requestId": 2, "firmware": firmware}) == {"status": "Accepted"}
        await wait_status(csms, "FirmwareStatusNotification", "InvalidSignature", n)
        assert firmware_statuses(csms, n) == [("Downloading", 2), ("Downloaded", 2), ("InvalidSignature", 2)]
        await security_event(csms, "InvalidFirmwareSignature", n)
        assert guard.current_version(Path(rt.config.maintenance.install_dir)) == "0.1.0"


async def test_an_update_during_a_session_is_scheduled_then_installed_after_it(tmp_path):
    async with maint_site(tmp_path) as (rt, rig, csms, srv, pki, box):
        wheel = build_evsite_wheel(tmp_path, "9.9.2")
        (Path(srv.root) / wheel.name).write_bytes(wheel.read_bytes())
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        await wait_until(lambda: rt.sessions.connectors[1].plugged)
        assert (await rt.sessions.present_tag(1, "CARD")).accepted
        await csms.wait_for("TransactionEvent", station=STATION, predicate=lambda m: m.payload["eventType"] == "Started")
        firmware = {"location": srv.url(wheel.name), "retrieveDateTime": now_text(),
                    "signingCertificate": pki.chain_pem, "signature": pki.sign(wheel.read_bytes())}
        n = len(csms.log)
        assert await csms.call(STATION, "UpdateFirmware", {"requestId": 9, "firmware": firmware}) == {"status": "Accepted"}
        await wait_status(csms, "FirmwareStatusNotification", "InstallScheduled", n)
        assert firmware_statuses(csms, n) == [("Downloading", 9), ("Downloaded", 9), ("SignatureVerified", 9),
                                              ("InstallScheduled", 9)]
        assert rt.sessions.connectors[1].tx is not None and not rt.stop.is_set()
        rig.charger("terra").unplug(rig.site.model.now)
        ended = await csms.wait_for("TransactionEvent", station=STATION, timeout=10,
                                    predicate=lambda m: m.payload["eventType"] == "Ended")
        await wait_status(csms, "FirmwareStatusNotification", "InstallRebooting", n, timeout=90)
        await asyncio.wait_for(rt.stop.wait(), 15)
        installing = next(m for m in csms.messages(STATION, "FirmwareStatusNotification", "in", "call")
                          if m.payload["status"] == "Installing")
        assert parse_utc(ended.payload["timestamp"]) <= installing.at     # nothing installed while it charged
        assert await rt.store.outbox_len() == 0
        assert guard.current_version(Path(rt.config.maintenance.install_dir)) == "9.9.2"
    assert box["code"] == EXIT_RESTART


def on_trial(version: str, previous: str = "0.1.0", request_id: int = 21) -> Any:
    """Seed the store as the updater leaves it at the switch into ``version``."""
    async def seed(config: Any) -> None:
        store = await Store.open(config.store_path, SystemClock())
        try:
            deadline = utc_text(datetime.now(timezone.utc) + timedelta(minutes=5))
            await store.kv_set(KV_KEY, {"phase": "trial", "version": version, "previous": previous, "deadline": deadline,
                                        "window": 300.0, "job": {
                                            "location": "https://127.0.0.1:1/x.whl", "retrieve_at": utc_text(datetime.now(timezone.utc)),
                                            "retries": 0, "retry_interval": 0.0, "request_id": request_id,
                                            "signing_certificate": None, "signature": None, "install_at": None}})
        finally:
            await store.close()
    return seed


async def test_a_release_on_trial_boots_with_reason_firmware_update_and_reports_installed(tmp_path):
    Path(tmp_path / "state").mkdir()
    async with maint_site(tmp_path, before=on_trial(__version__)) as (rt, rig, csms, srv, pki, box):
        boot = await csms.wait_for("BootNotification", station=STATION)
        assert boot.payload["reason"] == "FirmwareUpdate"
        installed = await wait_status(csms, "FirmwareStatusNotification", "Installed")
        assert installed.payload["requestId"] == 21
        assert (await security_event(csms, "FirmwareUpdated")).payload["techInfo"] == f"evsite 0.1.0 -> {__version__}"
        await wait_until(lambda: rt.maintenance.firmware.state is None)
        assert await rt.store.kv_get(KV_KEY) is None


async def test_a_rolled_back_release_is_reported_installation_failed_after_the_boot(tmp_path):
    Path(tmp_path / "state").mkdir()
    async with maint_site(tmp_path, before=on_trial("9.9.9", request_id=22)) as (rt, rig, csms, srv, pki, box):
        failed = await wait_status(csms, "FirmwareStatusNotification", "InstallationFailed")
        assert failed.payload["requestId"] == 22
        boot = csms.messages(STATION, "BootNotification", "in", "call")
        assert [b.payload["reason"] for b in boot] == ["PowerUp"] and boot[0].seq < failed.seq


async def test_get_log_uploads_archives_without_secrets(tmp_path):
    async with maint_site(tmp_path, passwords=SECRET, file_logs=True) as (rt, rig, csms, srv, pki, box):
        logging.getLogger("evsite.test").warning("a careless line with the key %s in it", SECRET)
        await rt.maintenance.security_event("SettingSystemTime", "clock set by the 2.0.1 test")
        base = f"http://127.0.0.1:{srv.port}/up/"
        start = utc_text(datetime.now(timezone.utc) - timedelta(minutes=5))
        n = len(csms.log)
        answer = await csms.call(STATION, "GetLog", {"logType": "DiagnosticsLog", "requestId": 17,
                                                     "log": {"remoteLocation": base, "oldestTimestamp": start}})
        assert answer["status"] == "Accepted" and answer["filename"].startswith(f"{STATION}-diagnostics-")
        await wait_status(csms, "LogStatusNotification", "Uploaded", n)
        assert [(m.payload["status"], m.payload["requestId"]) for m in
                csms.messages(STATION, "LogStatusNotification", "in", "call") if m.seq >= n] == \
            [("Uploading", 17), ("Uploaded", 17)]
        with tarfile.open(fileobj=io.BytesIO(srv.uploads[answer["filename"]]), mode="r:gz") as tar:
            files = {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode() for m in tar if m.isfile()}
        assert {"about.json", "config.json", "store.json", "ocpp-recent.txt", "logs/evsite.log"} <= set(files)
        assert json.loads(files["config.json"])["uplink"]["ocpp"] == "2.0.1"
        assert "careless line" in files["logs/evsite.log"] and "BootNotification" in files["ocpp-recent.txt"]
        assert "SettingSystemTime" in files["security/security.log"]
        assert SECRET not in "".join(files.values())

        n = len(csms.log)
        sec = await csms.call(STATION, "GetLog", {"logType": "SecurityLog", "requestId": 18, "log": {"remoteLocation": base}})
        await wait_status(csms, "LogStatusNotification", "Uploaded", n)
        with tarfile.open(fileobj=io.BytesIO(srv.uploads[sec["filename"]]), mode="r:gz") as tar:
            assert sorted(m.name.split("/", 1)[1] for m in tar if m.isfile()) == ["about.json", "security/security.log"]

        refused = await csms.call(STATION, "GetLog", {"logType": "DiagnosticsLog", "requestId": 19,
                                                      "log": {"remoteLocation": "ftp://127.0.0.1/x"}})
        assert refused["status"] == "Rejected" and refused["statusInfo"]["reasonCode"] == "InvalidURL"
        backwards = await csms.call(STATION, "GetLog", {"logType": "DiagnosticsLog", "requestId": 20, "log": {
            "remoteLocation": base, "oldestTimestamp": now_text(), "latestTimestamp": start}})
        assert backwards["status"] == "Rejected" and backwards["statusInfo"]["reasonCode"] == "InvalidValue"
        srv.upload_status = 500
        n = len(csms.log)
        assert (await csms.call(STATION, "GetLog", {"logType": "SecurityLog", "requestId": 21,
                                                    "log": {"remoteLocation": base}}))["status"] == "Accepted"
        failed = await wait_status(csms, "LogStatusNotification", "UploadFailure", n)
        assert failed.payload["requestId"] == 21
        await wait_until(lambda: not rt.maintenance.logs.running)          # its last status answered
        n = len(csms.log)
        assert (await csms.call(STATION, "TriggerMessage", {"requestedMessage": "LogStatusNotification"}))["status"] == "Accepted"
        assert (await csms.wait_for("LogStatusNotification", station=STATION, since=n)).payload == {"status": "Idle"}
        await settle(csms)


async def test_installed_certificates_are_listed_by_type_and_deleted_by_hash(tmp_path):
    async with maint_site(tmp_path) as (rt, rig, csms, srv, pki, box):
        assert await csms.call(STATION, "GetInstalledCertificateIds", {}) == {"status": "NotFound"}
        root, maker = make_cert("csms root", new_key(), ca=True), make_cert("maker root", new_key(), ca=True)
        for kind, cert in (("CSMSRootCertificate", root), ("ManufacturerRootCertificate", maker)):
            ok = await csms.call(STATION, "InstallCertificate", {"certificateType": kind, "certificate": pem(cert)})
            assert ok == {"status": "Accepted"}
        leaf = await csms.call(STATION, "InstallCertificate", {"certificateType": "ManufacturerRootCertificate",
                                                               "certificate": pem(make_cert("no ca", new_key(), ca=False))})
        assert leaf["status"] == "Rejected"
        v2g = await csms.call(STATION, "InstallCertificate", {"certificateType": "V2GRootCertificate", "certificate": pem(root)})
        assert v2g["status"] == "Rejected" and v2g["statusInfo"]["reasonCode"] == "UnsupportedRequest"
        everything = await csms.call(STATION, "GetInstalledCertificateIds", {})
        assert sorted(c["certificateType"] for c in everything["certificateHashDataChain"]) == [
            "CSMSRootCertificate", "ManufacturerRootCertificate"]
        only = await csms.call(STATION, "GetInstalledCertificateIds", {"certificateType": ["CSMSRootCertificate"]})
        [entry] = only["certificateHashDataChain"]
        h = entry["certificateHashData"]
        assert entry["certificateType"] == "CSMSRootCertificate" and h["serialNumber"] == format(root.serial_number, "x")
        assert (await csms.call(STATION, "GetInstalledCertificateIds", {"certificateType": ["V2GCertificateChain"]})) \
            == {"status": "NotFound"}
        assert await csms.call(STATION, "DeleteCertificate", {"certificateHashData": h}) == {"status": "Accepted"}
        assert await csms.call(STATION, "DeleteCertificate", {"certificateHashData": h}) == {"status": "NotFound"}
        assert rt.maintenance.certs.paths("CSMSRootCertificate") == []
        assert len(rt.maintenance.certs.paths("ManufacturerRootCertificate")) == 1


async def test_profile_3_certificate_rotation_over_2_0_1(tmp_path):
    pki = TestPki(tmp_path / "pki")
    server, client = pki.server(), pki.client(STATION)
    csms = TestCsms(ocpp="2.0.1", tags=TagRule.accept_all(), tls=ServerTls(str(server.cert), str(server.key), str(pki.ca)))
    await csms.start()
    uplink = f'security_profile = 3\nca_bundle = "{pki.ca}"\nclient_cert = "{client.cert}"\nclient_key = "{client.key}"\n'
    try:
        async with maint_site(tmp_path / "a", csms=csms, uplink=uplink) as (rt, rig, _, srv, fw, box):
            link = await csms.wait_connected(STATION)
            first_serial = peer_serial(link)
            org = await csms.call(STATION, "SetVariables", {"setVariableData": [{
                "component": {"name": "SecurityCtrlr"}, "variable": {"name": "OrganizationName"},
                "attributeValue": "Example CPO"}]})
            assert org["setVariableResult"][0]["attributeStatus"] == "Accepted"
            assert await csms.call(STATION, "TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"}) \
                == {"status": "Accepted"}
            sign = await csms.wait_for("SignCertificate", station=STATION)
            assert sign.payload["certificateType"] == "ChargingStationCertificate"
            csr_pem = sign.payload["csr"]
            from cryptography import x509
            subject = x509.load_pem_x509_csr(csr_pem.encode()).subject
            assert subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == STATION
            assert subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == "Example CPO"

            rogue = TestPki(tmp_path / "rogue", name="rogue CA")
            refused = await csms.call(STATION, "CertificateSigned", {"certificateChain": pem(sign_csr(rogue, csr_pem))})
            assert refused["status"] == "Rejected"
            event = await security_event(csms, "InvalidChargingStationCertificate")    # the 2.0.1 name
            assert "does not chain" in event.payload["techInfo"]
            v2g = await csms.call(STATION, "CertificateSigned", {"certificateChain": pem(sign_csr(pki, csr_pem)),
                                                                 "certificateType": "V2GCertificate"})
            assert v2g["status"] == "Rejected"
            assert csms.connection_count(STATION) == 1

            new = sign_csr(pki, csr_pem)
            await rt.maintenance.security_event("SettingSystemTime", "queued across the switch")
            assert await csms.call(STATION, "CertificateSigned", {"certificateChain": pem(new)}) == {"status": "Accepted"}
            link2 = await csms.wait_connected(STATION, number=2, timeout=15)
            assert peer_serial(link2) == new.serial_number != first_serial
            await csms.wait_for("SecurityEventNotification", station=STATION,
                                predicate=lambda m: m.payload.get("techInfo") == "queued across the switch")
            await wait_until(lambda: rt.sessions.link_online)
            await settle(csms)
            # 2.0.1 boots once per start: the new connection goes on without a BootNotification
            assert len(csms.messages(STATION, "BootNotification", "in", "call")) == 1
        assert box["code"] == 0
    finally:
        await csms.stop()
