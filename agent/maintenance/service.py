"""The maintenance machinery wired to the running agent, version-neutral.

``open_maintenance(runtime)`` (the supervisor enters it after the uplink, before the
loops start) builds the updater, the log uploader and the certificate store from the
config, then, before the first connection:

- resumes what a previous run began (update.py: a download to finish, a release on
  trial to confirm, a rollback to report);
- gives the uplink the active client certificate (security profile 3) and the
  installed CSMS roots, and a hook that records TLS failures as security events;
- keeps a security event log (``<log_dir>/security.log``, rotating) for GetLog.

The OCPP adapters talk to it through a few methods: requests in (``firmware``, ``logs``,
the certificate methods), and ``online(reporter)`` when a connection has booted. A
reporter is the adapter's object with ``firmware_status(status, job)`` and
``upload_status(status, request)`` that turn the status words into its messages.
Statuses that happen while no adapter is online are kept (the latest of each kind) and
sent by the next ``online``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import logging.handlers
import ssl
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, Protocol

from agent import __version__
from agent.logsetup import RedactFilter, UTCFormatter
from agent.maintenance import verify
from agent.maintenance.certificates import CertificateError, CertificateStore, HashData
from agent.maintenance.diagnostics import LogRequest, LogUploader, Sources
from agent.maintenance.release import Releases
from agent.maintenance.update import FirmwareUpdater, UpdateJob, UpdatePolicy, coarse

log = logging.getLogger("evsite.maintenance")
security_log = logging.getLogger("evsite.security")

_FINAL = ("Installed", "InstallationFailed", "DownloadFailed", "InvalidSignature", "InstallVerificationFailed")


class Reporter(Protocol):
    async def firmware_status(self, status: str, job: UpdateJob | None) -> None: ...
    async def upload_status(self, status: str, request: LogRequest | None) -> None: ...


class MaintenanceService:
    def __init__(self, rt: Any, *, running_version: str = __version__, releases: Releases | None = None) -> None:
        self.rt = rt
        cfg, site = rt.config.maintenance, rt.config.site
        self.cfg = cfg
        self.log_dir = Path(cfg.log_dir or f"{site.state_dir}/logs")
        work = Path(site.state_dir) / "maintenance"
        self.certs = CertificateStore(Path(site.state_dir) / "certs")
        self.releases = releases or Releases(cfg.install_dir, keep=cfg.keep_releases)
        tls = ssl.create_default_context(cafile=cfg.ca_bundle) if cfg.ca_bundle else None
        self.firmware = FirmwareUpdater(
            store=rt.store, clock=rt.clock, releases=self.releases, work_dir=work / "firmware",
            policy=UpdatePolicy(signed_only=cfg.signed_only, max_bytes=cfg.download_max_bytes,
                                download_timeout=cfg.transfer_timeout, confirm_window=cfg.confirm_window,
                                max_starts=cfg.max_start_attempts, during_session=cfg.install_during_session,
                                ssl_context=tls, roots=self.firmware_roots),
            running_version=running_version, on_status=self._firmware_status, security_event=self.security_event,
            request_restart=rt.request_restart, busy=self._busy, wait_idle=self._wait_idle,
            stop_sessions=self._stop_sessions, before_restart=self._drain_outbox)
        self.logs = LogUploader(
            sources=Sources(self.log_dir, rt.config.uplink.station_id or "station", rt.config, rt.store, self._recent),
            clock=rt.clock, work_dir=work / "uploads", on_status=self._upload_status, method=cfg.upload_method,
            ssl_context=tls, timeout=cfg.transfer_timeout)
        self.reporter: Reporter | None = None
        self._pending: dict[str, tuple[str, Any]] = {}
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log_handler: logging.Handler | None = None
        rt.firmware_status = "Idle"       # what a 1.6 TriggerMessage answers (session.py)
        rt.diagnostics_status = "Idle"

    # ---- lifetime ---------------------------------------------------------------------
    async def start(self) -> None:
        self._open_security_log()
        if self.rt.sessions is not None and hasattr(self.rt.sessions, "subscribe"):
            self.spawn(self._pump(self.rt.sessions.subscribe()), "maintenance events")
        conn = self._connection()
        if conn is not None and conn.on_security_event is None:
            conn.on_security_event = self.security_event
        try:
            self.refresh_tls()
        except Exception as exc:  # the configured files still work: connect with those
            log.error("installed certificates not used: %s", exc)
        why = self.releases.usable()
        if why:
            log.info("software updates are not possible here: %s", why)
        await self.firmware.resume()

    async def close(self) -> None:
        await self.firmware.close()
        await self.logs.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._log_handler is not None:
            security_log.removeHandler(self._log_handler)
            self._log_handler.close()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- the adapters' side ----------------------------------------------------------------
    async def online(self, reporter: Reporter) -> None:
        """A connection booted: deliver what is pending, confirm a release on trial."""
        self.reporter = reporter
        for kind in list(self._pending):
            await self._deliver(kind)
        await self.firmware.online()

    def offline(self, reporter: Reporter) -> None:
        if self.reporter is reporter:
            self.reporter = None

    async def security_event(self, kind: str, tech_info: str | None = None) -> None:
        """Record a security event: queued durably for the CSMS, and in the security log."""
        sessions = self.rt.sessions
        if sessions is not None and hasattr(sessions, "security_event"):
            try:
                await sessions.security_event(kind, tech_info)
                return  # the event pump writes it to the security log
            except Exception as exc:
                log.error("security event %s not recorded: %s", kind, exc)
        security_log.warning("%s %s", kind, tech_info or "")

    def firmware_roots(self) -> list[Path]:
        configured = [Path(self.cfg.firmware_signing_root)] if self.cfg.firmware_signing_root else []
        return configured + self.certs.paths("ManufacturerRootCertificate")

    # ---- certificates -------------------------------------------------------------------
    def install_certificate(self, kind: str, pem: str) -> str:
        try:
            self.certs.install(kind, pem, self.rt.clock.now())
        except CertificateError as exc:
            log.error("InstallCertificate %s refused: %s", kind, exc)
            return "Rejected"
        except OSError as exc:
            log.error("InstallCertificate %s failed: %s", kind, exc)
            return "Failed"
        if kind == "CSMSRootCertificate":
            self._refresh_quietly()
        return "Accepted"

    def delete_certificate(self, wanted: HashData) -> str:
        try:
            found = self.certs.delete(wanted)
        except (OSError, KeyError) as exc:
            log.error("DeleteCertificate failed: %s", exc)
            return "Failed"
        if found:
            self._refresh_quietly()
        return "Accepted" if found else "NotFound"

    def make_csr(self) -> str:
        up = self.rt.config.uplink
        settings = self.rt.settings
        org = settings.get("CpoName") if settings is not None and hasattr(settings, "get") else None
        return self.certs.make_csr(up.station_id, str(org or up.vendor))

    async def certificate_signed(self, chain_pem: str) -> str:
        """CertificateSigned: Accepted (active from the next connection) or Rejected."""
        up = self.rt.config.uplink
        trusted = verify.load_roots([p for p in (up.ca_bundle,) if p] + self.certs.paths("CSMSRootCertificate"))
        try:
            self.certs.accept_signed(chain_pem, self.rt.clock.now(), trusted)
            self.refresh_tls()
        except (CertificateError, ValueError, OSError) as exc:
            log.error("CertificateSigned refused: %s", exc)
            await self.security_event("InvalidChargePointCertificate", str(exc)[:255])
            return "Rejected"
        return "Accepted"

    async def reconnect(self, reason: str) -> None:
        """Close the connection so the next one uses new credentials; the outbox waits
        in the store and goes out on the new connection."""
        conn = self._connection()
        link = getattr(conn, "link", None)
        if link is not None:
            log.warning("reconnecting to the CSMS: %s", reason)
            await link.ws.close(1000, reason[:100])

    def refresh_tls(self) -> bool:
        """Give the uplink the active client certificate and the installed CSMS roots
        (from its next connection on). False when the uplink uses no TLS."""
        from agent.uplink.security import client_tls_context

        conn = self._connection()
        if conn is None or conn.options.credentials.tls is None:
            return False
        up = self.rt.config.uplink
        creds = conn.options.credentials
        cert = key = None
        if creds.profile == 3:
            cert, key = self.certs.active_client() or (up.client_cert, up.client_key)
        tls = client_tls_context(self.certs.csms_bundle(up.ca_bundle or None), cert or None, key or None)
        conn.options = dataclasses.replace(conn.options, credentials=dataclasses.replace(creds, tls=tls))
        return True

    def _refresh_quietly(self) -> None:
        try:
            self.refresh_tls()
        except Exception as exc:
            log.error("TLS settings not updated: %s", exc)

    # ---- status delivery -------------------------------------------------------------------
    async def _firmware_status(self, status: str) -> None:
        self.rt.firmware_status = "Idle" if status in _FINAL else coarse(status)
        self._pending["firmware"] = (status, self.firmware.job)
        await self._deliver("firmware")

    async def _upload_status(self, status: str) -> None:
        self.rt.diagnostics_status = "Uploading" if status == "Uploading" else "Idle"
        self._pending["upload"] = (status, self.logs.current)
        await self._deliver("upload")

    async def _deliver(self, kind: str) -> None:
        reporter, item = self.reporter, self._pending.get(kind)
        if reporter is None or item is None:
            return
        try:
            if kind == "firmware":
                await reporter.firmware_status(*item)
            else:
                await reporter.upload_status(*item)
        except Exception as exc:
            log.warning("%s status %s not sent now (%s): sent after the next boot", kind, item[0], exc)
            return
        if self._pending.get(kind) is item:
            del self._pending[kind]

    # ---- sessions ------------------------------------------------------------------------------
    def _busy(self) -> bool:
        sessions = self.rt.sessions
        return bool(sessions is not None and hasattr(sessions, "busy") and sessions.busy())

    async def _wait_idle(self) -> None:
        while self._busy():
            self._changed.clear()
            await self._changed.wait()

    async def _stop_sessions(self) -> None:
        from agent.sessions.events import StopReason
        await self.rt.sessions.stop_all(StopReason.REBOOT)

    async def _drain_outbox(self, limit: float = 10.0) -> None:
        """Before a restart, let queued messages (the StopTransaction of the session the
        update waited for) reach the CSMS; bounded, since they are durable anyway."""
        store, sessions = self.rt.store, self.rt.sessions
        try:
            async with asyncio.timeout(limit):
                while await store.outbox_len() and getattr(sessions, "link_online", False):
                    await self.rt.clock.sleep(0.2)
        except TimeoutError:
            log.warning("restarting with %d message(s) still queued: they go out after the restart",
                        await store.outbox_len())

    async def _pump(self, queue: asyncio.Queue[Any]) -> None:
        from agent.sessions.events import SecurityEvent
        while True:
            ev = await queue.get()
            if isinstance(ev, SecurityEvent):
                security_log.warning("%s %s", ev.type, ev.tech_info or "")
            self._changed.set()

    def _open_security_log(self) -> None:
        try:
            self.log_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(self.log_dir / "security.log", maxBytes=256_000,
                                                           backupCount=3, encoding="utf-8")
        except OSError as exc:
            log.warning("no security log file: %s", exc)
            return
        handler.addFilter(RedactFilter())
        handler.setFormatter(UTCFormatter("%(asctime)s %(message)s"))
        handler.setLevel(logging.INFO)
        security_log.addHandler(handler)
        if security_log.level == logging.NOTSET or security_log.level > logging.INFO:
            security_log.setLevel(logging.INFO)
        self._log_handler = handler

    def _connection(self) -> Any:
        return getattr(self.rt.uplink, "connection", None)

    def _recent(self) -> list[str]:
        adapters = getattr(self.rt.uplink, "adapters", {}) or {}
        return [line for a in adapters.values() for line in getattr(a, "recent", [])]

    def status_view(self) -> dict[str, Any]:
        """The control API's ``maintenance`` section."""
        return {"release": self.releases.current(), "releases": self.releases.installed(),
                "firmware": self.firmware.status, "phase": (self.firmware.state or {}).get("phase"),
                "upload": self.logs.status, "client_certificate": (self.certs.active_client() or (None,))[0]}


@contextlib.asynccontextmanager
async def open_maintenance(rt: Any) -> AsyncIterator[MaintenanceService | None]:
    if rt.store is None:
        log.warning("remote maintenance needs the store, which is not running")
        yield None
        return
    service = MaintenanceService(rt)
    try:
        await service.start()
        if rt.control is not None:
            rt.control.add_status_section("maintenance", service.status_view)
        yield service
    finally:
        await service.close()
