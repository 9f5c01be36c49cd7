"""Security profile 3 against a test CSMS that requires a client certificate, and the
certificate's rotation by SignCertificate / CertificateSigned: a key made on the box,
the CSMS's signature, a new connection with the new certificate, nothing queued lost,
and the new certificate still used after a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from hil.csms.pki import TestPki
from hil.csms.rules import TagRule
from hil.csms.server import ServerTls, TestCsms
from tests.integration.test_maintenance_v16 import maint_site, settle
from tests.integration.test_uplink_v16 import STATION, wait_until
from tests.maint_kit import pem

pytestmark = pytest.mark.slow


def peer_serial(link) -> int:
    """The serial of the client certificate the CSMS saw on this connection."""
    return int(link.peer_cert["serialNumber"], 16)


def sign_csr(pki: TestPki, csr_pem: str) -> x509.Certificate:
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(pki._name)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .sign(pki._key, hashes.SHA256()))


async def test_profile_3_connects_with_a_client_certificate_and_rotates_it(tmp_path):
    pki = TestPki(tmp_path / "pki")
    server, client = pki.server(), pki.client(STATION)
    first = x509.load_pem_x509_certificate(client.cert.read_bytes())
    csms = TestCsms(ocpp="1.6", tags=TagRule.accept_all(), tls=ServerTls(str(server.cert), str(server.key), str(pki.ca)))
    await csms.start()
    uplink = (f'security_profile = 3\nca_bundle = "{pki.ca}"\nclient_cert = "{client.cert}"\n'
              f'client_key = "{client.key}"\n')
    try:
        async with maint_site(tmp_path / "a", csms=csms, uplink=uplink) as (rt, rig, _, srv, fw, box):
            link = await csms.wait_connected(STATION)
            assert csms.url.startswith("wss://") and peer_serial(link) == first.serial_number

            assert await csms.call(STATION, "ExtendedTriggerMessage", {"requestedMessage": "SignChargePointCertificate"}) \
                == {"status": "Accepted"}
            sign = await csms.wait_for("SignCertificate", station=STATION)
            csr_pem = sign.payload["csr"]
            # our key, signed by a CA the station does not trust: refused
            rogue = TestPki(tmp_path / "rogue", name="rogue CA")
            assert await csms.call(STATION, "CertificateSigned", {"certificateChain": pem(sign_csr(rogue, csr_pem))}) \
                == {"status": "Rejected"}
            refused = await csms.wait_for("SecurityEventNotification", station=STATION,
                                          predicate=lambda m: m.payload["type"] == "InvalidChargePointCertificate")
            assert "does not chain" in refused.payload["techInfo"]

            # the CSMS signs the box's request: the station switches on a new connection
            assert "PRIVATE" not in csr_pem
            key_file = Path(rt.config.site.state_dir) / "certs" / "client" / "pending.key"
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
            csr = x509.load_pem_x509_csr(csr_pem.encode())
            assert csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == STATION
            new = sign_csr(pki, csr_pem)
            await rt.maintenance.security_event("SettingSystemTime", "queued across the switch")
            assert await csms.call(STATION, "CertificateSigned", {"certificateChain": pem(new)}) == {"status": "Accepted"}
            link2 = await csms.wait_connected(STATION, number=2, timeout=15)
            assert peer_serial(link2) == new.serial_number
            await csms.wait_for("BootNotification", station=STATION, count=2)
            await csms.wait_for("SecurityEventNotification", station=STATION,
                                predicate=lambda m: m.payload.get("techInfo") == "queued across the switch")
            await wait_until(lambda: rt.sessions.link_online)
            await settle(csms)
            async with asyncio.timeout(10):          # everything queued went out
                while await rt.store.outbox_head(limit=1):
                    await asyncio.sleep(0.05)
        assert box["code"] == 0

        # a restart keeps the new certificate, whatever the config file still names
        async with maint_site(tmp_path / "a", csms=csms, uplink=uplink) as (rt, rig, _, srv, fw, box):
            link3 = await csms.wait_connected(STATION, number=3)
            assert peer_serial(link3) == new.serial_number
            key_pem = Path(rt.maintenance.certs.active_client()[1]).read_bytes()
            loaded = serialization.load_pem_private_key(key_pem, None)
            assert loaded.public_key().public_numbers() == new.public_key().public_numbers()
    finally:
        await csms.stop()


async def test_without_a_client_certificate_the_csms_refuses_the_connection(tmp_path):
    """The test CSMS really requires one (so the test above proves something)."""
    pki = TestPki(tmp_path / "pki")
    server = pki.server()
    csms = TestCsms(ocpp="1.6", tls=ServerTls(str(server.cert), str(server.key), str(pki.ca)))
    await csms.start()
    try:
        import ssl

        import websockets

        ctx = ssl.create_default_context(cafile=str(pki.ca))
        with pytest.raises((ssl.SSLError, websockets.exceptions.InvalidMessage, ConnectionError, EOFError)):
            async with websockets.connect(f"{csms.url}/{STATION}", ssl=ctx, subprotocols=["ocpp1.6"]) as ws:
                await ws.recv()
    finally:
        await csms.stop()
