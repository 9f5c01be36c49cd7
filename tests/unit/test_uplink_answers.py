"""agent/uplink/answers.py on its own: matching by id, late answers, the receive loop's end."""

from __future__ import annotations

import asyncio

import pytest
from ocpp.messages import CallResult

from agent.uplink.answers import AnswerBook, ReceiveLoopEnded, receive


async def test_an_answer_for_another_id_is_kept_not_thrown_away():
    book = AnswerBook()
    book.deliver(CallResult("late-1", {}))            # its CALL timed out before
    waiting = asyncio.ensure_future(book.wait("next-2", timeout=5))
    await asyncio.sleep(0)
    book.deliver(CallResult("next-2", {"a": 1}))
    assert (await waiting).payload == {"a": 1}
    assert (await book.wait("late-1", timeout=0.01)).unique_id == "late-1"   # the resend gets it at once
    assert book.late_kept == 1


async def test_no_answer_times_out_and_leaves_nothing_behind():
    book = AnswerBook()
    with pytest.raises(TimeoutError):
        await book.wait("x", timeout=0.01)
    book.deliver(CallResult("x", {}))                  # now late: kept for the resend
    assert book.take_late("x") is not None and book.take_late("x") is None


async def test_until_late_wakes_when_the_answer_comes_and_only_the_last_few_are_kept():
    book = AnswerBook(limit=2)
    woken = asyncio.ensure_future(book.until_late("b"))
    book.deliver(CallResult("a", {}))
    await asyncio.sleep(0)
    assert not woken.done()
    book.deliver(CallResult("b", {}))
    await asyncio.wait_for(woken, 1)
    book.deliver(CallResult("c", {}))
    assert book.take_late("a") is None and book.take_late("b") and book.take_late("c")


class _Loop:
    def __init__(self, end: str) -> None:
        self.end = end

    async def start(self) -> None:
        await asyncio.sleep(0)
        if self.end == "cancelled inside":
            fut = asyncio.get_running_loop().create_future()
            fut.cancel()
            await fut
        if self.end == "forever":
            await asyncio.Event().wait()


@pytest.mark.parametrize("end", ["cancelled inside", "returned"])
async def test_a_receive_loop_ending_unasked_is_an_error_a_taskgroup_sees(end):
    with pytest.raises(ExceptionGroup) as group:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(receive(_Loop(end)))
            tg.create_task(asyncio.Event().wait())     # the connection's other loops
    assert group.group_contains(ReceiveLoopEnded)


async def test_a_receive_loop_cancelled_by_its_owner_is_just_cancelled():
    task = asyncio.ensure_future(receive(_Loop("forever")))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
