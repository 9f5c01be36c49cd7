"""``evsite demo`` as a user runs it: a real process starting three real processes.

The demo runs config/demo.toml (on free ports, state under tmp_path, so parallel runs
and a developer's own demo do not collide) with its shipped scenario at x2: the first
EV arrives after 5 s, the demo presents a tag for it, the CSMS sees the transaction.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from agent.cli_demo import version_problem
from hil.harness import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def demo_config(tmp_path: Path) -> Path:
    text = (ROOT / "config" / "demo.toml").read_text()
    text = (text.replace("port = 15020", f"port = {free_port()}").replace("../run/demo", str(tmp_path / "run"))
            .replace("127.0.0.1:9000", f"127.0.0.1:{free_port()}"))
    path = tmp_path / "demo.toml"
    path.write_text(text)
    return path


async def start_demo(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "demo", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


def children(out: str) -> list[int]:
    line = next(x for x in out.splitlines() if x.startswith("evsite demo: agent up"))
    return [int(p) for p in re.findall(r"pid (\d+)", line)]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_demo_duration_shows_a_transaction_and_exits_0(tmp_path):
    proc = await start_demo("--config", str(demo_config(tmp_path)), "--duration", "20", "--speed", "2")
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    out, err = out.decode(), err.decode()
    assert proc.returncode == 0, err + out[-2000:]
    assert "plug ev-terra into terra" in out                      # the scenario played
    assert "presented DEMO-1: Accepted" in out                   # the demo authorized it
    assert "StartTransaction connector 1 DEMO-1 meterStart" in out   # the CSMS got the start
    assert re.search(r"StartTransaction: transactionId \d+ \(Accepted\)", out)
    assert re.search(r"^1\s+terra\s+(Charging|SuspendedEV|SuspendedEVSE)\s+#\d+ DEMO", out, re.M)  # the live view
    assert "stopped cleanly" in out
    assert all(gone(pid) for pid in children(out)), "no child left behind"
    derived = (tmp_path / "run" / "demo" / "site.toml").read_text()
    assert derived.startswith("# written by evsite demo from")
    assert (tmp_path / "run" / "demo" / "csms.jsonl").stat().st_size > 0
    # a poll of the demo site fits in its 1 s interval (with the SDM630's RS-485 gap on the
    # TCP bus it took 1.2 s: every tick was skipped)
    agent_log = (tmp_path / "run" / "demo" / "agent.log").read_text()
    assert len(re.findall(r"poll tick \d+ took .* skipped", agent_log)) < 3


async def test_ctrl_c_stops_every_process_cleanly(tmp_path):
    proc = await start_demo("--config", str(demo_config(tmp_path)))
    assert proc.stdout is not None
    seen = []
    async with asyncio.timeout(40):
        while not (line := (await proc.stdout.readline()).decode()).startswith("evsite demo: agent up"):
            assert line, "the demo ended before the agent was up"
            seen.append(line)
    proc.send_signal(signal.SIGINT)
    rest, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert "stopped cleanly" in rest.decode()
    assert all(gone(pid) for pid in children(line))


async def test_bad_input_is_one_clear_line_and_exit_2(tmp_path):
    for args, message in ((["--csms", "http://example.org/ocpp"], "must start with ws:// or wss://"),
                          (["--config", str(tmp_path / "missing.toml")], "cannot read"),
                          (["--scenario", "nope"], "no such scenario file"),
                          (["--speed", "0"], "--speed must be > 0")):
        proc = await start_demo(*args)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 2, (args, out, err)
        assert message in err.decode(), (args, err)
        assert "Traceback" not in err.decode()


def test_ocpp_201_is_refused_clearly_while_its_adapter_is_missing():
    assert version_problem("2.0.1", find_spec=lambda name: None) == (
        "OCPP 2.0.1 is not available in this build yet (agent/uplink/v201 is not built); use --ocpp 1.6")
    assert version_problem("1.6", find_spec=lambda name: None) is None
