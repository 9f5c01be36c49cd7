"""The file name a GetLog / GetDiagnostics answer names is the file that is uploaded,
even when the archive is built in a later second than the answer (found by the 2.0.1
GetLog test: the name carries the time in seconds)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from agent.clock import SimClock
from agent.maintenance.diagnostics import LogRequest, LogUploader, Sources
from tests.maint_kit import FileServer


async def test_the_uploaded_archive_has_the_name_the_answer_gave(tmp_path):
    clock = SimClock(datetime(2026, 3, 1, 12, 0, 0, 900_000, tzinfo=timezone.utc))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "evsite.log").write_text("2026-03-01T11:59:00.000Z WARNING a line\n")
    done = asyncio.Event()

    async def on_status(status: str) -> None:
        if status in ("Uploaded", "UploadFailed"):
            done.set()

    async with FileServer(tmp_path / "www") as srv:
        uploader = LogUploader(sources=Sources(tmp_path / "logs", "ST-1"), clock=clock, work_dir=tmp_path / "work",
                               on_status=on_status)
        req = LogRequest("security", f"http://127.0.0.1:{srv.port}/up/", 7)
        promised = uploader.check(req)
        clock.jump_wall(timedelta(seconds=2))          # the archive is made in another second
        uploader.start(req)
        await asyncio.wait_for(done.wait(), 10)
        await uploader.close()
    assert uploader.status == "Idle" and list(srv.uploads) == [promised]
    assert promised == "ST-1-security-20260301T120000Z.tar.gz"
