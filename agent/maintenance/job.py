"""What an update request is, version-neutral, and the words its progress is told in.

``UpdateJob`` is one UpdateFirmware (1.6) / SignedUpdateFirmware (1.6 security
extension) / UpdateFirmware (2.0.1) request; ``UpdatePolicy`` the config's rules for
carrying it out; ``coarse`` maps the detailed status words to the seven that a version
without signed updates knows (1.6 FirmwareStatusNotification).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.timefmt import parse_utc, utc_text

IDLE = "Idle"
#: the statuses of a version without signed updates (1.6 FirmwareStatusNotification)
_COARSE = {
    "DownloadScheduled": IDLE, "SignatureVerified": "Downloaded", "InvalidSignature": "InstallationFailed",
    "InstallScheduled": "Downloaded", "InstallRescheduled": "Downloaded", "InstallRebooting": "Installing",
    "InstallVerificationFailed": "InstallationFailed",
}


def coarse(status: str) -> str:
    """``status`` in the seven words every version knows (Idle, Downloading, Downloaded,
    DownloadFailed, Installing, Installed, InstallationFailed)."""
    return _COARSE.get(status, status)


@dataclass
class UpdateJob:
    """One UpdateFirmware / SignedUpdateFirmware request, version-neutral."""

    location: str
    retrieve_at: datetime
    retries: int = 0
    retry_interval: float = 0.0
    request_id: int | None = None
    signing_certificate: str | None = None
    signature: str | None = None
    install_at: datetime | None = None

    @property
    def signed(self) -> bool:
        return self.signature is not None

    @property
    def expected_sha256(self) -> str | None:
        """A ``#sha256=<hex>`` fragment on the location (pip's convention) is checked."""
        _, _, frag = self.location.partition("#")
        return frag[7:] if frag.startswith("sha256=") else None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["retrieve_at"] = utc_text(self.retrieve_at)
        d["install_at"] = utc_text(self.install_at) if self.install_at else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UpdateJob:
        d = dict(d)
        d["retrieve_at"] = parse_utc(d["retrieve_at"])
        d["install_at"] = parse_utc(d["install_at"]) if d.get("install_at") else None
        return cls(**d)


class RequestRefused(Exception):
    """A request answered with a refusal: ``status`` is the answer (Rejected,
    InvalidCertificate), ``security_event`` what to record, if anything."""

    def __init__(self, status: str, reason: str, security_event: str | None = None) -> None:
        super().__init__(reason)
        self.status, self.security_event = status, security_event


@dataclass
class UpdatePolicy:
    """The config's rules (agent.config.model.MaintenanceSection) and what they need."""

    signed_only: bool = False
    max_bytes: int = 200_000_000
    download_timeout: float = 60.0
    confirm_window: float = 600.0
    max_starts: int = 3
    during_session: str = "wait"                     # wait | stop
    ssl_context: Any = None
    roots: Callable[[], list[Path]] = field(default=lambda: [])   # firmware-signing roots
