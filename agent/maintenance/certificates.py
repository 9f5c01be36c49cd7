"""Certificates the CSMS manages on the box, and the box's own client certificate.

Two jobs, one directory (``<state_dir>/certs``):

- **Installed roots.** InstallCertificate puts a CA certificate under
  ``roots/<kind>/<sha256 fingerprint>.pem``: a CSMS root (trusted for the CSMS's TLS
  certificate, next to the configured ``uplink.ca_bundle``) or a manufacturer root
  (trusted for firmware signing certificates, next to ``maintenance.firmware_signing_root``).
  A certificate that is not PEM, not a CA, or not valid now is refused with the reason.
  Certificates are named to the CSMS by OCPP's hash data (issuer name hash, issuer key
  hash, serial number), which GetInstalledCertificateIds lists and DeleteCertificate takes.
- **The client certificate (security profile 3).** ``make_csr`` generates a key on the
  box (EC P-256, file mode 0600 from its creation; it never leaves the box and is never
  logged) and returns a CSR for SignCertificate. ``accept_signed`` checks what the CSMS
  sent back with CertificateSigned (it is for our pending key, valid now, and chains to
  its issuer or a trusted root) and makes it the active client certificate
  (``client/active.json``), used from the next connection on.

Kinds are version-neutral words ("CSMSRootCertificate", "ManufacturerRootCertificate");
each adapter maps its own names onto them.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from agent.maintenance.verify import CertificateRejected, check_validity, is_ca, issued_by, load_certificates

log = logging.getLogger("evsite.maintenance.certificates")

ROOT_KINDS = ("CSMSRootCertificate", "ManufacturerRootCertificate")
_HASHES = {"SHA256": hashes.SHA256, "SHA384": hashes.SHA384, "SHA512": hashes.SHA512}


class CertificateError(Exception):
    """A certificate was refused; the message says why."""


@dataclass(frozen=True)
class HashData:
    hash_algorithm: str
    issuer_name_hash: str
    issuer_key_hash: str
    serial_number: str

    def matches(self, other: HashData) -> bool:
        return (self.hash_algorithm == other.hash_algorithm
                and self.issuer_name_hash.lower() == other.issuer_name_hash.lower()
                and self.issuer_key_hash.lower() == other.issuer_key_hash.lower()
                and self.serial_number.lower().lstrip("0") == other.serial_number.lower().lstrip("0"))


def hash_data(cert: x509.Certificate, issuer: x509.Certificate | None = None, algorithm: str = "SHA256") -> HashData:
    """OCPP's CertificateHashData (as OCSP computes it); a root is its own issuer."""
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer or cert, _HASHES[algorithm]()).build()
    return HashData(algorithm, req.issuer_name_hash.hex(), req.issuer_key_hash.hex(), format(cert.serial_number, "x"))


