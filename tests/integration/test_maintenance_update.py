"""The update state machine with real parts: releases built here, served over HTTP(S) on
loopback, installed with pip into a release tree, switched, confirmed or rolled back.

A restart is simulated the way it happens on a box: a new FirmwareUpdater (a new
process would build a new one) over the same store file and tree, with the running
version the switch selected. The boot guard runs as systemd would run it: before that.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.clock import SystemClock
from agent.maintenance import guard
from agent.maintenance.release import Releases
from agent.maintenance.update import KV_KEY, FirmwareUpdater, RequestRefused, UpdateJob, UpdatePolicy
from agent.store import Store
from tests.maint_kit import FileServer, SigningPki, build_evsite_wheel, fake_tree, make_cert, new_key, pem, server_tls, tar_of, tiny_wheel

pytestmark = pytest.mark.slow
NOW = datetime.now(timezone.utc)
OLD = "0.1.0"


class Box:
    """One run of the agent as far as updates go: an updater and what it reported."""

    def __init__(self, store, root: Path, running: str, pki: SigningPki, ssl_ctx, **policy) -> None:
        self.statuses: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.restarts: list[str] = []
        self.changed = asyncio.Event()
        self.busy = False
        self.idle = asyncio.Event()
        self.updater = FirmwareUpdater(
            store=store, clock=SystemClock(), releases=Releases(root, keep=3), work_dir=root.parent / "work",
            policy=UpdatePolicy(ssl_context=ssl_ctx, roots=lambda: [pki.root_path], **policy),
            running_version=running, on_status=self._status, security_event=self._event,
            request_restart=self._restart, busy=lambda: self.busy, wait_idle=self.idle.wait)

    async def _status(self, s: str) -> None:
        self.statuses.append(s)
        self.changed.set()

    async def _event(self, kind: str, info: str) -> None:
        self.events.append((kind, info))

    def _restart(self, reason: str) -> None:
        self.restarts.append(reason)
        self.changed.set()

    async def until(self, predicate, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def settled(self) -> None:
        """The job ended: a final status or a restart request."""
        final = ("DownloadFailed", "InvalidSignature", "InstallationFailed", "Installed")
        await self.until(lambda: self.restarts or (self.statuses and self.statuses[-1] in final))


@asynccontextmanager
async def world(tmp_path: Path):
    """A release tree running OLD, a signing PKI, an HTTPS server and the store."""
    root = fake_tree(tmp_path / "opt", OLD, current=OLD)
    www = tmp_path / "www"
    www.mkdir()
    tls, ca = server_tls(tmp_path)
    store = await Store.open(tmp_path / "evsite.db", SystemClock())
    try:
        async with FileServer(www, tls=tls) as srv:
            yield root, www, srv, SigningPki(tmp_path / "pki"), ssl.create_default_context(cafile=str(ca)), store
    finally:
        await store.close()


def signed_job(pki: SigningPki, url: str, data: bytes, **kw) -> UpdateJob:
    return UpdateJob(url, NOW - timedelta(seconds=1), 1, 0.1, 42, pki.chain_pem, pki.sign(data), **kw)


def untouched(root: Path) -> None:
    assert guard.current_version(root) == OLD
    assert sorted(os.listdir(root / "releases")) == [OLD]
    assert not (root / guard.TRIAL).exists()


async def test_good_signed_release_installs_restarts_and_confirms(tmp_path):
    async with world(tmp_path) as (root, www, srv, pki, ctx, store):
        wheel = build_evsite_wheel(tmp_path, "9.9.1")
        extra = tiny_wheel(tmp_path / "w", "evsite_extra", "1.0")
        archive = tar_of(www / "evsite-9.9.1.tar.gz", {wheel.name: wheel, extra.name: extra})
        box = Box(store, root, OLD, pki, ctx, confirm_window=120)
        job = signed_job(pki, srv.url(archive.name), archive.read_bytes())
        assert box.updater.check(job) == "Accepted"
        box.updater.start(job)
        await box.settled()
        assert box.statuses == ["Downloading", "Downloaded", "SignatureVerified", "Installing", "InstallRebooting"]
        assert box.restarts == ["firmware update to 9.9.1"]
        assert guard.current_version(root) == "9.9.1"
        venv_python = root / "releases" / "9.9.1" / "venv" / "bin" / "python"
        assert venv_python.exists() and (root / "boot-guard.py").exists()
        assert "start 1 of 3" in guard.check(root)               # systemd's ExecStartPre
        assert (await store.kv_get(KV_KEY))["phase"] == "trial"
        await box.updater.close()

        after = Box(store, root, "9.9.1", pki, ctx)               # the new release, after the restart
        await after.updater.resume()
        assert after.statuses == [] and after.updater._window is not None
        await after.updater.online()
        assert after.statuses == ["Installed"]
        assert after.events == [("FirmwareUpdated", f"evsite {OLD} -> 9.9.1")]
        assert not (root / guard.TRIAL).exists() and await store.kv_get(KV_KEY) is None
        assert sorted(os.listdir(root / "releases")) == [OLD, "9.9.1"]
        await after.updater.close()


async def test_a_release_that_never_connects_is_rolled_back_within_the_window(tmp_path):
    async with world(tmp_path) as (root, www, srv, pki, ctx, store):
        wheel = build_evsite_wheel(tmp_path, "9.9.2")
        (www / wheel.name).write_bytes(wheel.read_bytes())
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        box = Box(store, root, OLD, pki, ctx, confirm_window=1.5)
        box.updater.start(UpdateJob(srv.url(wheel.name) + f"#sha256={digest}", NOW))
        await box.settled()
        assert box.statuses == ["Downloading", "Downloaded", "Installing", "InstallRebooting"]
        await box.updater.close()

        new = Box(store, root, "9.9.2", pki, ctx)
        await new.updater.resume()
        await new.until(lambda: new.restarts, timeout=10)          # the window ran out: no online()
        assert "did not connect to the CSMS within 1.5 s" in new.restarts[0]
        assert guard.current_version(root) == OLD and not (root / guard.TRIAL).exists()
        await new.updater.close()

        back = Box(store, root, OLD, pki, ctx)                     # the previous release starts again
        await back.updater.resume()
        assert back.statuses == ["InstallationFailed"]
        untouched(root)
        assert await store.kv_get(KV_KEY) is None


async def test_a_release_that_crashes_at_start_is_rolled_back_by_the_boot_guard(tmp_path):
    async with world(tmp_path) as (root, www, srv, pki, ctx, store):
        wheel = build_evsite_wheel(tmp_path, "9.9.3")
        (www / wheel.name).write_bytes(wheel.read_bytes())
        box = Box(store, root, OLD, pki, ctx, max_starts=2)
        box.updater.start(UpdateJob(srv.url(wheel.name), NOW))
        await box.settled()
        assert box.restarts and guard.current_version(root) == "9.9.3"
        await box.updater.close()
        # systemd: guard, start (crashes), guard, start (crashes), guard -> rollback
        assert "start 1 of 2" in guard.check(root)
        assert "start 2 of 2" in guard.check(root)
        assert guard.check(root).startswith(f"rolled back to {OLD}")
        back = Box(store, root, OLD, pki, ctx)
        await back.updater.resume()
        assert back.statuses == ["InstallationFailed"]
        untouched(root)
        assert not (root / guard.ROLLBACK).exists()


async def test_an_update_waits_while_a_session_charges(tmp_path):
    async with world(tmp_path) as (root, www, srv, pki, ctx, store):
        wheel = build_evsite_wheel(tmp_path, "9.9.1")
        (www / wheel.name).write_bytes(wheel.read_bytes())
        box = Box(store, root, OLD, pki, ctx)
        box.busy = True
        box.updater.start(UpdateJob(srv.url(wheel.name), NOW))
        await box.until(lambda: "InstallRescheduled" in box.statuses)
        assert (await store.kv_get(KV_KEY))["phase"] == "downloaded"
        await asyncio.sleep(0.3)                                    # time passes; still nothing installs
        assert box.statuses[-1] == "InstallRescheduled" and not box.restarts
        untouched(root)
        box.busy = False
        box.idle.set()                                              # the session ended
        await box.settled()
        assert box.statuses[-2:] == ["Installing", "InstallRebooting"]
        assert guard.current_version(root) == "9.9.1"
        await box.updater.close()


async def test_a_restart_during_the_download_resumes_it(tmp_path):
    async with world(tmp_path) as (root, www, srv, pki, ctx, store):
        wheel = build_evsite_wheel(tmp_path, "9.9.1")
        (www / wheel.name).write_bytes(wheel.read_bytes())
        job = UpdateJob(srv.url(wheel.name), NOW + timedelta(hours=1))       # scheduled for later
        box = Box(store, root, OLD, pki, ctx)
        box.updater.start(job)
        await box.until(lambda: box.statuses == ["DownloadScheduled"])
        await box.updater.close()                                            # the agent stops
        state = await store.kv_get(KV_KEY)
        state["job"]["retrieve_at"] = (NOW - timedelta(seconds=1)).isoformat()
        await store.kv_set(KV_KEY, state)                                    # ... and its time came
        again = Box(store, root, OLD, pki, ctx)
        await again.updater.resume()
        await again.settled()
        assert again.statuses == ["Downloading", "Downloaded", "Installing", "InstallRebooting"]
        await again.updater.close()


async def test_bad_inputs_are_refused_and_the_running_release_is_untouched(tmp_path):
    async with world(tmp_path) as (root, www, srv, pki, ctx, store):
        good = build_evsite_wheel(tmp_path, "9.9.1").read_bytes()
        (www / "good.whl").write_bytes(good)
        truncated = tar_of(tmp_path / "t.tar.gz", {"evsite-9.9.1-py3-none-any.whl": good}).read_bytes()
        (www / "truncated.tar.gz").write_bytes(truncated[: len(truncated) // 2])
        evil_main = tiny_wheel(tmp_path / "e", "evsite", "6.6.6")
        tar_of(www / "evil.tar.gz", {evil_main.name: evil_main, "../../../etc/cron.d/evil.whl": b"x"})
        broken = build_evsite_wheel(tmp_path, "9.9.4", {"agent/cli.py": ("import argparse", "import argparse\nraise SystemExit(3)")})
        (www / broken.name).write_bytes(broken.read_bytes())
        expired_key = new_key()
        expired = make_cert("old signer", expired_key, ("fw intermediate", pki.inter_key), ca=False, days=-1, start_days=-9)
        stranger = SigningPki(tmp_path / "stranger")

        cases = [
            (UpdateJob("ftp://127.0.0.1/good.whl", NOW), "DownloadFailed", None),
            (UpdateJob(srv.url("missing.whl"), NOW, retries=1, retry_interval=0.05), "DownloadFailed", None),
            (UpdateJob(srv.url("good.whl") + "#sha256=" + "0" * 64, NOW), "DownloadFailed", None),
            (UpdateJob(srv.url("truncated.tar.gz"), NOW), "InstallationFailed", None),
            (UpdateJob(srv.url("evil.tar.gz"), NOW), "InstallationFailed", None),
            (UpdateJob(srv.url(broken.name), NOW), "InstallationFailed", None),
            (signed_job(pki, srv.url("good.whl"), good + b"tampered"), "InvalidSignature", "InvalidFirmwareSignature"),
            (UpdateJob(srv.url("good.whl"), NOW, signing_certificate=pem(expired, pki.inter),
                       signature=pki.sign(good, expired_key)), "InvalidSignature", "InvalidFirmwareSigningCertificate"),
            (signed_job(stranger, srv.url("good.whl"), good), "InvalidSignature", "InvalidFirmwareSigningCertificate"),
        ]
        for job, status, event in cases:
            box = Box(store, root, OLD, pki, ctx)
            box.updater.start(job)
            await box.settled()
            assert box.statuses[-1] == status, (job.location, box.statuses)
            assert [e for e, _ in box.events] == ([event] if event else []), job.location
            assert not box.restarts
            untouched(root)
            assert await store.kv_get(KV_KEY) is None
            await box.updater.close()

        small = Box(store, root, OLD, pki, ctx, max_bytes=100_000)
        small.updater.start(UpdateJob(srv.url("good.whl"), NOW))
        await small.settled()
        assert small.statuses == ["Downloading", "DownloadFailed"]
        fetched = len(srv.gets("good.whl"))
        strict = Box(store, root, OLD, pki, ctx, signed_only=True)
        strict.updater.start(UpdateJob(srv.url("good.whl"), NOW))
        await strict.settled()
        assert strict.statuses == ["InstallationFailed"] and len(srv.gets("good.whl")) == fetched   # not even fetched
        untouched(root)

        checker = Box(store, root, OLD, pki, ctx).updater
        for job, answer in ((signed_job(stranger, srv.url("good.whl"), good), "InvalidCertificate"),
                            (signed_job(pki, "ftp://x/good.whl", good), "Rejected")):
            with pytest.raises(RequestRefused) as refused:
                checker.check(job)
            assert refused.value.status == answer


async def test_without_a_release_tree_updates_are_refused_and_nothing_is_created(tmp_path):
    async with world(tmp_path) as (root, www, srv, pki, ctx, store):
        nowhere = tmp_path / "not-installed"
        box = Box(store, nowhere, OLD, pki, ctx)
        with pytest.raises(RequestRefused, match="not possible here") as refused:
            box.updater.check(UpdateJob(srv.url("x.whl"), NOW))
        assert refused.value.status == "Rejected"
        box.updater.start(UpdateJob(srv.url("x.whl"), NOW))
        await box.settled()
        assert box.statuses == ["InstallationFailed"] and srv.gets("x.whl") == []
        assert not nowhere.exists()
