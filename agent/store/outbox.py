"""The uplink outbox: ordered, durable, bounded.

Rows are appended by ``record()`` in the same transaction as their event and leave only
by ``outbox_done`` (delivered) or ``outbox_drop`` / overflow (moved to
``outbox_dropped`` with the reason, for diagnostics). When the outbox holds
``outbox_max`` rows, the oldest meter samples make room; transaction starts and ends
are never dropped for space: if nothing else can go, ``record()`` refuses the new event.
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiosqlite

from agent.clock import Clock
from agent.sessions.events import Event, event_from_json
from agent.store.codec import parse_time, time_text
from agent.store.db import Database, one, rows, run
from agent.store.errors import StoreError
from agent.store.records import DroppedRow, OutboxRow

log = logging.getLogger("evsite.store")

_ROW = "o.seq, e.body, o.message_id, o.attempts, o.tx_id, o.tx_seq, o.created_at, o.last_error"
_FROM = "FROM outbox o JOIN events e ON e.id = o.event_id"


class OutboxMixin:
    _db: Database
    _clock: Clock
    outbox_max: int
    outbox_changed: asyncio.Event
    _outbox_len: int
    _overflow_dropped: int       # meter samples dropped in the current overflow episode

    async def outbox_head(self, limit: int = 1) -> list[OutboxRow]:
        """The oldest ``limit`` rows, in order."""
        async with self._db.read("outbox_head") as conn:
            found = await rows(conn, f"SELECT {_ROW} {_FROM} ORDER BY o.seq LIMIT ?", (int(limit),))
        return [_outbox_row(r) for r in found]

    async def outbox_len(self) -> int:
        return self._outbox_len

    async def outbox_assign_message_id(self, seq: int, message_id: str) -> None:
        """Store the message id before the first send; retries reuse it. Assigning a
        different id to a row that has one is refused."""
        op = f"outbox_assign_message_id {seq}"
        if not isinstance(message_id, str) or not message_id:
            raise StoreError(f"{op}: message id must be a non-empty string, got {message_id!r}")
        async with self._db.write(op) as conn:
            row = await _existing(conn, seq, op, "message_id")
            if row[0] is not None and row[0] != message_id:
                raise StoreError(f"{op}: the row already has message id {row[0]!r}")
            await run(conn, "UPDATE outbox SET message_id = ? WHERE seq = ?", (message_id, seq))

    async def outbox_done(self, seq: int, *, csms_tx_id: int | str | None = None) -> None:
        """Delivered: delete the row, and store the CSMS's transaction id (1.6
        StartTransaction) on its transaction in the same SQLite transaction."""
        op = f"outbox_done {seq}"
        async with self._db.write(op) as conn:
            (tx_id,) = await _existing(conn, seq, op, "tx_id")
            if csms_tx_id is not None:
                if tx_id is None:
                    raise StoreError(f"{op}: csms_tx_id {csms_tx_id!r} given for a row outside any transaction")
                await run(conn, "UPDATE transactions SET csms_tx_id = ? WHERE tx_id = ?", (csms_tx_id, tx_id))
            await run(conn, "DELETE FROM outbox WHERE seq = ?", (seq,))
        self._outbox_len -= 1

    async def outbox_failed_attempt(self, seq: int, error: str) -> int:
        """Count a failed attempt and keep its error; returns the attempts so far."""
        op = f"outbox_failed_attempt {seq}"
        async with self._db.write(op) as conn:
            (attempts,) = await _existing(conn, seq, op, "attempts")
            await run(conn, "UPDATE outbox SET attempts = ?, last_error = ? WHERE seq = ?",
                      (attempts + 1, str(error), seq))
        return attempts + 1

    async def outbox_drop(self, seq: int, reason: str) -> None:
        """Give a row up: it moves to ``outbox_dropped`` with ``reason`` (logged)."""
        op = f"outbox_drop {seq}"
        async with self._db.write(op) as conn:
            await _existing(conn, seq, op, "seq")
            await _move_to_dropped(conn, seq, str(reason), time_text(self._clock.now()))
        self._outbox_len -= 1
        log.warning("outbox row %d dropped: %s", seq, reason)

    async def outbox_dropped(self, limit: int = 100) -> list[DroppedRow]:
        """The most recently dropped rows, newest first (diagnostics)."""
        async with self._db.read("outbox_dropped") as conn:
            found = await rows(conn, "SELECT seq, body, message_id, attempts, tx_id, tx_seq, created_at, last_error, "
                                     "reason, dropped_at FROM outbox_dropped ORDER BY dropped_at DESC, seq DESC "
                                     "LIMIT ?", (int(limit),))
        return [DroppedRow(r[0], event_from_json(json.loads(r[1])), r[2], r[3], r[4], r[5],
                           parse_time(r[6]), r[7], r[8], parse_time(r[9])) for r in found]  # type: ignore[arg-type]

    async def _outbox_append(self, conn: aiosqlite.Connection, event: Event, event_id: int, tx_id: str | None,
                             tx_seq: int | None, now: str) -> tuple[int, int]:
        """Insert the outbox row (inside ``record``'s transaction), making room first
        when full. Returns (seq, rows dropped for room)."""
        dropped = 0
        if self._outbox_len >= self.outbox_max:
            dropped = await self._make_room(conn, event, now)
        seq, _ = await run(conn, "INSERT INTO outbox (event_id, kind, tx_id, tx_seq, created_at) VALUES (?, ?, ?, ?, ?)",
                           (event_id, event.kind, tx_id, tx_seq, now))
        assert seq is not None
        return seq, dropped

    async def _make_room(self, conn: aiosqlite.Connection, event: Event, now: str) -> int:
        need = self._outbox_len - self.outbox_max + 1
        victims = [r[0] for r in await rows(conn, "SELECT seq FROM outbox WHERE kind = 'meter' ORDER BY seq LIMIT ?",
                                            (need,))]
        if len(victims) < need:
            raise StoreError(f"outbox full ({self._outbox_len} rows, limit {self.outbox_max}) and no meter samples "
                             f"left to drop: {event.kind} event not recorded")
        for seq in victims:
            await _move_to_dropped(conn, seq, "overflow", now)
        return len(victims)

    def _outbox_appended(self, dropped: int) -> None:
        """After ``record`` committed an outbox row: counts, the overflow log, the wakeup."""
        self._outbox_len += 1 - dropped
        if dropped:
            if self._overflow_dropped == 0:
                log.warning("outbox full (limit %d rows): dropping the oldest meter samples to keep transaction "
                            "messages; logged once until it has room again", self.outbox_max)
            self._overflow_dropped += dropped
        elif self._overflow_dropped and self._outbox_len < self.outbox_max:
            log.warning("outbox has room again; %d meter samples were dropped while it was full",
                        self._overflow_dropped)
            self._overflow_dropped = 0
        self.outbox_changed.set()


async def _existing(conn: aiosqlite.Connection, seq: int, op: str, column: str) -> tuple:
    row = await one(conn, f"SELECT {column} FROM outbox WHERE seq = ?", (seq,))
    if row is None:
        raise StoreError(f"{op}: no such outbox row")
    return tuple(row)


async def _move_to_dropped(conn: aiosqlite.Connection, seq: int, reason: str, now: str) -> None:
    await run(conn, "INSERT INTO outbox_dropped (seq, kind, body, tx_id, tx_seq, message_id, attempts, last_error, "
                    "created_at, reason, dropped_at) "
                    "SELECT o.seq, o.kind, e.body, o.tx_id, o.tx_seq, o.message_id, o.attempts, o.last_error, "
                    f"o.created_at, ?, ? {_FROM} WHERE o.seq = ?", (reason, now, seq))
    await run(conn, "DELETE FROM outbox WHERE seq = ?", (seq,))


def _outbox_row(r: tuple) -> OutboxRow:
    return OutboxRow(seq=r[0], event=event_from_json(json.loads(r[1])), message_id=r[2], attempts=r[3],
                     tx_id=r[4], tx_seq=r[5], created_at=parse_time(r[6]), last_error=r[7])  # type: ignore[arg-type]
