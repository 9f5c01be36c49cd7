"""Downloads against a real HTTP(S) server on loopback: resume, retries, cap, hash."""

from __future__ import annotations

import hashlib
import os
import ssl

import pytest

from agent.logsetup import redact
from agent.maintenance.download import (
    DownloadError, HashMismatch, TooLarge, UnsupportedScheme, check_url, download, safe_url,
)
from tests.maint_kit import FileServer, server_tls

DATA = os.urandom(300_000)


async def no_sleep(_s: float) -> None:
    return None


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    (d / "rel.tar.gz").write_bytes(DATA)
    return d


async def test_a_download_arrives_whole_with_its_hash(files, tmp_path):
    async with FileServer(files) as srv:
        got = await download(srv.url("rel.tar.gz"), tmp_path / "dl" / "rel.tar.gz", max_bytes=10**7,
                             expected_sha256=hashlib.sha256(DATA).hexdigest())
    assert got.path.read_bytes() == DATA and got.sha256 == hashlib.sha256(DATA).hexdigest()
    assert not (tmp_path / "dl" / "rel.tar.gz.part").exists()


async def test_a_cut_connection_is_resumed_with_range(files, tmp_path):
    async with FileServer(files) as srv:
        srv.cut_after["rel.tar.gz"] = 100_000
        got = await download(srv.url("rel.tar.gz"), tmp_path / "rel", max_bytes=10**7, retries=2, sleep=no_sleep)
        ranges = srv.gets("rel.tar.gz")
    assert got.path.read_bytes() == DATA
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"


async def test_a_restart_resumes_from_the_part_file(files, tmp_path):
    dest = tmp_path / "rel"
    (tmp_path / "rel.part").write_bytes(DATA[:12345])
    async with FileServer(files) as srv:
        got = await download(srv.url("rel.tar.gz"), dest, max_bytes=10**7)
        assert srv.gets("rel.tar.gz") == ["bytes=12345-"]
    assert got.path.read_bytes() == DATA


async def test_a_server_ignoring_range_restarts_from_zero(files, tmp_path):
    (tmp_path / "rel.part").write_bytes(b"stale bytes from another file")
    async with FileServer(files) as srv:
        srv.ignore_range = True
        got = await download(srv.url("rel.tar.gz"), tmp_path / "rel", max_bytes=10**7)
    assert got.path.read_bytes() == DATA


async def test_too_large_is_refused_by_length_and_while_streaming(files, tmp_path):
    async with FileServer(files) as srv:
        with pytest.raises(TooLarge, match="cap of 1000"):
            await download(srv.url("rel.tar.gz"), tmp_path / "a", max_bytes=1000, retries=3, sleep=no_sleep)
        assert len(srv.gets("rel.tar.gz")) == 1          # final at once, no retries
        srv.no_length = True
        with pytest.raises(TooLarge):
            await download(srv.url("rel.tar.gz"), tmp_path / "b", max_bytes=1000)
    assert not list(tmp_path.glob("a*")) and not list(tmp_path.glob("b*"))


async def test_retries_for_server_errors_but_not_for_404(files, tmp_path):
    async with FileServer(files) as srv:
        srv.status["rel.tar.gz"] = 503
        with pytest.raises(DownloadError, match=r"HTTP 503.*after 3 attempt"):
            await download(srv.url("rel.tar.gz"), tmp_path / "a", max_bytes=10**7, retries=2, sleep=no_sleep)
        assert len(srv.gets("rel.tar.gz")) == 3
        with pytest.raises(DownloadError, match="HTTP 404") as err:
            await download(srv.url("missing"), tmp_path / "b", max_bytes=10**7, retries=5, sleep=no_sleep)
        assert err.value.final and len(srv.gets("missing")) == 1


async def test_a_wrong_hash_is_refused_and_nothing_is_kept(files, tmp_path):
    async with FileServer(files) as srv:
        with pytest.raises(HashMismatch, match="expected 00ff"):
            await download(srv.url("rel.tar.gz"), tmp_path / "a", max_bytes=10**7, expected_sha256="00ff")
    assert not list(tmp_path.glob("a*"))


def test_unsupported_schemes_and_credentials_in_urls():
    for url in ("ftp://host/rel.tar.gz", "file:///etc/passwd", "rel.tar.gz", "https:///nohost"):
        with pytest.raises(UnsupportedScheme):
            check_url(url)
    check_url("https://user:s3cr3t-pw@host/x?token=abc")
    assert safe_url("https://user:s3cr3t-pw@host:8443/x?token=abc") == "https://host:8443/x"
    assert "s3cr3t-pw" not in redact("fetching https://user:s3cr3t-pw@host/x")


async def test_https_is_verified_against_the_configured_ca(files, tmp_path):
    tls, ca = server_tls(tmp_path)
    async with FileServer(files, tls=tls) as srv:
        ok = await download(srv.url("rel.tar.gz"), tmp_path / "a", max_bytes=10**7,
                            ssl_context=ssl.create_default_context(cafile=str(ca)))
        assert ok.path.read_bytes() == DATA
        with pytest.raises(DownloadError, match="certificate"):
            await download(srv.url("rel.tar.gz"), tmp_path / "b", max_bytes=10**7)   # system store: unknown CA
