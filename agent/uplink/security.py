"""OCPP security profiles 1-3 as the connection needs them: credentials and TLS.

Profile 1: HTTP Basic auth (user = station id, password = AuthorizationKey /
BasicAuthPassword) over ws://. Profile 2: the same over wss://, the CSMS certificate
verified against a configured CA bundle or the system store. Profile 3: wss:// with a
client certificate and key instead of a password.

Verification is never switched off: there is no option for it, so it cannot be left
off by accident. Files holding secrets (the password, the client key) must be mode
0600 or stricter, or we refuse to start with a message that says how to fix it
(design invariant 5); their contents are registered with the log redactor so no log
line can carry them, whichever logger writes it.
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from agent.logsetup import redact, register_secret

PROFILE_NAMES = {0: "no security", 1: "basic auth", 2: "TLS + basic auth", 3: "TLS client certificate"}


class SecurityConfigError(ValueError):
    """The security settings or the files they name are unusable; the message says which."""


def check_secret_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path if it is a regular file that only its owner can read or write."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise SecurityConfigError(f"{what} {p} does not exist") from None
    except OSError as exc:
        raise SecurityConfigError(f"{what} {p} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecurityConfigError(f"{what} {p} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise SecurityConfigError(
            f"{what} {p} is mode {mode:04o}: group and others must have no access "
            f"(it must be 0600; fix with: chmod 600 {p})"
        )
    return p


def read_password_file(path: str | os.PathLike[str]) -> str:
    """The password in ``path`` (one line; surrounding whitespace and the newline dropped).

    Refused unless the file is mode 0600 (or stricter). The value is registered with the
    log redactor before it is returned.
    """
    p = check_secret_file(path, "password file")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"password file {p} cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecurityConfigError(f"password file {p} is not UTF-8 text") from None
    password = text.strip()
    register_secret(password)
    if not password:
        raise SecurityConfigError(f"password file {p} is empty")
    if "\n" in password or "\r" in password:
        raise SecurityConfigError(f"password file {p} holds more than one line; it must hold only the password")
    return password


def basic_auth_header(station_id: str, password: str) -> str:
    """The ``Authorization`` header value; the encoded form is registered as a secret too,
    because base64 of ``id:password`` is as good as the password."""
    if ":" in station_id:
        raise SecurityConfigError(
            f"station id {station_id!r} contains ':', which HTTP Basic auth cannot carry as a user name"
        )
    token = base64.b64encode(f"{station_id}:{password}".encode()).decode("ascii")
    register_secret(token)
    return f"Basic {token}"


def client_tls_context(
    ca_bundle: str | os.PathLike[str] | None = None,
    client_cert: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A TLS context that verifies the CSMS: hostname and chain, TLS 1.2 or newer.

    ``ca_bundle`` None or empty means the system trust store. ``client_cert`` and
    ``client_key`` (profile 3) go together; the key file must be mode 0600.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # create_default_context already sets these; say them again so a reader (and a
    # future refactor) sees that verification is not optional here
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    if ca_bundle:
        ca = Path(ca_bundle)
        if not ca.is_file():
            raise SecurityConfigError(f"CA bundle {ca} does not exist")
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, ValueError) as exc:
            raise SecurityConfigError(f"CA bundle {ca} holds no usable PEM certificate: {exc}") from None
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if bool(client_cert) != bool(client_key):
        raise SecurityConfigError("a client certificate needs its key and a key its certificate: set both or neither")
    if client_cert and client_key:
        cert = Path(client_cert)
        if not cert.is_file():
            raise SecurityConfigError(f"client certificate {cert} does not exist")
        key = check_secret_file(client_key, "client key")
        try:
            ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
        except ssl.SSLError as exc:
            raise SecurityConfigError(
                f"client certificate {cert} and key {key} cannot be loaded together "
                f"(not PEM, encrypted, or not a matching pair): {exc.reason or exc}"
            ) from None
    return ctx


@dataclass(frozen=True)
class Credentials:
    """What one connection attempt presents: HTTP headers and a TLS context, per profile."""

    profile: int
    authorization: str | None = None    # the Basic header value, profiles 1 and 2
    tls: ssl.SSLContext | None = None    # profiles 2 and 3 (and any wss:// URL)

    def headers(self) -> dict[str, str]:
        return {"Authorization": self.authorization} if self.authorization else {}

    def __repr__(self) -> str:  # never show the header, even in a debugger or a traceback
        return f"Credentials(profile={self.profile}, basic_auth={self.authorization is not None}, tls={self.tls is not None})"


def build_credentials(
    *,
    url: str,
    station_id: str,
    profile: int,
    password: str | None = None,
    password_file: str | os.PathLike[str] | None = None,
    ca_bundle: str | os.PathLike[str] | None = None,
    client_cert: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
) -> Credentials:
    """Check that the URL scheme and the files fit the profile, then load them.

    Profiles 2 and 3 need wss://; profiles 0 and 1 may use either (a wss:// URL under
    profile 0 or 1 still verifies the server). A password comes from ``password_file``
    unless given directly (tests, or the store once the CSMS has set a new one).
    """
    if profile not in PROFILE_NAMES:
        raise SecurityConfigError(f"security profile {profile} is unknown: use 0, 1, 2 or 3")
    secure = url.lower().startswith("wss://")
    if not secure and not url.lower().startswith("ws://"):
        raise SecurityConfigError(f"CSMS URL {url!r} must start with ws:// or wss://")
    if profile >= 2 and not secure:
        raise SecurityConfigError(f"security profile {profile} ({PROFILE_NAMES[profile]}) needs a wss:// URL, not {url!r}")
    authorization = None
    if profile in (1, 2):
        if password is None:
            if not password_file:
                raise SecurityConfigError(f"security profile {profile} needs password_file (the AuthorizationKey)")
            password = read_password_file(password_file)
        else:
            register_secret(password)
        if not password:
            raise SecurityConfigError(f"security profile {profile} needs a non-empty password")
        authorization = basic_auth_header(station_id, password)
    if profile == 3 and not (client_cert and client_key):
        raise SecurityConfigError("security profile 3 needs client_cert and client_key")
    tls = None
    if secure:
        tls = client_tls_context(
            ca_bundle,
            client_cert if profile == 3 else None,
            client_key if profile == 3 else None,
        )
    return Credentials(profile=profile, authorization=authorization, tls=tls)


def describe_tls_failure(exc: BaseException) -> tuple[str, str] | None:
    """(security event kind, one clear sentence) when ``exc`` is a TLS failure, else None.

    Event kinds are version-neutral; the adapters map them (1.6 security extension:
    InvalidCentralSystemCertificate; 2.0.1: InvalidCsmsCertificate, InvalidTLSVersion...).
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            detail = e.verify_message or str(e)
            return "InvalidCsmsCertificate", f"the CSMS certificate was not accepted: {detail}"
        if isinstance(e, ssl.SSLError):
            reason = getattr(e, "reason", None) or str(e)
            if "VERSION" in str(reason).upper():
                return "InvalidTLSVersion", f"TLS version refused in the handshake with the CSMS: {reason}"
            if "CIPHER" in str(reason).upper():
                return "InvalidTLSCipherSuite", f"no common TLS cipher suite with the CSMS: {reason}"
            return "TLSHandshakeFailed", f"TLS handshake with the CSMS failed: {reason}"
        e = e.__cause__ or e.__context__
    return None


class _RedactingLogger(logging.LoggerAdapter):
    """Every line rendered, then passed through ``redact``, before any handler sees it."""

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg!r} {args!r}"
        kwargs.pop("stacklevel", None)
        self.logger.log(level, redact(text), stacklevel=3, **kwargs)  # type: ignore[arg-type]


def redacting_logger(name: str) -> logging.LoggerAdapter:
    """A logger to hand to libraries that log secrets at DEBUG (websockets logs every
    handshake header, Authorization among them): the masking happens here, whatever
    handlers the process has, so it also holds in tests and under another log setup."""
    return _RedactingLogger(logging.getLogger(name), {})
