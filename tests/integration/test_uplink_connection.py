"""UplinkConnection against the real test CSMS over real sockets (loopback).

Backoff delays run on a SimClock, so a reconnect is "advance the clock by the delay the
connection chose", never a sleep. What websockets times itself (pings, close
handshake) runs on real time with intervals of a few tenths of a second.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.clock import SimClock
from agent.uplink import ConnState, Link, UplinkConnection, UplinkOptions
from agent.uplink.security import SecurityConfigError, build_credentials
from hil.csms import ServerTls, TestCsms, TestPki
from tests.ocpp_schemas import ocpp_schema_guard  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Zq7-uplink-pass-4242"


def options(url: str, station: str = "ST1", **kw) -> UplinkOptions:
    kw.setdefault("backoff_initial", 0.5)
    kw.setdefault("backoff_max", 2.0)
    kw.setdefault("ping_interval", None)
    kw.setdefault("close_timeout", 0.5)
    kw.setdefault("open_timeout", 3.0)
    return UplinkOptions(url=url, station_id=station, **kw)


class Running:
    """Runs a connection in a task for the test's duration and stops it cleanly."""

    def __init__(self, conn: UplinkConnection, session=None) -> None:
        self.conn, self.session = conn, session

    async def __aenter__(self) -> UplinkConnection:
        self.task = asyncio.create_task(self.conn.run(self.session))
        return self.conn

    async def __aexit__(self, *exc) -> None:
        self.conn.stop()
        await asyncio.wait_for(self.task, 5)


async def advance_backoff(conn: UplinkConnection, clock: SimClock) -> None:
    """Let the backoff delay the connection is sleeping on pass, and the next attempt start."""
    assert conn.state is ConnState.WAITING
    while not clock.pending_sleepers:
        await asyncio.sleep(0)
    attempts = conn.attempts
    await clock.advance(conn.next_delay)
    await conn.wait_until(lambda c: c.attempts > attempts, timeout=1)


async def reconnected(conn: UplinkConnection, clock: SimClock, number: int, timeout: float = 10.0) -> Link:
    """Advance the SimClock through backoff delays until connection ``number`` is up."""
    async with asyncio.timeout(timeout):
        while not (conn.state is ConnState.CONNECTED and conn.connections >= number):
            if conn.state is ConnState.WAITING:
                await advance_backoff(conn, clock)
            elif conn.state is ConnState.CONNECTED:
                await conn.wait_state(ConnState.WAITING)
            else:
                await conn.wait_state(ConnState.WAITING, ConnState.CONNECTED)
    assert conn.link is not None
    return conn.link


def password_file(tmp_path: Path, mode: int = 0o600, text: str = PASSWORD + "\n") -> Path:
    p = tmp_path / "csms.password"
    p.write_text(text)
    os.chmod(p, mode)
    return p


async def test_connects_negotiates_and_calls_hooks():
    events = []
    async with TestCsms() as csms:
        conn = UplinkConnection(
            options(csms.url, versions=("1.6",)),
            clock=SimClock(),
            on_connected=lambda ws, sub: events.append(("up", sub)),
            on_disconnected=lambda reason: events.append(("down", reason)),
        )
        async with Running(conn):
            link = await conn.wait_connected(timeout=3)
            assert (link.version, link.subprotocol, link.number) == ("1.6", "ocpp1.6", 1)
            assert conn.negotiated == "1.6"
            await csms.wait_connected("ST1")
        assert conn.state is ConnState.STOPPED and conn.negotiated is None
        assert events == [("up", "ocpp1.6"), ("down", "stopped")]
        await csms.wait_disconnected("ST1")


@pytest.mark.parametrize(
    "served, offered, expected",
    [
        ("both", ("2.0.1", "1.6"), "2.0.1"),   # both offered: the preferred one
        ("both", ("1.6", "2.0.1"), "1.6"),
        ("1.6", ("2.0.1", "1.6"), "1.6"),      # fallback when the CSMS has only 1.6
        ("2.0.1", ("1.6", "2.0.1"), "2.0.1"),
    ],
)
async def test_subprotocol_negotiation(served, offered, expected):
    async with TestCsms(ocpp=served) as csms:
        conn = UplinkConnection(options(csms.url, versions=offered), clock=SimClock())
        async with Running(conn):
            assert (await conn.wait_connected(timeout=3)).version == expected
            assert (await csms.wait_connected("ST1")).version == expected


async def test_no_common_subprotocol_is_a_failed_attempt():
    async with TestCsms(ocpp="1.6") as csms:
        conn = UplinkConnection(options(csms.url, versions=("2.0.1",)), clock=SimClock())
        async with Running(conn):
            await conn.wait_state(ConnState.WAITING, timeout=3)
            assert conn.connections == 0 and conn.failed_attempts == 1
            assert "agreed to none of the offered subprotocols (ocpp2.0.1)" in conn.last_error


