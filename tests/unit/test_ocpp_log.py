"""A refused CALL is one short warning line in the log, not a traceback with a schema."""

import asyncio
import json
import logging

import pytest

from agent.uplink.ocpp_log import OcppLibraryLog
from tests.fuzz.ocpp201_harness import Harness201
from tests.fuzz.ocpp_harness import Harness


@pytest.mark.parametrize("make, frame", [
    (Harness, [2, "m-1", "ChangeAvailability", {"connectorId": 1, "tyqe": "Inoperative"}]),
    (Harness201, [2, "m-1", "GetVariables", {"getVariableData": [{"component": {"name": "OCPPCommCtrlr"},
                                                                  "variable": {"nam": "HeartbeatInterval"}}]}]),
    (Harness201, [2, "m-2", "ChangeAvailabiity", {}]),
])
async def test_a_refused_call_logs_one_line_without_traceback(tmp_path, caplog, make, frame):
    h = await make(tmp_path).start()
    try:
        with caplog.at_level(logging.DEBUG, logger="evsite"):
            answer = await h.send(json.dumps(frame))
    finally:
        await h.close()
    assert answer[0] == 4
    records = [r for r in caplog.records if r.name == "evsite.uplink.ocpp" and r.levelno >= logging.WARNING]
    assert len(records) == 1, [r.getMessage()[:100] for r in records]
    rec = records[0]
    assert rec.levelno == logging.WARNING and rec.exc_info is None
    text = rec.getMessage()
    assert frame[2] in text and answer[2] in text and len(text) < 400 and "\n" not in text


def test_other_exceptions_keep_their_traceback(caplog):
    log = OcppLibraryLog(logging.getLogger("evsite.test.ocpplog"), "1.6")
    with caplog.at_level(logging.DEBUG, logger="evsite.test.ocpplog"):
        try:
            raise KeyError("ours")
        except KeyError:
            log.exception("Error while handling request '%s'", "x")
        log.info("%s: send %s", "FUZZ", "[3]")
    assert caplog.records[0].levelno == logging.ERROR and caplog.records[0].exc_info is not None
    assert caplog.records[1].getMessage() == "FUZZ: send [3]"


