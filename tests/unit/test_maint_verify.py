"""Signing certificate chains and file signatures, with a PKI made here."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from agent.maintenance import verify
from tests.maint_kit import SigningPki, make_cert, new_key, pem

NOW = dt.datetime.now(dt.timezone.utc)
DATA = b"evsite release bytes" * 1000


@pytest.fixture(params=["rsa", "ec"])
def pki(request, tmp_path):
    return SigningPki(tmp_path / "pki", algorithm=request.param)


def roots(pki):
    return verify.load_roots([pki.root_path])


def test_a_chain_through_an_intermediate_and_its_signature_verify(pki):
    chain = verify.load_certificates(pki.chain_pem, "signing certificate")
    leaf = verify.check_chain(chain, roots(pki), NOW)
    verify.verify_signature(leaf, pki.sign(DATA), hashlib.sha256(DATA).digest())


def test_a_wrong_signature_is_refused(pki):
    leaf = verify.check_chain(verify.load_certificates(pki.chain_pem, "x"), roots(pki), NOW)
    with pytest.raises(verify.SignatureRejected, match="does not match") as err:
        verify.verify_signature(leaf, pki.sign(DATA + b"!"), hashlib.sha256(DATA).digest())
    assert err.value.security_event == "InvalidFirmwareSignature"
    with pytest.raises(verify.SignatureRejected, match="base64"):
        verify.verify_signature(leaf, "not base64 !!", hashlib.sha256(DATA).digest())


def test_a_signer_without_its_intermediate_does_not_chain(pki):
    with pytest.raises(verify.CertificateRejected, match="does not chain to a trusted root") as err:
        verify.check_chain(verify.load_certificates(pem(pki.cert), "x"), roots(pki), NOW)
    assert err.value.security_event == "InvalidFirmwareSigningCertificate"


def test_a_chain_to_another_root_is_refused(pki, tmp_path):
    other = SigningPki(tmp_path / "other")
    with pytest.raises(verify.CertificateRejected, match="does not chain"):
        verify.check_chain(verify.load_certificates(other.chain_pem, "x"), roots(pki), NOW)


def test_expired_and_not_yet_valid_certificates_are_refused(pki):
    key = new_key()
    old = make_cert("old signer", key, ("fw intermediate", pki.inter_key), ca=False, days=-1, start_days=-30)
    with pytest.raises(verify.CertificateRejected, match="expired on"):
        verify.check_chain([old, pki.inter], roots(pki), NOW)
    future = make_cert("future signer", key, ("fw intermediate", pki.inter_key), ca=False, start_days=2)
    with pytest.raises(verify.CertificateRejected, match="not valid before"):
        verify.check_chain([future, pki.inter], roots(pki), NOW)


def test_an_issuer_that_is_not_a_ca_is_refused(pki):
    not_ca_key = new_key()
    not_ca = make_cert("fake intermediate", not_ca_key, ("fw root", pki.root_key), ca=False)
    leaf = make_cert("signer", new_key(), ("fake intermediate", not_ca_key), ca=False)
    with pytest.raises(verify.CertificateRejected, match="not a CA"):
        verify.check_chain([leaf, not_ca], roots(pki), NOW)


def test_no_configured_root_and_garbage_are_clear_errors(pki):
    with pytest.raises(verify.CertificateRejected, match="no trusted root is configured"):
        verify.check_chain(verify.load_certificates(pki.chain_pem, "x"), [], NOW)
    with pytest.raises(verify.CertificateRejected, match="signing certificate is not a PEM certificate|holds no certificate"):
        verify.load_certificates("hello", "signing certificate")
    assert verify.load_roots(["/nonexistent.pem"]) == []
