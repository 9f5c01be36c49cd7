"""How both versions' stations take a frame from the CSMS, before the library does.

The library drops a frame that is not OCPP-J in silence; when it still looks like a CALL
with a readable message id we answer a CALLERROR (OCPP-J 4.2.3), so the CSMS is not left
waiting. An integer outside OCPP's 32 bits cannot be kept, so such a CALL is refused
before any handler acts. Answers to our own CALLs go to the CALL waiting for their id
(agent/uplink/answers.py). A CancelledError out of a handler that nobody asked for is
answered InternalError instead of ending the receive loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, unpack

from agent.uplink.answers import from_inside


class GuardedRouting:
    """Mixed into a station before the library's ``ChargePoint`` (with MatchedAnswers)."""

    #: the version's logger for refused frames
    route_log: logging.Logger

    def out_of_range(self, payload: Any) -> str | None:
        """The path of an integer the version cannot hold, if any."""
        raise NotImplementedError

    async def route_message(self, raw_msg: Any) -> None:
        try:
            msg = unpack(raw_msg)
        except OCPPError as err:
            uid = call_id_of(raw_msg)
            self.route_log.warning("frame from the CSMS is not OCPP-J (%s: %s): %.200r", err.code,
                                   err.details or err.description, raw_msg)
            if uid is not None:
                await self._send(CallError(uid, err.code, "not a valid OCPP-J CALL", {}).to_json())  # type: ignore[attr-defined]
            return
        if isinstance(msg, Call) and (where := self.out_of_range(msg.payload)) is not None:
            self.route_log.warning("%s from the CSMS refused: %s is outside OCPP's 32-bit integer range", msg.action, where)
            await self._send(CallError(msg.unique_id, "TypeConstraintViolation",  # type: ignore[attr-defined]
                                       f"{where} is outside the 32-bit integer range", {}).to_json())
            return
        if self.route_answer(msg):  # type: ignore[attr-defined]
            return
        try:
            await super().route_message(raw_msg)  # type: ignore[misc]
        except asyncio.CancelledError as exc:
            if not from_inside(exc):
                raise
            await self.handler_cancelled(msg)  # type: ignore[attr-defined]


def call_id_of(raw: Any) -> str | None:
    """The message id of something shaped like ``[2, "<id>", ...]``, else None."""
    try:
        msg = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if isinstance(msg, list) and len(msg) >= 2 and msg[0] == 2 and isinstance(msg[1], str) and 0 < len(msg[1]) <= 36:
        return msg[1]
    return None