def _write_private(path: Path, data: bytes) -> None:
    """A file only its owner can read, from the moment it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class CertificateStore:
    def __init__(self, directory: str | os.PathLike[str], *, max_per_kind: int = 10) -> None:
        self.dir = Path(directory)
        self.max_per_kind = max_per_kind

    # ---- installed roots ---------------------------------------------------------------
    def _kind_dir(self, kind: str) -> Path:
        if kind not in ROOT_KINDS:
            raise CertificateError(f"certificate type {kind!r} is not supported (use {' or '.join(ROOT_KINDS)})")
        return self.dir / "roots" / kind

    def install(self, kind: str, pem: str, now: datetime) -> Path:
        """Install a root of ``kind``; CertificateError when refused (OSError: failed)."""
        directory = self._kind_dir(kind)
        try:
            certs = load_certificates(pem, "the certificate")
        except CertificateRejected as exc:
            raise CertificateError(str(exc)) from None
        if len(certs) != 1:
            raise CertificateError(f"expected one certificate, got {len(certs)}")
        cert = certs[0]
        if not is_ca(cert):
            raise CertificateError(f"{cert.subject.rfc4514_string()} is not a CA certificate")
        try:
            check_validity(cert, now, "certificate")
        except CertificateRejected as exc:
            raise CertificateError(str(exc)) from None
        path = directory / f"{cert.fingerprint(hashes.SHA256()).hex()}.pem"
        if path.exists():
            return path
        if len(self.paths(kind)) >= self.max_per_kind:
            raise CertificateError(f"already {self.max_per_kind} certificates of type {kind} installed")
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        tmp.replace(path)
        log.warning("installed %s %s", kind, cert.subject.rfc4514_string())
        return path

    def paths(self, kind: str) -> list[Path]:
        directory = self._kind_dir(kind)
        return sorted(directory.glob("*.pem")) if directory.is_dir() else []

    def installed(self, kinds: Iterable[str] = ROOT_KINDS) -> list[tuple[str, HashData]]:
        out = []
        for kind in kinds:
            for path in self.paths(kind):
                cert = x509.load_pem_x509_certificate(path.read_bytes())
                out.append((kind, hash_data(cert)))
        return out

    def delete(self, wanted: HashData) -> bool:
        """Remove the installed root ``wanted`` names; False when there is none."""
        for kind in ROOT_KINDS:
            for path in self.paths(kind):
                cert = x509.load_pem_x509_certificate(path.read_bytes())
                if hash_data(cert, algorithm=wanted.hash_algorithm).matches(wanted):
                    path.unlink()
                    log.warning("deleted %s %s", kind, cert.subject.rfc4514_string())
                    return True
        return False

    def csms_bundle(self, configured: str | None) -> str | None:
        """A CA file for the CSMS connection: the configured bundle (or the system
        store's file) plus the installed CSMS roots; ``configured`` when none is installed."""
        extra = self.paths("CSMSRootCertificate")
        if not extra:
            return configured or None
        base = configured or ssl.get_default_verify_paths().cafile
        parts = [Path(base).read_text()] if base and Path(base).is_file() else []
        parts += [p.read_text() for p in extra]
        bundle = self.dir / "csms-roots.pem"
        bundle.write_text("\n".join(parts))
        return str(bundle)

    # ---- the client certificate ---------------------------------------------------------
    @property
    def client_dir(self) -> Path:
        return self.dir / "client"

    def make_csr(self, common_name: str, organization: str) -> str:
        """A new key (replacing any pending one) and its CSR in PEM."""
        self.client_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.client_dir, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(self.client_dir / "pending.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization[:64] or "evsite"),
                             x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def accept_signed(self, chain_pem: str, now: datetime, trusted: list[x509.Certificate]) -> tuple[Path, Path]:
        """Make the CSMS-signed certificate for the pending key the active one; returns
        (certificate chain path, key path). CertificateError says why when refused."""
        pending = self.client_dir / "pending.key"
        if not pending.is_file():
            raise CertificateError("no certificate signing request is pending (no key waits for a certificate)")
        if not trusted:
            raise CertificateError("no CSMS root is configured (uplink.ca_bundle) or installed to check the certificate against")
        try:
            chain = load_certificates(chain_pem, "certificateChain")
            leaf = chain[0]
            for i, cert in enumerate(chain):
                check_validity(cert, now, "certificate" if i == 0 else "issuer certificate")
        except CertificateRejected as exc:
            raise CertificateError(str(exc)) from None
        key = serialization.load_pem_private_key(pending.read_bytes(), password=None)
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if leaf.public_key().public_bytes(serialization.Encoding.DER, spki) != \
                key.public_key().public_bytes(serialization.Encoding.DER, spki):
            raise CertificateError("the certificate is not for the key of our signing request")
        for cert, issuer in zip(chain, chain[1:]):
            if not issued_by(cert, issuer):
                raise CertificateError(f"{cert.subject.rfc4514_string()} is not issued by the next certificate in the chain")
        # 1.6 security whitepaper: it must be part of the CSMS root certificate chain
        top = chain[-1]
        fingerprints = {r.fingerprint(hashes.SHA256()) for r in trusted}
        if top.fingerprint(hashes.SHA256()) not in fingerprints and not any(issued_by(top, r) for r in trusted):
            raise CertificateError(f"the certificate does not chain to a trusted CSMS root (issuer {top.issuer.rfc4514_string()})")
        serial = format(leaf.serial_number, "x")
        cert_path, key_path = self.client_dir / f"{serial}.pem", self.client_dir / f"{serial}.key"
        cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
        os.replace(pending, key_path)
        tmp = self.client_dir / "active.json.tmp"
        tmp.write_text(json.dumps({"cert": str(cert_path), "key": str(key_path), "serial": serial}))
        tmp.replace(self.client_dir / "active.json")
        log.warning("client certificate %s (serial %s) is active from the next connection on",
                    leaf.subject.rfc4514_string(), serial)
        return cert_path, key_path

    def active_client(self) -> tuple[str, str] | None:
        try:
            data = json.loads((self.client_dir / "active.json").read_text())
        except (OSError, ValueError):
            return None
        cert, key = data.get("cert"), data.get("key")
        if cert and key and Path(cert).is_file() and Path(key).is_file():
            return str(cert), str(key)
        return None
