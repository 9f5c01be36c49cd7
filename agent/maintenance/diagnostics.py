"""Logs for the operator: one tar.gz per request, uploaded where the CSMS says.

What goes in (``<name>/`` inside the archive):

    about.json         station, evsite version, kind, time window, when it was made
    logs/evsite.log*   the agent's rotating file logs, lines inside [start, stop]
    security/          the security event log (security.log*), same window
    config.json        the site config as loaded, secrets masked (diagnostics only)
    store.json         store statistics: schema, sizes, row counts (diagnostics only)
    ocpp-recent.txt    the last OCPP messages the adapter exchanged (diagnostics only)

Every text member passes through ``agent.logsetup.redact`` as it is written, and
config fields marked secret are masked before that: the archive leaves the box, so it
is held to the same rule as the logs (design invariant 5), even for lines written before
a secret was registered. Key files are never read.

Upload: http(s) only, ``PUT`` of the archive (or ``POST`` as multipart field ``file``,
per config); a location ending in ``/`` gets the archive's file name appended. Retries
and their interval come from the request. Statuses go out through ``on_status``:
Uploading, then Uploaded or UploadFailed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import re
import tarfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp

from agent import __version__
from agent.logsetup import MASK, redact
from agent.maintenance.download import DownloadError, check_url, safe_url
from agent.timefmt import utc_text

log = logging.getLogger("evsite.maintenance.diagnostics")

KINDS = ("diagnostics", "security")
_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.\d+)?Z")


@dataclass
class LogRequest:
    kind: str                       # "diagnostics" (GetDiagnostics, DiagnosticsLog) | "security"
    location: str
    request_id: int | None = None
    start: datetime | None = None
    stop: datetime | None = None
    retries: int = 0
    retry_interval: float = 0.0
    #: the name the CSMS was told in the answer (set by ``LogUploader.check``): the
    #: archive is built later, maybe in another second, and must carry the same name
    file_name: str | None = None


@dataclass
class Sources:
    """Where the archive's contents come from (the running agent's parts)."""

    log_dir: Path
    station_id: str
    config: Any = None
    store: Any = None
    recent: Callable[[], list[str]] = lambda: []


def archive_name(station_id: str, kind: str, now: datetime) -> str:
    station = re.sub(r"[^A-Za-z0-9._-]", "_", station_id)[:64] or "station"
    return f"{station}-{kind}-{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}.tar.gz"


def in_window(lines: list[str], start: datetime | None, stop: datetime | None) -> list[str]:
    """The log lines whose record time is inside [start, stop]; a line without a
    timestamp (a traceback) goes with the record above it."""
    if start is None and stop is None:
        return lines
    out, keep = [], start is None
    for line in lines:
        m = _STAMP.match(line)
        if m:
            at = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
            keep = (start is None or at >= start.replace(microsecond=0)) and (stop is None or at <= stop)
        if keep:
            out.append(line)
    return out


def redacted_config(config: Any) -> dict[str, Any]:
    """``config`` as plain data with fields marked secret masked."""

    def walk(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            out = {}
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                out[f.name] = MASK if f.metadata.get("secret") and value else walk(value)
            return out
        if isinstance(obj, (list, tuple)):
            return [walk(v) for v in obj]
        return obj

    return walk(config) if config is not None else {}


def _log_files(log_dir: Path, stem: str) -> list[Path]:
    files = [p for p in log_dir.glob(f"{stem}*") if p.is_file() and re.fullmatch(rf"{re.escape(stem)}(\.\d+)?", p.name)]
    return sorted(files, key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)


async def build_archive(dest_dir: Path, req: LogRequest, sources: Sources, now: datetime) -> Path:
    """Write the archive for ``req`` into ``dest_dir``; returns its path."""
    members: dict[str, str] = {}
    about = {"station_id": sources.station_id, "evsite_version": __version__, "kind": req.kind,
             "start": utc_text(req.start) if req.start else None, "stop": utc_text(req.stop) if req.stop else None,
             "created": utc_text(now)}
    members["about.json"] = json.dumps(about, indent=1)
    stems = [("security.log", "security")] if req.kind == "security" else [("evsite.log", "logs"), ("security.log", "security")]
    for stem, folder in stems:
        for path in _log_files(sources.log_dir, stem):
            try:
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError as exc:
                members[f"{folder}/{path.name}.unreadable"] = f"{exc}\n"
                continue
            members[f"{folder}/{path.name}"] = "\n".join(in_window(lines, req.start, req.stop)) + "\n"
    if req.kind == "diagnostics":
        members["config.json"] = json.dumps(redacted_config(sources.config), indent=1, default=str)
        if sources.store is not None:
            try:
                members["store.json"] = json.dumps(await sources.store.stats(), indent=1, default=str)
            except Exception as exc:
                members["store.json"] = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
        members["ocpp-recent.txt"] = "\n".join(sources.recent()) + "\n"
    name = req.file_name or archive_name(sources.station_id, req.kind, now)
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / name
    await asyncio.to_thread(_write_tar, path, name.removesuffix(".tar.gz"), members)
    return path


def _write_tar(path: Path, top: str, members: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, text in members.items():
            data = redact(text).encode("utf-8")
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(path)


async def upload(path: Path, url: str, *, method: str = "PUT", ssl_context: Any = None, retries: int = 0,
                 retry_interval: float = 0.0, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 timeout: float = 60.0) -> str:
    """Send ``path`` to ``url``; returns the URL it went to (without credentials)."""
    check_url(url)
    target = url + path.name if url.split("?", 1)[0].endswith("/") else url
    attempts = max(0, retries) + 1
    last: DownloadError | None = None
    for attempt in range(1, attempts + 1):
        try:
            await _send(path, target, method, ssl_context, timeout)
            return safe_url(target)
        except DownloadError as exc:
            last = exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            last = DownloadError(f"{safe_url(target)}: {type(exc).__name__}: {exc}")
        if last.final:
            break
        if attempt < attempts:
            log.warning("upload to %s failed (attempt %d of %d): %s", safe_url(target), attempt, attempts, last)
            await sleep(max(0.0, retry_interval))
    assert last is not None
    raise last


async def _send(path: Path, url: str, method: str, ssl_context: Any, timeout: float) -> None:
    client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout, trust_env=False) as session:
        with open(path, "rb") as f:
            if method == "POST":
                form = aiohttp.FormData()
                form.add_field("file", f, filename=path.name, content_type="application/gzip")
                request = session.post(url, data=form, ssl=ssl_context if ssl_context is not None else True)
            else:
                request = session.put(url, data=f, ssl=ssl_context if ssl_context is not None else True,
                                      headers={"Content-Type": "application/gzip"})
            async with request as resp:
                if resp.status >= 400:
                    final = 400 <= resp.status < 500 and resp.status not in (408, 429)
                    raise DownloadError(f"{safe_url(url)}: HTTP {resp.status} {resp.reason or ''}".rstrip(), final=final)


class LogUploader:
    """One upload at a time; a new request cancels the one in progress."""

    def __init__(self, *, sources: Sources, clock: Any, work_dir: Path, on_status: Callable[[str], Awaitable[None]],
                 method: str = "PUT", ssl_context: Any = None, timeout: float = 60.0) -> None:
        self.sources, self.clock, self.work_dir = sources, clock, Path(work_dir)
        self.on_status, self.method, self.ssl_context, self.timeout = on_status, method, ssl_context, timeout
        self.status = "Idle"
        self.current: LogRequest | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def check(self, req: LogRequest) -> str:
        """The file name that will be uploaded; DownloadError (final) for a location we
        cannot send to, ValueError for a bad request."""
        if req.kind not in KINDS:
            raise ValueError(f"log kind {req.kind!r} is not one of {', '.join(KINDS)}")
        if req.start and req.stop and req.start > req.stop:
            raise ValueError(f"startTime {utc_text(req.start)} is after stopTime {utc_text(req.stop)}")
        check_url(req.location, "upload location")
        req.file_name = archive_name(self.sources.station_id, req.kind, self.clock.now())
        return req.file_name

    def start(self, req: LogRequest) -> None:
        if self.running:
            assert self._task is not None
            log.warning("log upload request replaces the one in progress")
            self._task.cancel()
        self.current = req
        self._task = asyncio.create_task(self._run(req), name="log upload")

    async def _run(self, req: LogRequest) -> None:
        await self._report("Uploading")
        path: Path | None = None
        try:
            path = await build_archive(self.work_dir, req, self.sources, self.clock.now())
            where = await upload(path, req.location, method=self.method, ssl_context=self.ssl_context,
                                 retries=req.retries, retry_interval=req.retry_interval, sleep=self.clock.sleep,
                                 timeout=self.timeout)
        except (DownloadError, OSError) as exc:
            log.error("%s log upload failed: %s", req.kind, exc)
            await self._report("UploadFailed")
        else:
            log.info("%s log uploaded to %s (%d bytes)", req.kind, where, path.stat().st_size)
            await self._report("Uploaded")
        finally:
            if path is not None:
                path.unlink(missing_ok=True)
            self.status = "Idle"

    async def _report(self, status: str) -> None:
        self.status = status
        try:
            await self.on_status(status)
        except Exception:
            log.exception("upload status %s not reported", status)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
