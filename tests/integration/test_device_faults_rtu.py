"""The RS-485 line goes silent (a cable cut, a dead USB adapter) while EVs charge: the
grid meter and a charger on it stop answering at once, while a charger on the LAN goes
on. Each device is logged once as stale; the station and the RS-485 connector are
Faulted at the CSMS; after ``limits.grid_stale_after`` the EVs together stay within
``limits.failsafe_amps`` by the rig's ground truth (the silent Heidelberg falls back to
its failsafe current by its own watchdog, which the agent counts it at). When the line
is back, both recover (one line each), the Heidelberg gets its init writes again, the
statuses return and the failsafe is lifted.

The line is the rig's: two pseudo-terminals joined by a pump, which the test cuts
(``RtuServerHandle.line_cut``), so the agent's RTU client sees exactly what it would
see on a cut bus: no bytes back, timeouts.
"""

from __future__ import annotations

import logging

from tests.integration.test_device_faults import (
    GroundTruth, calls_so_far, charge, fault_site, lines, polls, repeated, status_of,
)
from tests.integration.test_uplink_v16 import STATION, wait_until

FAILSAFE = 12.0

RTU_SITE = """
    [site]
    name = "device faults rtu"
    poll_interval = 0.2
    state_dir = "{tmp}/state"

    [uplink]
    url = "{url}"
    station_id = "{station}"
    call_timeout = 3
    backoff_initial = 0.2
    backoff_max = 1

    [limits]
    fuse_amps = {fuse}
    failsafe_amps = {failsafe}
    grid_stale_after = 1.5

    [[buses]]
    id = "lan"
    type = "tcp"
    host = "127.0.0.1"
    port = {port}
    timeout = 0.3
    retries = 0

    [[buses]]
    id = "rs485"
    type = "rtu"
    port = "{tmp}/ttyRS485"
    baudrate = 19200
    parity = "E"
    timeout = 0.2
    retries = 0

    [[devices]]
    id = "grid"
    role = "grid_meter"
    profile = "eastron-sdm630"
    bus = "rs485"
    unit_id = 2

    [[devices]]
    id = "heidel"
    role = "charger"
    profile = "heidelberg-ec"
    bus = "rs485"
    unit_id = 1
    connector_id = 2
    max_current = 16
    failsafe_current = 6
    failsafe_timeout = 2

    [[devices]]
    id = "terra"
    role = "charger"
    profile = "abb-terra-ac"
    bus = "lan"
    unit_id = 1
    connector_id = 1
    max_current = {terra_max}
"""


async def test_rs485_line_cut_then_back(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    async with fault_site(tmp_path, RTU_SITE, failsafe=FAILSAFE) as (rt, rig, csms):
        await charge(rt, rig, csms, "terra", 1, "T-1")
        await charge(rt, rig, csms, "heidel", 2, "T-2")
        await wait_until(lambda: rig.charger("terra").offered() == 14 == rig.charger("heidel").offered())
        mark, calls = len(caplog.records), calls_so_far(csms)
        line = rig.servers["rs485"]
        line.line_cut = True
        # detected: the station (grid meter) and the Heidelberg's connector are Faulted
        await wait_until(lambda: status_of(csms, 0, "Faulted", calls) and status_of(csms, 2, "Faulted", calls),
                         timeout=10, what="Faulted at the CSMS")
        # handled: the failsafe, by the ground truth once the Heidelberg's own watchdog
        # (2 s) has brought it to its failsafe current
        await wait_until(lambda: rig.charger("heidel").silent(), timeout=5, what="the Heidelberg's watchdog")
        await wait_until(lambda: rig.charger("terra").offered() <= FAILSAFE - 6, timeout=5, what="failsafe")
        with GroundTruth(rig) as truth:
            await polls(rt, 10)
        assert truth.ev_max <= FAILSAFE + 0.1, truth.ev_max
        assert rt.sessions.connectors[1].recorded.status.value == "Charging"   # the LAN charger goes on
        for device in ("grid (eastron-sdm630 on rs485 unit 2)", "heidel (heidelberg-ec on rs485 unit 1)"):
            assert len(lines(caplog, f"device {device} stale since", mark)) == 1
        assert len(lines(caplog, "poll tick", mark)) <= 1                        # slow ticks: one episode
        assert repeated(caplog, mark) == []
        # recovered
        mark2, calls2 = len(caplog.records), calls_so_far(csms)
        since = len(line.requests)
        line.line_cut = False
        await wait_until(lambda: status_of(csms, 0, "Available", calls2) and status_of(csms, 2, "Charging", calls2),
                         timeout=10, what="statuses back")
        for device in ("grid (eastron-sdm630 on rs485 unit 2)", "heidel (heidelberg-ec on rs485 unit 1)"):
            assert len(lines(caplog, f"device {device} recovered after", mark2)) == 1
        # its init writes again (it may have been power-cycled meanwhile): standby off (258),
        # the watchdog (257) and its failsafe current (262); and its watchdog is fed again
        await wait_until(lambda: {257, 258, 262} <= {r.address for r in line.requests[since:]
                                                     if r.unit_id == 1 and r.function_code in (6, 16)})
        await wait_until(lambda: not rig.charger("heidel").silent())
        await wait_until(lambda: rig.charger("terra").offered() == 14, timeout=30, what="failsafe lifted")
        assert rt.sessions.connectors[1].tx is not None and rt.sessions.connectors[2].tx is not None
        assert not csms.messages(STATION, "StopTransaction")
