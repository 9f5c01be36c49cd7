"""The CSMS's answers to our CALLs, matched by message id; late ones are kept, not lost.

Why this exists: the ``ocpp`` library (2.1.0) passes every CALLRESULT and CALLERROR
through one queue, and the CALL waiting at that moment reads it; an entry whose id is
not its own is thrown away ("Ignoring response with unknown unique id"). So an answer
that arrives after its CALL timed out (a loaded CSMS, a loaded station) is read and
discarded by whatever CALL goes next - an Authorize, a heartbeat - and the outbox,
which resends the timed-out message under the same id, needs a whole new round trip
and its pause again; under load that repeats. Here each answer goes to the CALL that
waits for its id, and one nobody waits for is kept (the last few, per connection) so
that the resend of that id is completed by it at once, without sending it again.

``ReceiveLoopEnded`` and ``receive()``: the receive loop runs in the adapter's
TaskGroup, and a TaskGroup ignores a child that ends *cancelled* (a CancelledError
raised inside it, not by the group). The socket then stays up with nobody reading it:
every CALL times out until three in a row end the connection. ``receive()`` turns any
end of the loop that the group did not ask for into an error, which ends the
connection at once; and a CancelledError out of a handler becomes an InternalError
answer (``handler_cancelled``) instead of ending the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from ocpp.charge_point import camel_to_snake_case
from ocpp.messages import Call, CallError, CallResult, MessageType, validate_payload

log = logging.getLogger("evsite.uplink.answers")


class ReceiveLoopEnded(ConnectionError):
    """The connection's receive loop stopped while the connection was up."""


class AnswerBook:
    """Answers by message id for one connection. ``limit``: late answers kept."""

    def __init__(self, limit: int = 32) -> None:
        self.limit = limit
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._late: OrderedDict[str, Any] = OrderedDict()
        self._late_waiters: dict[str, asyncio.Future[None]] = {}
        self.late_kept = 0        # answers that arrived with nobody waiting (counted for status/tests)

    def deliver(self, msg: Any) -> None:
        """From the receive loop: a CALLRESULT or CALLERROR."""
        uid = msg.unique_id
        fut = self._waiting.get(uid)
        if fut is not None and not fut.done():
            fut.set_result(msg)
            return
        self._late[uid] = msg
        self._late.move_to_end(uid)
        while len(self._late) > self.limit:
            self._late.popitem(last=False)
        self.late_kept += 1
        log.info("answer to %s came after its CALL gave up waiting: kept for its resend", uid)
        waiter = self._late_waiters.get(uid)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, uid: str, timeout: float) -> Any:
        """The answer to ``uid``: one already kept, or the next to come within ``timeout``
        (TimeoutError otherwise)."""
        if uid in self._late:
            return self._late.pop(uid)
        if uid in self._waiting:
            raise RuntimeError(f"two CALLs wait for an answer to the same message id {uid!r}")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[uid] = fut
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            del self._waiting[uid]

    def take_late(self, uid: str) -> Any | None:
        """A kept answer to ``uid``, removed; None when there is none."""
        return self._late.pop(uid, None)

    async def until_late(self, uid: str) -> None:
        """Returns once an answer to ``uid`` is kept (at once if it already is)."""
        if uid in self._late:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._late_waiters[uid] = fut
        try:
            await fut
        finally:
            if self._late_waiters.get(uid) is fut:
                del self._late_waiters[uid]


class MatchedAnswers:
    """Mixed into a ``ChargePoint`` subclass (before it): answers by id via ``AnswerBook``.

    The subclass's ``route_message`` calls ``route_answer`` first; the library's
    ``call()`` then waits in ``_get_specific_response``, overridden here.
    """

    _ocpp_version: str
    _call_result: Any
    answers: AnswerBook

    def route_answer(self, msg: Any) -> bool:
        """True when ``msg`` was an answer (and is now delivered)."""
        if isinstance(msg, (CallResult, CallError)):
            self.answers.deliver(msg)
            return True
        return False

    async def _get_specific_response(self, unique_id: str, timeout: float) -> Any:
        return await self.answers.wait(unique_id, timeout)

    async def late_result(self, payload: Any, unique_id: str) -> Any | None:
        """The result of ``payload`` sent earlier as ``unique_id`` when its answer came
        late and was kept, converted as ``call()`` does (a CALLERROR raises its
        OCPPError); None when no such answer is kept."""
        response = self.answers.take_late(unique_id)
        if response is None:
            return None
        if response.message_type_id == MessageType.CallError:
            raise response.to_exception()
        action = type(payload).__name__
        response.action = action
        await validate_payload(response, self._ocpp_version)
        cls = getattr(self._call_result, action)
        return cls(**camel_to_snake_case(response.payload))

    async def handler_cancelled(self, msg: Any) -> None:
        """A CancelledError came out of the handler of ``msg`` while nobody cancelled
        the receive loop: answer InternalError and keep reading."""
        log.error("handler of %s from the CSMS ended with CancelledError: answered InternalError", msg.action)
        if isinstance(msg, Call):
            await self._send(CallError(msg.unique_id, "InternalError", "the station's handler was cancelled", {}).to_json())  # type: ignore[attr-defined]


async def receive(station: Any) -> None:
    """Run ``station.start()`` (the library's receive loop) so that it cannot end unseen:
    a cancellation the caller's task did not receive, or a return, raises
    ReceiveLoopEnded (see the module docstring)."""
    try:
        await station.start()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise ReceiveLoopEnded("the receive loop ended with a CancelledError nobody asked for") from None
    raise ReceiveLoopEnded("the receive loop returned")


async def until_answered(station: Any, message_id: str) -> None:
    """For the outbox's pause: returns when a late answer to ``message_id`` has come on
    ``station``'s connection; never when there is no connection."""
    if station is None:
        await asyncio.Event().wait()
    else:
        await station.answers.until_late(message_id)


def from_inside(exc: BaseException) -> bool:
    """True for a CancelledError that did not come from cancelling the current task."""
    task = asyncio.current_task()
    return isinstance(exc, asyncio.CancelledError) and (task is None or not task.cancelling())