async def test_reconnects_after_the_csms_closes():
    clock = SimClock()
    reasons = []
    async with TestCsms() as csms:
        conn = UplinkConnection(options(csms.url), clock=clock, on_disconnected=reasons.append)
        async with Running(conn):
            await conn.wait_connected(timeout=3)
            await csms.wait_connected("ST1")
            await csms.disconnect("ST1", 1001, "maintenance")
            await conn.wait_state(ConnState.WAITING, timeout=3)
            assert 0 <= conn.next_delay <= 0.5
            link = await reconnected(conn, clock, 2)
            assert link.number == 2
            assert (await csms.wait_connected("ST1", number=2)).number == 2
    assert reasons[0] == "the CSMS closed the connection (code 1001 'maintenance')"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _start_csms_process(port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hil.csms", "--port", str(port), cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
    )
    async with asyncio.timeout(10):
        line = (await proc.stdout.readline()).decode()
    assert line.startswith("listening on"), line
    return proc


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)


async def test_reconnects_after_the_csms_process_restarts():
    clock = SimClock()
    port = _free_port()
    proc = await _start_csms_process(port)
    try:
        conn = UplinkConnection(options(f"ws://127.0.0.1:{port}"), clock=clock)
        async with Running(conn):
            await conn.wait_connected(timeout=5)
            proc.kill()                        # no closing handshake: the process is gone
            await proc.wait()
            await conn.wait_state(ConnState.WAITING, timeout=5)
            assert conn.last_disconnect == "the connection was lost without a closing handshake"
            await advance_backoff(conn, clock)     # first retry: refused, the CSMS is down
            await conn.wait_until(lambda c: c.failed_attempts == 1, timeout=5)
            await conn.wait_state(ConnState.WAITING, timeout=5)
            assert conn.last_error.startswith(f"cannot reach the CSMS at ws://127.0.0.1:{port}: ")
            proc = await _start_csms_process(port)
            link = await reconnected(conn, clock, 2)
            assert link.number == 2 and conn.last_error is None
    finally:
        await _stop(proc)


async def test_half_open_connection_is_detected_by_ping_timeout():
    ping, timeout, close = 0.2, 0.2, 0.2
    async with TestCsms() as csms:
        conn = UplinkConnection(
            options(csms.url, ping_interval=ping, ping_timeout=timeout, close_timeout=close), clock=SimClock()
        )
        async with Running(conn):
            await conn.wait_connected(timeout=3)
            await csms.wait_connected("ST1")
            csms.freeze("ST1")                   # stops reading: pings go unanswered
            t0 = time.monotonic()
            await conn.wait_state(ConnState.WAITING, timeout=5)
            elapsed = time.monotonic() - t0
        assert "no pong from the CSMS" in conn.last_disconnect
        # a ping is due within one interval, then the timeout, then the close handshake is given up
        assert elapsed <= ping + timeout + close + 0.5, elapsed


async def test_session_runs_per_connection_and_is_cancelled_when_the_socket_closes():
    clock = SimClock()
    started: list[int] = []
    cancelled: list[int] = []

    async def session(link: Link) -> None:
        started.append(link.number)
        await link.ws.send('[2,"b-%d","Heartbeat",{}]' % link.number)
        try:
            await asyncio.Event().wait()          # an adapter busy with something else
        except asyncio.CancelledError:
            cancelled.append(link.number)
            raise

    async with TestCsms() as csms:
        conn = UplinkConnection(options(csms.url), clock=clock)
        async with Running(conn, session):
            await conn.wait_connected(timeout=3)
            await csms.wait_for("Heartbeat")
            csms.abort("ST1")
            await reconnected(conn, clock, 2)
            await csms.wait_for("Heartbeat", count=2)
        assert started == [1, 2] and cancelled == [1, 2]


async def test_a_failing_session_closes_the_connection_and_reconnects(caplog):
    clock = SimClock()
    runs = []

    async def session(link: Link) -> None:
        runs.append(link.number)
        if link.number == 1:
            raise RuntimeError("adapter bug")
        await asyncio.Event().wait()

    async with TestCsms() as csms:
        conn = UplinkConnection(options(csms.url), clock=clock)
        async with Running(conn, session):
            await conn.wait_state(ConnState.WAITING, timeout=3)
            assert conn.last_disconnect == "the OCPP session failed: RuntimeError: adapter bug"
            first = csms.stations["ST1"]
            await csms.wait_disconnected("ST1")
            assert first.ws.close_code == 1011
            await reconnected(conn, clock, 2)
    assert runs == [1, 2]
    assert "OCPP session failed" in caplog.text


