"""Installed roots by OCPP hash data; the station key, its CSR and the signed certificate."""

from __future__ import annotations

import datetime as dt
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.maintenance.certificates import CertificateError, CertificateStore, HashData, hash_data
from tests.maint_kit import make_cert, new_key, pem

NOW = dt.datetime.now(dt.timezone.utc)


def test_roots_install_list_and_delete_by_hash_data(tmp_path):
    store = CertificateStore(tmp_path / "certs")
    root = make_cert("csms root", new_key(), ca=True)
    store.install("CSMSRootCertificate", pem(root), NOW)
    store.install("CSMSRootCertificate", pem(root), NOW)          # twice: still one
    maker = make_cert("maker root", new_key(), ca=True)
    store.install("ManufacturerRootCertificate", pem(maker), NOW)
    listed = store.installed(["CSMSRootCertificate"])
    assert [k for k, _ in listed] == ["CSMSRootCertificate"]
    [(_, h)] = listed
    assert h.serial_number == format(root.serial_number, "x")
    assert h.issuer_name_hash == hash_data(root).issuer_name_hash and len(h.issuer_key_hash) == 64
    unknown = HashData("SHA256", "00" * 32, "11" * 32, "abc")
    assert store.delete(unknown) is False
    assert store.delete(HashData(h.hash_algorithm, h.issuer_name_hash.upper(), h.issuer_key_hash, "0" + h.serial_number))
    assert store.installed(["CSMSRootCertificate"]) == []
    assert len(store.installed()) == 1


def test_bad_roots_are_refused_with_the_reason(tmp_path):
    store = CertificateStore(tmp_path / "certs", max_per_kind=1)
    with pytest.raises(CertificateError, match="not a PEM certificate|holds no certificate"):
        store.install("CSMSRootCertificate", "garbage", NOW)
    with pytest.raises(CertificateError, match="not a CA"):
        store.install("CSMSRootCertificate", pem(make_cert("leaf", new_key(), ca=False)), NOW)
    with pytest.raises(CertificateError, match="expired"):
        store.install("CSMSRootCertificate", pem(make_cert("old", new_key(), ca=True, days=-1, start_days=-9)), NOW)
    with pytest.raises(CertificateError, match="not supported"):
        store.install("V2GRootCertificate", pem(make_cert("v2g", new_key(), ca=True)), NOW)
    store.install("CSMSRootCertificate", pem(make_cert("one", new_key(), ca=True)), NOW)
    with pytest.raises(CertificateError, match="already 1"):
        store.install("CSMSRootCertificate", pem(make_cert("two", new_key(), ca=True)), NOW)


def _sign_csr(csr_pem: str, ca_key, ca_name: str = "csms ca", days: float = 30) -> x509.Certificate:
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid
    return (x509.CertificateBuilder().subject_name(csr.subject)
            .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "evsite test"),
                                    x509.NameAttribute(x509.NameOID.COMMON_NAME, ca_name)]))
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=days))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))


def test_csr_key_stays_private_and_the_signed_certificate_becomes_active(tmp_path):
    store = CertificateStore(tmp_path / "certs")
    ca_key = new_key()
    ca = make_cert("csms ca", ca_key, ca=True)
    csr_pem = store.make_csr("SITE-1", "Operator")
    key_file = tmp_path / "certs" / "client" / "pending.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "SITE-1"
    assert "PRIVATE KEY" not in csr_pem
    signed = _sign_csr(csr_pem, ca_key)
    cert_path, key_path = store.accept_signed(pem(signed, ca), NOW, [ca])
    assert store.active_client() == (str(cert_path), str(key_path))
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600 and not key_file.exists()
    with pytest.raises(CertificateError, match="no certificate signing request is pending"):
        store.accept_signed(pem(signed), NOW, [ca])


def test_signed_certificates_that_do_not_fit_are_refused(tmp_path):
    store = CertificateStore(tmp_path / "certs")
    ca_key, other_key = new_key(), new_key()
    ca = make_cert("csms ca", ca_key, ca=True)
    csr_pem = store.make_csr("SITE-1", "Operator")
    with pytest.raises(CertificateError, match="does not chain to a trusted CSMS root"):
        store.accept_signed(pem(_sign_csr(csr_pem, other_key, "rogue ca")), NOW, [ca])
    with pytest.raises(CertificateError, match="expired"):
        store.accept_signed(pem(_sign_csr(csr_pem, ca_key, days=-0.5)), NOW, [ca])
    stranger = CertificateStore(tmp_path / "other")
    with pytest.raises(CertificateError, match="not for the key of our signing request"):
        store.accept_signed(pem(_sign_csr(stranger.make_csr("SITE-1", "x"), ca_key)), NOW, [ca])
    with pytest.raises(CertificateError, match="no CSMS root"):
        store.accept_signed(pem(_sign_csr(csr_pem, ca_key)), NOW, [])
    assert store.active_client() is None                       # nothing switched
    assert (tmp_path / "certs" / "client" / "pending.key").exists()
