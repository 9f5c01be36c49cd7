"""Fetching a file the CSMS points at: http(s), resumable, bounded, hashed.

Why each rule:

- **Schemes.** http and https only (aiohttp); anything else (ftp, file, a typo) is
  refused before any connection, with the scheme named. https verifies the server
  against the system trust store or a configured CA bundle; there is no way to switch
  verification off.
- **Resumable.** Bytes go to ``<dest>.part``. A retry (or the next start, after a
  restart in the middle of a download) asks for the rest with ``Range``; a server that
  ignores it (200 instead of 206) makes us start over, and a ``Content-Range`` that
  does not continue where we stopped does too.
- **Bounded.** A ``Content-Length`` over the cap is refused before the body is read;
  without one, the download stops at the cap. Cellular data is expensive and the SD
  card small.
- **Retries.** ``retries`` extra attempts, ``retry_interval`` apart (OCPP's fields),
  for failures that may pass (network, 5xx, 408, 429, a cut connection). A 4xx, a
  refused scheme, a file over the cap or a wrong hash are final at once.
- **Hash.** SHA-256 of the complete file, compared with the one we were given (if any),
  and returned for the signature check.

Secrets: a URL may carry ``user:password@``; the password is registered with the log
redactor and URLs are logged without it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from agent.logsetup import register_secret

log = logging.getLogger("evsite.maintenance.download")

SCHEMES = ("http", "https")
_CHUNK = 64 * 1024


class DownloadError(Exception):
    """The file could not be fetched; ``final`` when retrying cannot help."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


class UnsupportedScheme(DownloadError):
    def __init__(self, message: str) -> None:
        super().__init__(message, final=True)


class TooLarge(DownloadError):
    def __init__(self, message: str) -> None:
        super().__init__(message, final=True)


class HashMismatch(DownloadError):
    def __init__(self, message: str) -> None:
        super().__init__(message, final=True)


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str


def check_url(url: str, what: str = "location") -> str:
    """The URL's scheme if we can fetch from it; UnsupportedScheme otherwise. A password
    in it is registered as a secret."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UnsupportedScheme(f"{what} {safe_url(url)!r} is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = scheme or "(none)"
        raise UnsupportedScheme(f"{what} {safe_url(url)!r}: scheme {shown} is not supported (use http or https)")
    if not parts.hostname:
        raise UnsupportedScheme(f"{what} {safe_url(url)!r} has no host")
    if parts.password:
        register_secret(unquote(parts.password))
    return scheme


def safe_url(url: str) -> str:
    """``url`` without ``user:password@`` and without a query string (tokens live there)."""
    try:
        p = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urlunsplit((p.scheme, host, p.path, "", ""))


def file_name(url: str, default: str) -> str:
    """A safe local file name from the URL's last path segment."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".")
    return name[:120] or default


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


async def download(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    retries: int = 0,
    retry_interval: float = 0.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 60.0,
    expected_sha256: str | None = None,
) -> Downloaded:
    """Fetch ``url`` into ``dest`` (see the module docstring). ``dest`` exists only
    when the whole file arrived and matched ``expected_sha256``."""
    check_url(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempts = max(0, retries) + 1
    last: DownloadError | None = None
    for attempt in range(1, attempts + 1):
        try:
            await _fetch(url, part, max_bytes=max_bytes, ssl_context=ssl_context, timeout=timeout)
            break
        except DownloadError as exc:
            last = exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            last = DownloadError(f"{safe_url(url)}: {_describe(exc)}")
        if last.final:
            _remove(part)
            raise last
        if attempt < attempts:
            log.warning("download of %s failed (attempt %d of %d): %s; next attempt in %g s",
                        safe_url(url), attempt, attempts, last, retry_interval)
            await sleep(max(0.0, retry_interval))
    else:
        assert last is not None
        raise DownloadError(f"{last} (after {attempts} attempt(s))")
    digest = await asyncio.to_thread(sha256_of, part)
    if expected_sha256 and digest.lower() != expected_sha256.strip().lower():
        _remove(part)
        raise HashMismatch(f"{safe_url(url)}: SHA-256 is {digest}, expected {expected_sha256.strip().lower()}")
    os.replace(part, dest)
    size = dest.stat().st_size
    log.info("downloaded %s: %d bytes, sha256 %s", safe_url(url), size, digest)
    return Downloaded(dest, size, digest)


async def _fetch(url: str, part: Path, *, max_bytes: int, ssl_context: ssl.SSLContext | None, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    if have > max_bytes:
        _remove(part)
        have = 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout, trust_env=False) as session:
        async with session.get(url, headers=headers, ssl=ssl_context if ssl_context is not None else True,
                               allow_redirects=True, max_redirects=5) as resp:
            status = resp.status
            if have and status == 416:
                total = _total_from_range(resp.headers.get("Content-Range", ""))
                if total == have:
                    return  # the part file already holds the whole file
                _remove(part)
                raise DownloadError(f"{safe_url(url)}: the server refused to resume at byte {have}; starting over")
            if status >= 400:
                final = 400 <= status < 500 and status not in (408, 429)
                raise DownloadError(f"{safe_url(url)}: HTTP {status} {resp.reason or ''}".rstrip(), final=final)
            if status == 206 and have:
                start = _start_from_range(resp.headers.get("Content-Range", ""))
                if start != have:
                    _remove(part)
                    raise DownloadError(f"{safe_url(url)}: the server resumed at byte {start}, not {have}; starting over")
                mode = "ab"
                log.info("resuming download of %s at byte %d", safe_url(url), have)
            elif status == 200:
                have, mode = 0, "wb"
            else:
                raise DownloadError(f"{safe_url(url)}: unexpected HTTP {status}")
            length = resp.content_length
            if length is not None and have + length > max_bytes:
                _remove(part)
                raise TooLarge(f"{safe_url(url)}: {have + length} bytes is more than the cap of {max_bytes}")
            got = 0
            with open(part, mode) as out:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    got += len(chunk)
                    if have + got > max_bytes:
                        out.close()
                        _remove(part)
                        raise TooLarge(f"{safe_url(url)}: more than the cap of {max_bytes} bytes")
                    out.write(chunk)
            if length is not None and got < length:
                raise DownloadError(f"{safe_url(url)}: connection ended after {have + got} of {have + length} bytes")


def _start_from_range(header: str) -> int | None:
    m = re.match(r"^\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*$", header)
    return int(m.group(1)) if m else None


def _total_from_range(header: str) -> int | None:
    m = re.match(r"^\s*bytes\s+\*/(\d+)\s*$", header)
    return int(m.group(1)) if m else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate of the server not accepted: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS failure: {exc}"
    if isinstance(exc, TimeoutError):
        return "no data within the timeout"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"connection cut during the transfer ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
