"""Answers that come late, and a receive loop that stops: the OCPP 1.6 uplink stall.

Same in-process site as test_uplink_v16.py (call_timeout 3 s; the outbox pauses 5 s
before sending a timed-out message again under the same id).

- A CSMS answer that arrives after the station stopped waiting used to be read by the
  next CALL (the ``ocpp`` library's single response queue) and thrown away, so the
  message needed a second send and a second round trip; now it completes the message.
- A CancelledError out of a handler used to end the receive loop unseen (a TaskGroup
  ignores a cancelled child): the socket stayed up with nobody reading, and every CALL
  timed out until the connection was given up. Now the CSMS gets InternalError and the
  connection goes on.
"""

from __future__ import annotations

import asyncio

import pytest

from hil.csms.server import CallErrorReply
from hil.model import Ev
from tests.integration.test_uplink_v16 import STATION, site, wait_until


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


async def test_a_late_answer_completes_its_message_even_when_another_call_goes_first(tmp_path, caplog):
    caplog.set_level("INFO")
    async with site(tmp_path) as (rt, rig, csms):
        up = rt.uplink.adapters["1.6"]
        since = len(csms.log)
        csms.delay_answers(4.0, "StatusNotification", times=1)     # just past the 3 s call timeout
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        late = await csms.wait_for("StatusNotification", station=STATION, since=since, timeout=10)
        await wait_until(lambda: _logged(caplog, "no answer in time"), timeout=10)
        # while the outbox pauses, another CALL goes: the late answer arrives as it waits
        await up.heartbeat()
        answered = await csms.wait_for("StatusNotification", station=STATION, direction="out", kind="result",
                                       predicate=lambda m: m.unique_id == late.unique_id, timeout=10)
        # the outbox goes on with what follows without sending the status again: give it
        # something to follow (nothing else is queued after a plug without a tag)
        rig.charger("terra").unplug(rig.site.model.now)
        after = await csms.wait_for("StatusNotification", station=STATION, since=answered.seq + 1, timeout=10,
                                    predicate=lambda m: m.payload["status"] == "Available")
        copies = [m for m in csms.messages(STATION, "StatusNotification", "in", "call") if m.unique_id == late.unique_id]
        assert len(copies) == 1, f"the status was sent {len(copies)} times"
        assert not _logged(caplog, "Ignoring response with unknown unique id")
        assert after.seq > answered.seq
        assert up.station.answers.late_kept >= 1


async def test_a_cancelled_handler_is_answered_and_the_connection_goes_on(tmp_path, caplog, monkeypatch):
    async with site(tmp_path) as (rt, rig, csms):
        async def cancelled(*_args, **_kw):
            raise asyncio.CancelledError()     # a part the handler awaited was cancelled under it

        monkeypatch.setattr(rt.sessions, "set_availability", cancelled)
        with pytest.raises(CallErrorReply) as err:
            await csms.call(STATION, "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"}, timeout=5)
        assert err.value.code == "InternalError"
        # the receive loop still reads: the next status goes through on the same connection
        since = len(csms.log)
        rig.charger("terra").plug(Ev(ramp_delay=0.1), rig.site.model.now)
        status = await csms.wait_for("StatusNotification", station=STATION, since=since, timeout=10,
                                     predicate=lambda m: m.payload["status"] == "Preparing")
        await csms.wait_for("StatusNotification", station=STATION, direction="out", kind="result", timeout=10,
                            predicate=lambda m: m.unique_id == status.unique_id)
        await wait_until(lambda: rt.uplink.adapters["1.6"].stats.sent >= 1)
        assert csms.connection_count(STATION) == 1
        assert not _logged(caplog, "no answer in time")
