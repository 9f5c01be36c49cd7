"""The log archive: what is in it, what is not (secrets), and its upload."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from datetime import datetime, timezone

import pytest

from agent.clock import SystemClock
from agent.config.load import load_config_text
from agent.logsetup import register_secret
from agent.maintenance.diagnostics import LogRequest, LogUploader, Sources, build_archive, in_window, upload
from agent.maintenance.download import DownloadError, UnsupportedScheme
from agent.store import Store
from tests.maint_kit import FileServer

SECRET = "hunter2-csms-password"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----"


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def members(data: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode() for m in tar if m.isfile()}


@pytest.fixture
async def sources(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "evsite.log.1").write_text(
        "2026-01-01T09:00:00.000Z INFO evsite.site: too early\n"
        "2026-01-01T10:00:00.000Z INFO evsite.uplink: connected\n")
    (logs / "evsite.log").write_text(
        "2026-01-01T10:30:00.000Z ERROR evsite.x: boom\nTraceback (most recent call last):\n  line 1\n"
        f"2026-01-01T10:40:00.000Z DEBUG websockets: > Authorization: Basic aGk6{SECRET}\n"
        f"2026-01-01T10:41:00.000Z DEBUG evsite.y: a leaked {SECRET} and {PEM_KEY}\n"
        "2026-01-01T12:00:00.000Z INFO evsite.site: too late\n")
    (logs / "security.log").write_text("2026-01-01T10:05:00.000Z FirmwareUpdated evsite 1 -> 2\n"
                                       "2026-01-02T10:05:00.000Z SettingSystemTime later\n")
    (logs / "other.txt").write_text("not a log of ours\n")
    pw = tmp_path / "pw"
    pw.write_text(SECRET)
    config = load_config_text(f"""
        [site]
        state_dir = "{tmp_path}/state"
        [uplink]
        url = "ws://127.0.0.1:1"
        station_id = "ST-1"
        security_profile = 1
        password_file = "{pw}"
        [limits]
        fuse_amps = 32
    """, "site.toml", base_dir=tmp_path)
    register_secret(SECRET)
    store = await Store.open(tmp_path / "s.db", SystemClock())
    yield Sources(logs, "ST-1", config, store, lambda: ["2026-01-01T10:00:00.000Z -> BootNotification"])
    await store.close()


async def test_diagnostics_archive_holds_the_window_and_no_secret(tmp_path, sources):
    req = LogRequest("diagnostics", "http://x/", None, t("2026-01-01T10:00:00"), t("2026-01-01T11:00:00"))
    path = await build_archive(tmp_path / "out", req, sources, t("2026-01-01T11:00:00"))
    assert path.name == "ST-1-diagnostics-20260101T110000Z.tar.gz"
    raw = path.read_bytes()
    got = members(raw)
    assert sorted(got) == ["about.json", "config.json", "logs/evsite.log", "logs/evsite.log.1", "ocpp-recent.txt",
                           "security/security.log", "store.json"]
    assert "connected" in got["logs/evsite.log.1"] and "too early" not in got["logs/evsite.log.1"]
    assert "boom" in got["logs/evsite.log"] and "Traceback" in got["logs/evsite.log"] and "too late" not in got["logs/evsite.log"]
    assert "FirmwareUpdated" in got["security/security.log"] and "SettingSystemTime" not in got["security/security.log"]
    assert json.loads(got["config.json"])["uplink"]["station_id"] == "ST-1"
    assert json.loads(got["store.json"])["schema_version"] >= 1
    assert "BootNotification" in got["ocpp-recent.txt"]
    text = "".join(got.values())
    assert SECRET not in text and "aGk6" not in text and "MIGHAgEA" not in text
    assert SECRET.encode() not in raw


async def test_security_log_archive_has_only_security_events(tmp_path, sources):
    req = LogRequest("security", "http://x/", 5)
    got = members((await build_archive(tmp_path, req, sources, t("2026-01-03T00:00:00"))).read_bytes())
    assert sorted(got) == ["about.json", "security/security.log"]
    assert "SettingSystemTime" in got["security/security.log"]


def test_lines_without_a_timestamp_go_with_their_record():
    lines = ["2026-01-01T10:00:00.000Z a", "  detail of a", "2026-01-01T13:00:00.000Z b", "  detail of b"]
    assert in_window(lines, t("2026-01-01T09:00:00"), t("2026-01-01T11:00:00")) == lines[:2]
    assert in_window(lines, None, None) == lines


@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_upload_by_put_or_post_appends_the_name_to_a_directory(tmp_path, method):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"\x1f\x8b archive bytes")
    async with FileServer(tmp_path) as srv:
        where = await upload(archive, f"http://127.0.0.1:{srv.port}/up/site-7/", method=method)
        assert where.endswith("/up/site-7/a.tar.gz")
        assert srv.uploads["site-7/a.tar.gz"] == archive.read_bytes()
        assert srv.requests[-1][0] == method


async def test_upload_retries_then_fails_clearly(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"x")

    async def no_sleep(_):
        return None

    async with FileServer(tmp_path) as srv:
        srv.upload_status = 500
        with pytest.raises(DownloadError, match="HTTP 500"):
            await upload(archive, f"http://127.0.0.1:{srv.port}/up/x", retries=2, sleep=no_sleep)
        assert len([r for r in srv.requests if r[0] == "PUT"]) == 3
    with pytest.raises(UnsupportedScheme, match="ftp"):
        await upload(archive, "ftp://host/x")


async def test_the_uploader_reports_each_status(tmp_path, sources):
    seen: list[str] = []
    done = asyncio.Event()

    async def on_status(status: str) -> None:
        seen.append(status)
        if status != "Uploading":
            done.set()

    async with FileServer(tmp_path) as srv:
        up = LogUploader(sources=sources, clock=SystemClock(), work_dir=tmp_path / "work", on_status=on_status)
        req = LogRequest("diagnostics", f"http://127.0.0.1:{srv.port}/up/")
        name = up.check(req)
        up.start(req)
        await asyncio.wait_for(done.wait(), 10)
        assert seen == ["Uploading", "Uploaded"]
        assert list(srv.uploads) == [name]
        assert SECRET.encode() not in srv.uploads[name]
        with pytest.raises(ValueError, match="after stopTime"):
            up.check(LogRequest("diagnostics", "http://h/", None, t("2026-01-02T00:00:00"), t("2026-01-01T00:00:00")))
        await up.close()
    assert not list((tmp_path / "work").iterdir())
