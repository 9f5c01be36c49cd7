"""Delivers the store's outbox to the CSMS: in order, exactly once, across any outage.

Both OCPP adapters use this loop; what differs per version is behind ``Delivery``: how a
queued event becomes a message, what to do with the answer, and which settings say how
often to retry. Why each rule:

- **Order.** Only the head row is ever in flight, and it is deleted only after its
  CALLRESULT was handled, so a StopTransaction can never overtake its Start, and the
  answer that carries the 1.6 transactionId is stored in the same SQLite transaction
  that removes the Start from the outbox.
- **Exactly once.** A row's message id is ``<store id>-<seq>``: the store's own random id
  (made once, kept in the store) and the row's sequence number, which is never reused.
  It is the same on every retry and after a restart without a write before the send, so
  a CSMS that got the message but whose answer was lost sees the same id again (the one
  retransmission the spec allows), and a kill -9 between send and answer does the same.
- **Timeouts are not refusals.** A CALL that times out is sent again under the same id
  after a pause: the message is not at fault, the link is. Its answer may still come
  during the pause (a loaded CSMS): the adapter keeps it (agent/uplink/answers.py) and
  ``until_answered`` ends the pause, and that answer completes the row without a second
  send. ``give_up_after`` timeouts in a row end the connection. Only a CALLERROR counts
  against the attempts (TransactionMessageAttempts), after which the row is dropped and
  kept in the store's dropped table for diagnostics.
- **Nothing waits on this loop.** Sessions write to the store and go on; this loop is
  woken by ``store.outbox_changed``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ocpp.exceptions import OCPPError

from agent.uplink.connection import CsmsUnresponsive

log = logging.getLogger("evsite.uplink.outbox")


class Skip(Exception):
    """Raised by ``Delivery.build``: this row is done without sending (e.g. a status
    superseded by the one sent at boot); the message says why (debug log)."""


class Drop(Exception):
    """Raised by ``Delivery.build``: this row can never be sent (e.g. its transaction's
    start was dropped); kept in the dropped table with the message as reason."""


@dataclass
class Outcome:
    """What the adapter concluded from an answer: extra data to store atomically with
    the row's removal (1.6: the transactionId of a StartTransaction)."""

    csms_tx_id: Any = None


class Delivery(Protocol):
    async def build(self, row: Any) -> Any:
        """The message payload for ``row`` (an ``ocpp`` call dataclass); may raise Skip/Drop."""

    async def send(self, payload: Any, message_id: str) -> Any:
        """Send and wait for the CALLRESULT payload; raises OCPPError for a CALLERROR,
        TimeoutError when none came in time."""

    async def handle(self, row: Any, payload: Any, result: Any) -> Outcome:
        """Act on the answer (auth verdicts, ids) before the row is removed."""

    def retry_policy(self, row: Any) -> tuple[int, float] | None:
        """(attempts, interval s) for a refused transaction message; None: not a
        transaction message, dropped at the first CALLERROR."""

    async def until_answered(self, message_id: str) -> None:
        """Optional: returns when a late answer to ``message_id`` has come, so the pause
        after a timeout ends early (``send`` then returns that answer)."""


@dataclass
class DeliveryStats:
    sent: int = 0
    retried_timeouts: int = 0
    refused: int = 0
    dropped: int = 0
    skipped: int = 0


async def _until_stored(write: Callable[[], Awaitable[Any]], sleep: Callable[[float], Awaitable[None]], what: str) -> None:
    """The CSMS has the message; only our record of that is missing. Sending it again
    would be a duplicate, so wait for the store (disk full, read-only) instead."""
    from agent.store import StoreError

    failing = False
    while True:
        try:
            await write()
        except StoreError as exc:
            if not failing:
                log.error("%s but the store cannot record it (%s): waiting for the store before sending more", what, exc)
                failing = True
            await sleep(1.0)
            continue
        if failing:
            log.warning("%s: recorded, the store works again", what)
        return


