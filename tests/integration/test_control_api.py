"""The control API over a real Unix socket: server, client, and the CLI on top."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import stat
import tempfile
from datetime import datetime, timezone

import pytest

from agent import cli_status
from agent.clock import SimClock
from agent.control.client import AgentUnreachable, ControlAPIError, ControlClient
from agent.control.server import ControlError, ControlServer, ControlSocketError, json_body
from agent.site.poller import Poller
from drivers.contract import Setpoint
from tests.unit.test_poller import FakeCharger, FakeMeter, charger_slot, meter_slot, timeout


@pytest.fixture
def sockdir():
    # short path: sun_path holds 107 bytes, pytest's tmp_path can be longer
    d = tempfile.mkdtemp(prefix="evs-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def site():
    clock = SimClock(start=datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc))
    grid, ch = FakeMeter("grid", clock), FakeCharger("cp1", clock)
    poller = Poller([meter_slot(grid), charger_slot(ch, 1)], clock=clock, interval=1.0,
                    setpoints=lambda s: {1: Setpoint(16.0)})
    await poller.tick()
    await clock.advance(3.0)
    ch.script.append(timeout())
    await poller.tick()
    return poller


def status_of(poller):
    def status():
        d = poller.latest.as_dict(setpoints=poller.setpoints)
        d["site"]["name"] = "Depot Nord"
        return d
    return status


async def test_status_over_a_real_unix_socket(sockdir, site):
    path = os.path.join(sockdir, "control.sock")
    async with ControlServer(path, status=status_of(site)) as server:
        server_mode = stat.S_IMODE(os.stat(path).st_mode)
        st = await ControlClient(path).status()
    assert server_mode == 0o660
    assert not os.path.exists(path)  # removed on close
    devs = {d["id"]: d for d in st["devices"]}
    assert devs["grid"]["age_s"] == 0.0 and devs["grid"]["stale"] is False
    assert devs["cp1"]["age_s"] == 3.0 and devs["cp1"]["error"] == "timeout"
    [c] = st["connectors"]
    assert c["state"] == "C" and c["setpoint"]["amps"] == 16.0 and c["energy_wh"] == 500.0
    assert st["site"]["grid"]["current"] == [10.0, 11.0, 12.0]


async def test_adding_a_route_and_a_status_section_is_one_line_each(sockdir):
    path = os.path.join(sockdir, "c.sock")
    server = ControlServer(path, status=lambda: {"tick": 1})

    async def authorize(request):
        body = await json_body(request)
        if "id_tag" not in body:
            raise ControlError(400, "missing id_tag")
        return {"accepted": body["id_tag"] == "ABC"}

    server.add_route("POST", "/authorize", authorize)
    server.add_status_section("uplink", lambda: {"connected": False})
    with pytest.raises(ValueError, match="already taken"):
        server.add_route("POST", "/authorize", authorize)
    async with server:
        client = ControlClient(path)
        assert await client.post("/authorize", {"id_tag": "ABC"}) == {"accepted": True}
        with pytest.raises(ControlAPIError, match="400: missing id_tag"):
            await client.post("/authorize", {})
        with pytest.raises(ControlAPIError, match="request body must be a JSON object"):
            await client.post("/authorize", [1])
        with pytest.raises(ControlAPIError) as err:
            await client.get("/nope")
        assert err.value.status == 404 and "GET / lists the routes" in err.value.message
        assert "POST /authorize" in (await client.get("/"))["routes"]
        assert (await client.status()) == {"tick": 1, "uplink": {"connected": False}}
        with pytest.raises(RuntimeError, match="already started"):
            server.add_route("GET", "/late", authorize)


async def test_handler_bug_is_a_500_with_its_message_and_a_logged_traceback(sockdir, caplog):
    path = os.path.join(sockdir, "c.sock")
    server = ControlServer(path)

    async def broken(request):
        raise ZeroDivisionError("division by zero")

    server.add_route("GET", "/broken", broken)
    async with server:
        with pytest.raises(ControlAPIError, match="500: internal error: ZeroDivisionError"):
            await ControlClient(path).get("/broken")
    assert any(r.exc_info for r in caplog.records if "GET /broken failed" in r.getMessage())


async def test_client_names_why_the_agent_cannot_be_reached(sockdir):
    path = os.path.join(sockdir, "control.sock")
    with pytest.raises(AgentUnreachable, match=f"agent not running: no socket at {path}"):
        await ControlClient(path).status()
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(path)  # a socket file nobody listens on: a killed agent's leftover
    left.close()
    with pytest.raises(AgentUnreachable, match="nothing is listening"):
        await ControlClient(path).status()


async def test_stale_socket_is_replaced_but_a_live_one_is_not(sockdir):
    path = os.path.join(sockdir, "control.sock")
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(path)
    left.close()
    async with ControlServer(path):
        with pytest.raises(ControlSocketError, match="another evsite agent is already listening"):
            await ControlServer(path).start()
        assert (await ControlClient(path).get("/"))["routes"]


async def test_bad_socket_settings_are_named(sockdir):
    not_socket = os.path.join(sockdir, "file")
    open(not_socket, "w").close()
    with pytest.raises(ControlSocketError, match="exists and is not a socket"):
        await ControlServer(not_socket).start()
    with pytest.raises(ControlSocketError, match="control.group 'no-such-group-xyz': no such group"):
        await ControlServer(os.path.join(sockdir, "c.sock"), group="no-such-group-xyz").start()
    with pytest.raises(ControlSocketError, match="too long"):
        await ControlServer(os.path.join(sockdir, "x" * 120)).start()


async def test_socket_group_is_applied(sockdir):
    import grp

    group = grp.getgrgid(os.getgid()).gr_name
    path = os.path.join(sockdir, "c.sock")
    async with ControlServer(path, group=group):
        assert os.stat(path).st_gid == os.getgid()


# ---------------------------------------------------------------- the CLI on top

def cli_args(**kw):
    base = {"config": None, "socket": None, "json": False, "timeout": 2.0}
    base.update(kw)
    return argparse.Namespace(**base)


async def test_status_command_prints_a_table_and_json(sockdir, site, capsys):
    import asyncio

    path = os.path.join(sockdir, "control.sock")
    async with ControlServer(path, status=status_of(site)):
        rc = await asyncio.to_thread(cli_status.run, cli_args(socket=path))
        table = capsys.readouterr().out
        rc_json = await asyncio.to_thread(cli_status.run, cli_args(socket=path, json=True))
        raw = capsys.readouterr().out
    assert rc == rc_json == 0
    lines = table.splitlines()
    assert lines[0] == "site Depot Nord: tick 2 at 2026-03-01T12:00:03.000Z"
    grid_row = next(line for line in lines if line.startswith("grid "))
    assert "eastron-sdm630" in grid_row and "lan/2" in grid_row and "0.0 s" in grid_row and grid_row.endswith("ok")
    cp_row = next(line for line in lines if line.startswith("cp1 "))
    assert "3.0 s" in cp_row and "failing: timeout (since 2026-03-01T12:00:03.000Z)" in cp_row
    con_row = next(line for line in lines if line.startswith("1 "))
    assert "10.0/10.0/10.0" in con_row and "0.500" in con_row and "16.0 A 3p" in con_row
    assert any(line.startswith("grid grid: current 10.0/11.0/12.0 A, power 6.90 kW") for line in lines)
    assert json.loads(raw)["tick"] == 2


def test_status_command_exits_1_with_a_clear_message_when_agent_is_down(sockdir, capsys):
    path = os.path.join(sockdir, "control.sock")
    assert cli_status.run(cli_args(socket=path)) == 1
    assert capsys.readouterr().err.strip() == f"evsite status: agent not running: no socket at {path}"


def test_profiles_command_lists_shipped_profiles(capsys):
    from agent import cli_profiles

    assert cli_profiles.run(argparse.Namespace(json=True, kind="meter")) == 0
    rows = json.loads(capsys.readouterr().out)["profiles"]
    sdm = next(r for r in rows if r["name"] == "eastron-sdm630")
    assert sdm["kind"] == "meter" and "rtu" in sdm["transports"]
    assert all(r["kind"] == "meter" for r in rows)
    assert cli_profiles.run(argparse.Namespace(json=False, kind=None)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["PROFILE", "KIND", "TRANSPORTS", "TITLE"]
    assert any(line.split()[:2] == ["eastron-sdm630", "meter"] for line in out)