async def test_stop_closes_cleanly_with_1000():
    async with TestCsms() as csms:
        conn = UplinkConnection(options(csms.url), clock=SimClock())
        async with Running(conn):
            await conn.wait_connected(timeout=3)
            link = await csms.wait_connected("ST1")
        await csms.wait_disconnected("ST1")
        assert link.ws.close_code == 1000


async def test_oversized_frame_from_the_csms_drops_the_connection():
    async with TestCsms() as csms:
        conn = UplinkConnection(options(csms.url, max_message=4096), clock=SimClock())
        async with Running(conn):
            await conn.wait_connected(timeout=3)
            await csms.wait_connected("ST1")
            await csms.send_raw("ST1", '[2,"big","DataTransfer",{"vendorId":"x","data":"%s"}]' % ("y" * 5000))
            await conn.wait_state(ConnState.WAITING, timeout=3)
        assert "1009" in conn.last_disconnect


# ---- security profiles ---------------------------------------------------------------


async def test_basic_auth_accepted_and_refused(tmp_path):
    async with TestCsms(passwords={"ST1": PASSWORD}) as csms:
        good = build_credentials(url=csms.url, station_id="ST1", profile=1, password_file=password_file(tmp_path))
        conn = UplinkConnection(options(csms.url, credentials=good), clock=SimClock())
        async with Running(conn):
            await conn.wait_connected(timeout=3)
        bad = build_credentials(url=csms.url, station_id="ST1", profile=1, password="wrong-password")
        conn = UplinkConnection(options(csms.url, credentials=bad), clock=SimClock())
        async with Running(conn):
            await conn.wait_state(ConnState.WAITING, timeout=3)
        assert conn.last_error == "the CSMS refused our credentials (HTTP 401) for station 'ST1'"
        assert csms.auth_failures == ["ST1"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_password_file_must_be_0600(tmp_path, mode):
    path = password_file(tmp_path, mode)
    with pytest.raises(SecurityConfigError, match=rf"mode {mode:04o}.*chmod 600"):
        build_credentials(url="ws://h/x", station_id="ST1", profile=1, password_file=path)


def test_security_settings_are_checked(tmp_path):
    with pytest.raises(SecurityConfigError, match="needs a wss:// URL"):
        build_credentials(url="ws://h", station_id="S", profile=2, password="p")
    with pytest.raises(SecurityConfigError, match="needs password_file"):
        build_credentials(url="ws://h", station_id="S", profile=1)
    with pytest.raises(SecurityConfigError, match="is empty"):
        build_credentials(url="ws://h", station_id="S", profile=1, password_file=password_file(tmp_path, text="\n"))
    with pytest.raises(SecurityConfigError, match="does not exist"):
        build_credentials(url="ws://h", station_id="S", profile=1, password_file=tmp_path / "nope")
    with pytest.raises(SecurityConfigError, match="client_cert and client_key"):
        build_credentials(url="wss://h", station_id="S", profile=3)
    with pytest.raises(SecurityConfigError, match="contains ':'"):
        build_credentials(url="ws://h", station_id="S:1", profile=1, password="p")
    with pytest.raises(ValueError, match="must not carry user:password"):
        UplinkOptions(url="ws://u:p@h", station_id="S")


async def test_password_never_appears_in_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    encoded = base64.b64encode(f"ST1:{PASSWORD}".encode()).decode()
    async with TestCsms(passwords={"ST1": PASSWORD}) as csms:
        creds = build_credentials(url=csms.url, station_id="ST1", profile=1, password_file=password_file(tmp_path))
        assert PASSWORD not in repr(creds)
        conn = UplinkConnection(options(csms.url, credentials=creds), clock=SimClock())
        async with Running(conn):
            await conn.wait_connected(timeout=3)
        wrong = build_credentials(url=csms.url, station_id="ST1", profile=1, password=PASSWORD + "x")
        conn = UplinkConnection(options(csms.url, credentials=wrong), clock=SimClock())
        async with Running(conn):
            await conn.wait_state(ConnState.WAITING, timeout=3)
    text = "\n".join(r.getMessage() for r in caplog.records)
    # the handshake headers were logged (so the check below means something) ...
    assert "> Authorization: Basic ***" in text
    # ... and neither the password nor its Basic encoding is anywhere
    assert PASSWORD not in text and encoded not in text
    assert base64.b64encode(f"ST1:{PASSWORD}x".encode()).decode() not in text


@pytest.fixture
def pki(tmp_path):
    return TestPki(tmp_path / "pki")


async def test_tls_server_verified_against_the_configured_ca(pki, tmp_path):
    server = pki.server()
    async with TestCsms(tls=ServerTls(str(server.cert), str(server.key)), passwords=PASSWORD) as csms:
        assert csms.url.startswith("wss://localhost:")
        creds = build_credentials(url=csms.url, station_id="ST1", profile=2, password=PASSWORD, ca_bundle=pki.ca)
        conn = UplinkConnection(options(csms.url, credentials=creds), clock=SimClock())
        async with Running(conn):
            await conn.wait_connected(timeout=3)


async def test_tls_refused_for_a_wrong_ca(pki, tmp_path, caplog):
    other = TestPki(tmp_path / "other", name="some other CA")
    server = pki.server()
    events = []
    async with TestCsms(tls=ServerTls(str(server.cert), str(server.key))) as csms:
        creds = build_credentials(url=csms.url, station_id="ST1", profile=2, password=PASSWORD, ca_bundle=other.ca)
        conn = UplinkConnection(
            options(csms.url, credentials=creds), clock=SimClock(), on_security_event=lambda *a: events.append(a)
        )
        async with Running(conn):
            await conn.wait_state(ConnState.WAITING, timeout=3)
        assert "ST1" not in csms.stations
    assert conn.connections == 0
    assert conn.last_error.startswith("the CSMS certificate was not accepted: ")
    assert events and events[0][0] == "InvalidCsmsCertificate"
    assert any(r.levelno == logging.ERROR and "TLS failure connecting to wss://localhost" in r.getMessage() for r in caplog.records)


async def test_system_trust_store_does_not_trust_a_private_ca(pki):
    server = pki.server()
    async with TestCsms(tls=ServerTls(str(server.cert), str(server.key))) as csms:
        creds = build_credentials(url=csms.url, station_id="ST1", profile=2, password=PASSWORD)  # no ca_bundle
        conn = UplinkConnection(options(csms.url, credentials=creds), clock=SimClock())
        async with Running(conn):
            await conn.wait_state(ConnState.WAITING, timeout=3)
    assert conn.last_error.startswith("the CSMS certificate was not accepted")


async def test_client_certificate_required_and_accepted(pki):
    server, client = pki.server(), pki.client("ST1")
    tls = ServerTls(str(server.cert), str(server.key), client_ca=str(pki.ca))
    async with TestCsms(tls=tls) as csms:
        creds = build_credentials(
            url=csms.url, station_id="ST1", profile=3, ca_bundle=pki.ca, client_cert=client.cert, client_key=client.key
        )
        assert creds.authorization is None
        conn = UplinkConnection(options(csms.url, credentials=creds), clock=SimClock())
        async with Running(conn):
            await conn.wait_connected(timeout=3)
            link = await csms.wait_connected("ST1")
            subject = dict(x[0] for x in link.peer_cert["subject"])
            assert subject["commonName"] == "ST1"
        # without a client certificate the same CSMS refuses the station
        no_cert = build_credentials(url=csms.url, station_id="ST1", profile=2, password=PASSWORD, ca_bundle=pki.ca)
        conn = UplinkConnection(options(csms.url, credentials=no_cert), clock=SimClock())
        async with Running(conn):
            await conn.wait_state(ConnState.WAITING, timeout=3)
        assert conn.connections == 0 and conn.last_error


def test_client_key_must_be_0600(pki):
    client = pki.client("ST1")
    os.chmod(client.key, 0o644)
    with pytest.raises(SecurityConfigError, match="client key .* mode 0644"):
        build_credentials(url="wss://h", station_id="ST1", profile=3, ca_bundle=pki.ca, client_cert=client.cert, client_key=client.key)


def test_options_from_the_site_config(tmp_path):
    from agent.config.model import UplinkSection

    section = UplinkSection(
        url="ws://csms.example:9000/ocpp", station_id="SITE 7", ocpp="2.0.1", offer_both=True,
        security_profile=1, password_file=str(password_file(tmp_path)), ping_interval=0,
        backoff_initial=2.0, backoff_max=60.0,
    )
    o = UplinkOptions.from_config(section)
    assert o.versions == ("2.0.1", "1.6")
    assert o.endpoint == "ws://csms.example:9000/ocpp/SITE%207"
    assert o.ping_interval is None and o.effective_ping_timeout is None
    assert (o.backoff_initial, o.backoff_max) == (2.0, 60.0)
    assert o.credentials.profile == 1 and o.credentials.headers()["Authorization"].startswith("Basic ")
    only = UplinkOptions.from_config(UplinkSection(url="ws://h", station_id="S"))
    assert only.versions == ("1.6",) and only.credentials.headers() == {}
    with pytest.raises(SecurityConfigError, match="needs a wss:// URL"):
        UplinkOptions.from_config(UplinkSection(url="ws://h", station_id="S", security_profile=2))
