"""Is a signed release really from whom it claims? Certificates and signatures.

OCPP's signed firmware update (1.6 security extension SignedUpdateFirmware, 2.0.1
UpdateFirmware) carries a signing certificate and a base64 signature of the file. We
accept the file only when

1. the signing certificate (plus any intermediates sent with it, leaf first) chains,
   certificate by certificate, to one of the firmware-signing roots this site trusts
   (the configured file, and ManufacturerRootCertificates the CSMS installed), every
   certificate on the way valid now and every issuer a CA; and
2. the signature verifies with the signing certificate's key over the file's SHA-256
   (RSA PKCS#1 v1.5 or ECDSA, both with SHA-256, as the OCPP security whitepaper
   describes).

A failure of 1 is ``CertificateRejected`` (security event
InvalidFirmwareSigningCertificate), of 2 ``SignatureRejected`` (InvalidFirmwareSignature);
each message names what exactly did not hold.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

MAX_CHAIN = 6


class VerifyError(Exception):
    """A certificate or signature check failed; ``security_event`` names the OCPP event."""

    security_event = "InvalidFirmwareSigningCertificate"


class CertificateRejected(VerifyError):
    security_event = "InvalidFirmwareSigningCertificate"


class SignatureRejected(VerifyError):
    security_event = "InvalidFirmwareSignature"


def load_certificates(pem: str | bytes, what: str) -> list[x509.Certificate]:
    """Every certificate in a PEM text; CertificateRejected when there is none or the
    text is not PEM."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateRejected(f"{what} is not a PEM certificate: {exc}") from None
    if not certs:
        raise CertificateRejected(f"{what} holds no certificate")
    return certs


def load_roots(paths: Iterable[str | Path]) -> list[x509.Certificate]:
    """The certificates in each existing file (unreadable files are skipped: a missing
    root is the same as an untrusted chain, which the caller reports)."""
    roots: list[x509.Certificate] = []
    for p in paths:
        try:
            roots.extend(x509.load_pem_x509_certificates(Path(p).read_bytes()))
        except (OSError, ValueError):
            continue
    return roots


def name_of(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def check_validity(cert: x509.Certificate, now: datetime, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise CertificateRejected(f"{what} {name_of(cert)} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if now > cert.not_valid_after_utc:
        raise CertificateRejected(f"{what} {name_of(cert)} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def check_chain(chain: list[x509.Certificate], roots: list[x509.Certificate], now: datetime,
                what: str = "signing certificate") -> x509.Certificate:
    """The leaf (``chain[0]``) if the chain reaches one of ``roots``; else CertificateRejected."""
    if not roots:
        raise CertificateRejected(f"{what}: no trusted root is configured to check it against")
    leaf = chain[0]
    check_validity(leaf, now, what)
    for root in roots:
        if leaf.fingerprint(hashes.SHA256()) == root.fingerprint(hashes.SHA256()):
            return leaf
    current = leaf
    others = list(chain[1:])
    for _ in range(MAX_CHAIN):
        for root in roots:
            if issued_by(current, root):
                check_validity(root, now, "root certificate")
                return leaf
        nxt = next((c for c in others if issued_by(current, c)), None)
        if nxt is None:
            raise CertificateRejected(f"{what} {name_of(leaf)} does not chain to a trusted root "
                                      f"(no trusted issuer for {name_of(current)}, issued by {current.issuer.rfc4514_string()})")
        if not is_ca(nxt):
            raise CertificateRejected(f"{what}: {name_of(nxt)} issued a certificate but is not a CA")
        check_validity(nxt, now, "intermediate certificate")
        others.remove(nxt)
        current = nxt
    raise CertificateRejected(f"{what} {name_of(leaf)}: chain longer than {MAX_CHAIN} certificates")


def verify_signature(cert: x509.Certificate, signature_b64: str, sha256_digest: bytes) -> None:
    """Check ``signature_b64`` over a file whose SHA-256 is ``sha256_digest``."""
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureRejected("the signature is not valid base64") from None
    if not signature:
        raise SignatureRejected("the signature is empty")
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, sha256_digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, sha256_digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        else:
            raise CertificateRejected(f"signing certificate {name_of(cert)} has a {type(key).__name__}: "
                                      "only RSA and ECDSA signatures are supported")
    except InvalidSignature:
        raise SignatureRejected(f"the signature does not match the downloaded file (signer {name_of(cert)})") from None
