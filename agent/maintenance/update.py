"""Updating evsite itself, one request at a time, so that a bad update never bricks a site.

The steps and the status reported at each (through ``on_status(status)``; the OCPP
adapters map these words to their own messages):

    DownloadScheduled   retrieveDate is in the future: waiting for it
    Downloading         download.py: http(s), resumable, retries, size cap, SHA-256
    Downloaded | DownloadFailed
    SignatureVerified | InvalidSignature    signed requests only (verify.py)
    InstallScheduled    installDateTime is in the future
    InstallRescheduled  a charging session runs: waiting until the site is idle
                        (or stopping the sessions, if the config says so)
    Installing          release.py: unpack safely, a new release dir with its own venv
    InstallationFailed  anything refused on the way; the running release is untouched
    InstallRebooting    the ``current`` symlink now points at the new release: restart
    ... the restart (exit code 75, systemd starts ``current``) ...
    Installed           the new release booted and connected to the CSMS in time
    InstallationFailed  it did not: the previous release is current again and says so

Why it survives restarts: the request and how far it got are kept in the store
(``kv["maintenance.firmware"]``) at every step, so a restart in the middle resumes the
download (Range) and a restart into the new release knows it is on trial. The trial is
also written next to the releases for the boot guard (guard.py), because a release
that crashes at start cannot roll itself back. The new release confirms itself when the
uplink reports it booted (``online()``); if its confirm window runs out first it
switches ``current`` back and restarts, and the previous release, finding the request
still on trial with another version running, tells the CSMS InstallationFailed.

Nothing here knows an OCPP version: statuses are plain words, time comes from the
injected clock, and restarts go through ``request_restart``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.maintenance import guard, verify
from agent.maintenance.download import DownloadError, check_url, download, file_name, safe_url
from agent.maintenance.job import IDLE, RequestRefused, UpdateJob, UpdatePolicy, coarse
from agent.maintenance.release import Releases, ReleaseError, unpack
from agent.timefmt import parse_utc, utc_text

log = logging.getLogger("evsite.maintenance.update")
__all__ = ["FirmwareUpdater", "RequestRefused", "UpdateJob", "UpdatePolicy", "coarse", "IDLE", "KV_KEY"]

KV_KEY = "maintenance.firmware"
ACTIVE_PHASES = ("scheduled", "downloading", "downloaded", "installing")


class FirmwareUpdater:
    """See the module docstring. ``busy()`` says a charging session runs;
    ``wait_idle()`` returns when none does; ``stop_sessions()`` ends them."""

    def __init__(self, *, store: Any, clock: Any, releases: Releases, work_dir: Path, policy: UpdatePolicy,
                 running_version: str, on_status: Callable[[str], Awaitable[None]],
                 security_event: Callable[[str, str], Awaitable[None]], request_restart: Callable[[str], None],
                 busy: Callable[[], bool] = lambda: False, wait_idle: Callable[[], Awaitable[None]] | None = None,
                 stop_sessions: Callable[[], Awaitable[Any]] | None = None,
                 before_restart: Callable[[], Awaitable[None]] | None = None) -> None:
        self.store, self.clock, self.releases, self.policy = store, clock, releases, policy
        self.work_dir = Path(work_dir)
        self.running_version = running_version
        self.on_status, self.security_event, self.request_restart = on_status, security_event, request_restart
        self.busy, self.wait_idle, self.stop_sessions = busy, wait_idle, stop_sessions
        self.before_restart = before_restart
        self.status = IDLE
        self.job: UpdateJob | None = None
        self.state: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._window: asyncio.Task[None] | None = None
        self.confirmed = asyncio.Event()

    # ---- requests ---------------------------------------------------------------------
    def check(self, job: UpdateJob) -> str:
        """The answer to a signed request: Accepted, AcceptedCanceled (a running job is
        replaced), or RequestRefused. Call ``start(job)`` after the answer went out."""
        phase = (self.state or {}).get("phase")
        if phase in ("installing", "trial"):
            raise RequestRefused("Rejected", f"release {(self.state or {}).get('version')} is being installed")
        why = self.releases.usable()
        if why:
            raise RequestRefused("Rejected", f"software updates are not possible here: {why}")
        try:
            check_url(job.location)
        except DownloadError as exc:
            raise RequestRefused("Rejected", str(exc)) from None
        if job.signed:
            try:
                self._check_certificate(job)
            except verify.VerifyError as exc:
                raise RequestRefused("InvalidCertificate", str(exc), exc.security_event) from None
        return "AcceptedCanceled" if self.running else "Accepted"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, job: UpdateJob) -> None:
        """Run ``job`` (replacing one not yet installing)."""
        if (self.state or {}).get("phase") in ("installing", "trial"):
            log.error("update to %s refused: release %s is being installed", safe_url(job.location), self.state)
            return
        if self._task is not None and not self._task.done() and self.state is not None:
            log.warning("update request replaces the one in progress")
            self._task.cancel()   # (a job whose state is cleared only reports its end: let it)
        self.job = job
        self.state = None
        self._task = asyncio.create_task(self._run(job, resumed=False), name="firmware update")

    # ---- the job ----------------------------------------------------------------------
    async def _run(self, job: UpdateJob, *, resumed: bool) -> None:
        try:
            await self._steps(job, resumed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave the request hanging
            log.exception("firmware update failed unexpectedly")
            await self._fail("InstallationFailed", f"unexpected error: {type(exc).__name__}: {exc}")

    async def _steps(self, job: UpdateJob, resumed: bool) -> None:
        work = self.work_dir / hashlib.sha256(job.location.encode()).hexdigest()[:16]
        if not resumed:
            self._clean_work(keep=work)
        await self._persist(job, "scheduled")
        why = self.releases.usable()
        if why:
            return await self._fail("InstallationFailed", f"software updates are not possible here: {why}")
        if not job.signed and self.policy.signed_only:
            return await self._fail("InstallationFailed", "unsigned update refused: maintenance.signed_only is set")
        if job.signed:
            try:
                self._check_certificate(job)
            except verify.VerifyError as exc:
                await self.security_event(exc.security_event, str(exc)[:255])
                return await self._fail("InvalidSignature", str(exc))
        if await self._wait_until(job.retrieve_at, "DownloadScheduled"):
            log.info("update: retrieveDate %s reached", utc_text(job.retrieve_at))
        await self._persist(job, "downloading")
        await self._report("Downloading")
        try:
            got = await download(job.location.partition("#")[0], work / file_name(job.location, "release"),
                                 max_bytes=self.policy.max_bytes, retries=job.retries, retry_interval=job.retry_interval,
                                 sleep=self.clock.sleep, ssl_context=self.policy.ssl_context,
                                 timeout=self.policy.download_timeout, expected_sha256=job.expected_sha256)
        except DownloadError as exc:
            return await self._fail("DownloadFailed", str(exc))
        await self._report("Downloaded")
        if job.signed:
            try:
                cert = self._check_certificate(job)
                verify.verify_signature(cert, job.signature or "", bytes.fromhex(got.sha256))
            except verify.VerifyError as exc:
                await self.security_event(exc.security_event, str(exc)[:255])
                return await self._fail("InvalidSignature", str(exc))
            await self._report("SignatureVerified")
        try:
            wheels = await asyncio.to_thread(unpack, got.path, work / "wheels", max_bytes=self.policy.max_bytes * 4)
        except ReleaseError as exc:
            return await self._fail("InstallationFailed", str(exc))
        if wheels.version == self.running_version:
            return await self._fail("InstallationFailed", f"release {wheels.version} is the one running")
        await self._persist(job, "downloaded", version=wheels.version)
        if job.install_at is not None:
            await self._wait_until(job.install_at, "InstallScheduled")
        if self.busy():
            await self._report("InstallRescheduled")
            if self.policy.during_session == "stop" and self.stop_sessions is not None:
                log.warning("update to %s: stopping the running sessions (maintenance.install_during_session = stop)",
                            wheels.version)
                await self.stop_sessions()
            elif self.wait_idle is not None:
                log.info("update to %s waits until no charging session runs", wheels.version)
            if self.wait_idle is not None:
                await self.wait_idle()
        await self._persist(job, "installing", version=wheels.version)
        await self._report("Installing")
        try:
            await self.releases.install(wheels, archive_sha256=got.sha256)
        except ReleaseError as exc:
            return await self._fail("InstallationFailed", str(exc))
        await self._switch(job, wheels.version)

    async def _switch(self, job: UpdateJob, version: str) -> None:
        previous = self.releases.current()
        if previous is None:
            return await self._fail("InstallationFailed", f"{self.releases.root}/current is not a release: cannot switch")
        deadline = self.clock.now() + timedelta(seconds=self.policy.confirm_window)
        try:
            await self._persist(job, "trial", version=version, previous=previous, deadline=utc_text(deadline),
                                window=self.policy.confirm_window)
            _install_guard_copy(self.releases.root)
            guard.begin_trial(self.releases.root, version, previous, deadline.timestamp(), self.policy.max_starts)
            self.releases.switch(version)
        except Exception as exc:
            guard.end_trial(self.releases.root)
            if self.releases.current() != previous:
                guard.switch_current(self.releases.root, previous)
            return await self._fail("InstallationFailed", f"switching to release {version} failed: {exc}")
        log.warning("update: release %s installed and current; restarting into it (confirm within %g s)",
                    version, self.policy.confirm_window)
        await self._report("InstallRebooting")
        if self.before_restart is not None:
            await self.before_restart()
        self.request_restart(f"firmware update to {version}")

    # ---- after a restart ----------------------------------------------------------------
    async def resume(self) -> None:
        """At start: finish, confirm or report what a previous run began."""
        state = await self.store.kv_get(KV_KEY)
        note = guard.read_json(self.releases.root / guard.ROLLBACK)
        if note is not None:
            (self.releases.root / guard.ROLLBACK).unlink(missing_ok=True)
        if not state:
            return
        self.state = state
        job = UpdateJob.from_json(state["job"])
        self.job = job
        phase, version = state.get("phase"), state.get("version")
        if phase == "trial" and version == self.running_version:
            remaining = (parse_utc(state["deadline"]) - self.clock.now()).total_seconds()
            log.warning("release %s is on trial: it must connect to the CSMS within %.0f s", version, max(0, remaining))
            self._window = asyncio.create_task(self._confirm_window(max(0.0, remaining)), name="update confirm window")
        elif phase == "trial":
            reason = state.get("rollback_reason") or (note or {}).get("reason") or \
                f"release {version} is not running after the restart (running {self.running_version})"
            if guard.current_version(self.releases.root) != version:
                guard.end_trial(self.releases.root)
            if version and version != self.releases.current():
                self.releases.remove(version)
            await self._fail("InstallationFailed", f"update to {version} rolled back: {reason}")
        elif phase in ACTIVE_PHASES:
            log.warning("resuming the firmware update interrupted by a restart (it was %s)", phase)
            self._task = asyncio.create_task(self._run(job, resumed=True), name="firmware update")
        else:
            await self._clear()

    async def online(self) -> None:
        """The uplink booted and is connected: a release on trial has made it."""
        state = self.state or {}
        if state.get("phase") != "trial" or state.get("version") != self.running_version or self.confirmed.is_set():
            return
        self.confirmed.set()
        if self._window is not None:
            self._window.cancel()
        version, previous = state["version"], state.get("previous")
        guard.end_trial(self.releases.root)
        log.warning("release %s confirmed: booted and connected to the CSMS", version)
        await self.security_event("FirmwareUpdated", f"evsite {previous} -> {version}")
        await self._report("Installed")
        self.status = IDLE
        try:
            self.releases.prune({previous} if previous else set())
        except OSError as exc:
            log.warning("could not remove old releases: %s", exc)
        await self._clear()

    async def _confirm_window(self, seconds: float) -> None:
        await self.clock.sleep(seconds)
        if self.confirmed.is_set():
            return
        window = float((self.state or {}).get("window", self.policy.confirm_window))
        await self.rollback(f"release {self.running_version} did not connect to the CSMS within {window:g} s of the switch")

    async def rollback(self, reason: str) -> None:
        """Back to the previous release, now, and restart into it."""
        state = dict(self.state or {})
        previous = state.get("previous")
        log.error("rolling back: %s", reason)
        if not previous or not self.releases.complete(previous):
            log.error("cannot roll back: the previous release %r is not installed", previous)
            return
        state["rollback_reason"] = reason
        self.state = state
        await self.store.kv_set(KV_KEY, state)
        guard.end_trial(self.releases.root)
        self.releases.switch(previous)
        self.request_restart(f"rollback to {previous}: {reason}")

    # ---- helpers ------------------------------------------------------------------------
    def _check_certificate(self, job: UpdateJob) -> Any:
        chain = verify.load_certificates(job.signing_certificate or "", "signing certificate")
        roots = verify.load_roots(self.policy.roots())
        return verify.check_chain(chain, roots, self.clock.now())

    async def _wait_until(self, when: datetime, status: str) -> bool:
        delay = (when - self.clock.now()).total_seconds()
        if delay <= 0:
            return False
        await self._report(status)
        await self.clock.sleep(delay)
        return True

    async def _report(self, status: str) -> None:
        self.status = status
        try:
            await self.on_status(status)
        except Exception:
            log.exception("firmware status %s not reported", status)

    async def _fail(self, status: str, reason: str) -> None:
        log.error("firmware update failed (%s): %s; the running release %s is untouched", status, reason,
                  self.running_version)
        await self._clear()
        await self._report(status)
        self.status = IDLE

    async def _persist(self, job: UpdateJob, phase: str, **extra: Any) -> None:
        state = {k: v for k, v in (self.state or {}).items() if k in ("version", "previous", "deadline", "window")}
        state.update(job=job.to_json(), phase=phase, **extra)
        self.state = state
        await self.store.kv_set(KV_KEY, state)

    async def _clear(self) -> None:
        self.state = None
        try:
            await self.store.kv_delete(KV_KEY)
        except Exception as exc:
            log.warning("could not clear the update state: %s", exc)

    def _clean_work(self, keep: Path) -> None:
        if self.work_dir.is_dir():
            for p in self.work_dir.iterdir():
                if p != keep:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    async def close(self) -> None:
        tasks = [t for t in (self._task, self._window) if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _install_guard_copy(root: Path) -> None:
    """Refresh ``<root>/boot-guard.py`` from the running (known good) release."""
    target = root / guard.GUARD_COPY
    tmp = target.with_name(target.name + ".new")
    shutil.copyfile(guard.__file__, tmp)
    tmp.chmod(0o644)
    tmp.replace(target)
