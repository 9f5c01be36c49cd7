"""The harness's parts on their own: the link proxy, the control channel, derived configs.

Real sockets on loopback and real Unix sockets in tmp_path; no processes (the e2e tests
run those).
"""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import pytest

from agent.config.load import load_config
from hil.control import ControlChannel, ControlError, request
from hil.harness import derive_config, describe_message, toml_text
from hil.linkproxy import LinkProxy

ROOT = Path(__file__).resolve().parents[2]


class Echo:
    """A TCP echo server that counts its connections."""

    async def __aenter__(self) -> Echo:
        self.accepted = 0
        self.server = await asyncio.start_server(self._echo, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.writers: list[asyncio.StreamWriter] = []
        return self

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def __aexit__(self, *exc: object) -> None:
        for w in self.writers:
            w.transport.abort()
        self.server.close()
        await self.server.wait_closed()


async def test_proxy_relays_then_cut_resets_and_refuses_until_restored():
    async with Echo() as echo:
        proxy = await LinkProxy(echo.port).start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            proxy.cut()
            assert await reader.read(10) == b""            # reset: the client sees the end at once
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await reader.read(10) == b""            # new connections are refused while cut
            writer.close()
            assert echo.accepted == 1
            proxy.restore()
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"again")
            assert await reader.readexactly(5) == b"again"
            writer.close()
        finally:
            await proxy.close()


async def test_blackhole_keeps_the_socket_open_and_drops_the_bytes():
    async with Echo() as echo:
        proxy = await LinkProxy(echo.port).start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"a")
            assert await reader.readexactly(1) == b"a"
            proxy.blackhole()
            writer.write(b"lost")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):       # a half-open link: nothing comes back, nothing ends
                    await reader.read(10)
            assert proxy.connections == 1
            proxy.restore()
            writer.write(b"b")
            assert await reader.readexactly(1) == b"b"
            writer.close()
        finally:
            await proxy.close()


async def test_control_channel_answers_and_names_bad_requests(tmp_path):
    async def add(a: int, b: int = 0) -> int:
        return a + b

    def fail() -> None:
        raise ValueError("no EV there")

    async with ControlChannel(tmp_path / "c.sock", {"add": add, "fail": fail}):
        assert await request(tmp_path / "c.sock", "add", {"a": 2, "b": 3}) == 5
        with pytest.raises(ControlError, match=r"unknown command 'sub'; commands: add, fail"):
            await request(tmp_path / "c.sock", "sub")
        with pytest.raises(ControlError, match=r"add: .*'c'"):
            await request(tmp_path / "c.sock", "add", {"a": 1, "c": 2})
        with pytest.raises(ControlError, match="ValueError: no EV there"):
            await request(tmp_path / "c.sock", "fail")
        assert (tmp_path / "c.sock").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "c.sock").exists()
    with pytest.raises(ControlError, match="nothing is serving"):
        await request(tmp_path / "c.sock", "add", {"a": 1})


def test_derived_config_keeps_the_original_and_resolves_its_relative_paths(tmp_path):
    source = ROOT / "config" / "demo.toml"
    before = source.read_text()

    def edit(raw: dict, config: object) -> None:
        raw["uplink"]["url"] = "ws://127.0.0.1:1234/ocpp"

    derived = derive_config(source, tmp_path / "copy" / "site.toml", edit, header="# copy\n")
    original = load_config(source)
    assert source.read_text() == before
    assert derived.uplink.url == "ws://127.0.0.1:1234/ocpp"
    assert derived.site.state_dir == original.site.state_dir        # still ROOT/run/demo, not copy/run/demo
    assert derived.bus("rs485").port == original.bus("rs485").port
    assert [d.id for d in derived.devices] == [d.id for d in original.devices]
    assert derived.bus("lan").port == 15020 and derived.bus("lan").gap_ms is None


def test_toml_text_round_trips_what_tomllib_reads():
    data = {"a": 1, "b": 2.5, "c": "x \"q\" \\ é", "d": True, "e": [1, 2], "t": {"k": "v", "sub": {"z": 0}},
            "arr": [{"id": "one", "ev": {"soc": 0.5}}, {"id": "two"}], "weird key": "ok"}
    assert tomllib.loads(toml_text(data)) == data


def test_describe_message_is_one_line_and_survives_odd_payloads():
    start = {"at": "2026-01-01T10:00:00.000Z", "dir": "in", "kind": "call", "action": "StartTransaction",
             "payload": {"connectorId": 1, "idTag": "T1", "meterStart": 5, "timestamp": "x"}}
    assert describe_message(start) == "10:00:00 -> StartTransaction connector 1 T1 meterStart 5 Wh"
    assert describe_message({**start, "kind": "result", "payload": {}}) == "10:00:00 -> result StartTransaction {}"
    assert describe_message({**start, "dir": "out", "kind": "result", "action": "StatusNotification", "payload": {}}) == ""