async def _pause_unless_answered(pause: Awaitable[None], delivery: Any, message_id: str) -> None:
    """The pause before a timed-out message goes again, cut short when its late answer
    comes (if the adapter can tell)."""
    until = getattr(delivery, "until_answered", None)
    if until is None:
        await pause
        return
    sleeper = asyncio.ensure_future(pause)
    answered = asyncio.ensure_future(until(message_id))
    try:
        await asyncio.wait({sleeper, answered}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (sleeper, answered):
            t.cancel()
        await asyncio.gather(sleeper, answered, return_exceptions=True)
    if answered.done() and not answered.cancelled() and answered.exception() is None:
        log.info("message %s: its late answer came during the pause", message_id)


async def message_id_prefix(store: Any) -> str:
    """This store's random id (12 hex digits), created on first use."""
    prefix = await store.kv_get("outbox.message_id_prefix")
    if not prefix:
        prefix = uuid.uuid4().hex[:12]
        await store.kv_set("outbox.message_id_prefix", prefix)
    return str(prefix)


async def deliver(store: Any, delivery: Delivery, *, sleep: Callable[[float], Awaitable[None]],
                  timeout_pause: float = 5.0, stats: DeliveryStats | None = None, give_up_after: int = 3) -> None:
    """Run until cancelled (the connection ended): drain the outbox, then wait for more.
    ``give_up_after`` CALLs in a row without an answer end the connection
    (CsmsUnresponsive): the next one starts afresh and sends the message again."""
    stats = stats or DeliveryStats()
    prefix = await message_id_prefix(store)
    silent = 0
    while True:
        store.outbox_changed.clear()
        rows = await store.outbox_head(limit=1)
        if not rows:
            await store.outbox_changed.wait()
            continue
        row = rows[0]
        try:
            payload = await delivery.build(row)
        except Skip as why:
            log.debug("outbox %d skipped: %s", row.seq, why)
            await store.outbox_done(row.seq)
            stats.skipped += 1
            continue
        except Drop as why:
            log.warning("outbox %d (%s) dropped: %s", row.seq, row.event.kind, why)
            await store.outbox_drop(row.seq, str(why))
            stats.dropped += 1
            continue
        message_id = row.message_id or f"{prefix}-{row.seq}"
        try:
            result = await delivery.send(payload, message_id)
        except (TimeoutError, asyncio.TimeoutError):
            stats.retried_timeouts += 1
            silent += 1
            if silent >= give_up_after:
                raise CsmsUnresponsive(f"the CSMS answered none of the last {silent} CALLs") from None
            log.warning("outbox %d (%s): no answer in time; sending it again with the same id", row.seq, row.event.kind)
            await _pause_unless_answered(sleep(timeout_pause), delivery, message_id)
            continue
        except OCPPError as err:
            silent = 0
            stats.refused += 1
            attempts = await store.outbox_failed_attempt(row.seq, f"{type(err).__name__}: {err}")
            policy = delivery.retry_policy(row)
            if policy is None or attempts >= policy[0]:
                log.error("outbox %d (%s) refused by the CSMS %d time(s) (%s): dropped", row.seq, row.event.kind,
                          attempts, err)
                await store.outbox_drop(row.seq, f"CALLERROR after {attempts} attempt(s): {err}")
                stats.dropped += 1
                continue
            pause = policy[1] * attempts
            log.warning("outbox %d (%s) refused by the CSMS (%s): attempt %d of %d, next in %.0f s", row.seq,
                        row.event.kind, err, attempts, policy[0], pause)
            await sleep(pause)
            continue
        silent = 0
        outcome = await delivery.handle(row, payload, result)
        await _until_stored(lambda: store.outbox_done(row.seq, csms_tx_id=outcome.csms_tx_id), sleep,
                            f"outbox {row.seq} delivered")
        stats.sent += 1
