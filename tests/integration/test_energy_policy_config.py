"""``[limits.policy]`` reaches the running agent: the site config's tuning is what the
live load manager allocates with, and ``evsite status`` (the control API over its real
Unix socket) shows it.

Real parts: the agent (run_agent, as the service runs it), its Modbus drivers against the
rig's emulated grid meter and charger on loopback, the control socket.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import textwrap
from typing import Any

from agent.config.load import load_config_text
from agent.control.client import ControlClient
from agent.supervisor import run_agent
from hil.rig import Rig
from tests.integration.test_uplink_v16 import free_port

SITE = """
    [site]
    name = "policy from the config"
    poll_interval = 0.2
    state_dir = "{tmp}/state"

    [uplink]
    enabled = false

    [limits]
    fuse_amps = 32

    [limits.policy]
    rotation_interval = 120
    hysteresis = 2.5
    min_interval = 3

    [[buses]]
    id = "lan"
    type = "tcp"
    host = "127.0.0.1"
    port = {port}

    [[devices]]
    id = "grid"
    role = "grid_meter"
    profile = "eastron-sdm630"
    bus = "lan"
    unit_id = 2

    [[devices]]
    id = "terra"
    role = "charger"
    profile = "abb-terra-ac"
    bus = "lan"
    unit_id = 1
    connector_id = 1
"""


async def test_policy_keys_reach_the_running_controller_and_its_status():
    tmp = tempfile.mkdtemp(prefix="evs-", dir="/tmp")   # short: the control socket's path is limited
    try:
        config = load_config_text(textwrap.dedent(SITE).format(tmp=tmp, port=free_port()), "site.toml", base_dir=tmp)
        rig = Rig(config)
        await rig.start()
        stop = asyncio.Event()
        box: dict[str, Any] = {}
        ready = asyncio.Event()
        decided = asyncio.Event()

        def on_ready(rt: Any) -> None:
            box["rt"] = rt
            rt.poller.add_consumer(lambda state: decided.set() if rt.energy.last_result is not None else None)
            ready.set()

        agent = asyncio.create_task(run_agent(config, stop=stop, handle_signals=False, ready=on_ready))
        try:
            waiter = asyncio.create_task(ready.wait())
            done, _ = await asyncio.wait({agent, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
            assert waiter in done, f"agent did not get ready: {agent.result() if agent.done() else 'timeout'}"
            await asyncio.wait_for(decided.wait(), 20)          # a poll went through the allocator
            tuning = box["rt"].energy.tuning
            assert (tuning.rotation_interval, tuning.hysteresis, tuning.min_interval) == (120.0, 2.5, 3.0)
            assert tuning.lower_timeout == 15.0                 # not given: the default
            status = await ControlClient(config.control_socket).status()
            policy = status["energy"]["policy"]
            assert (policy["rotation_interval"], policy["hysteresis"], policy["min_interval"]) == (120.0, 2.5, 3.0)
        finally:
            stop.set()
            code = await asyncio.wait_for(agent, 20)
            await rig.stop()
        assert code == 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
