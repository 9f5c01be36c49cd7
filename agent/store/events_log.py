"""Recording events: the event row, the transaction it belongs to, its outbox row.

``record()`` is the store's central promise: one SQLite transaction writes the event,
keeps the ``transactions`` table in step (started -> open, ended -> ended, meter
samples -> last energy register) and appends the outbox row, numbering the
transaction's outbox rows (``tx_seq``: 0 for the start, then 1, 2, ...). Either all of
it is on disk when ``record()`` returns, or none of it is.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import aiosqlite

from agent.clock import Clock
from agent.sessions.events import (
    Event, MeterSampled, StatusChanged, StopReason, TransactionEnded, TransactionStarted, event_from_json,
)
from agent.store.codec import json_text, parse_time, time_text
from agent.store.db import Database, one, rows, run
from agent.store.errors import StoreError
from agent.store.records import TxRecord

log = logging.getLogger("evsite.store")

ENERGY_REGISTER = "Energy.Active.Import.Register"
_TX_COLUMNS = ("tx_id, connector_id, id_tag, meter_start_wh, started_at, state, meter_stop_wh, ended_at, reason, "
               "csms_tx_id, last_meter_wh, next_tx_seq")


class EventLogMixin:
    _db: Database
    _clock: Clock

    async def record(self, event: Event, outbox: bool = True) -> int | None:
        """Write ``event`` (and its outbox row when ``outbox``) durably; returns the
        outbox seq, or None without an outbox row. Refused with ``StoreError``, writing
        nothing: a second start of a transaction, events of a transaction that was
        never started or has ended, a full outbox with no meter samples to drop."""
        if not isinstance(event, Event):
            raise StoreError(f"record: expected an event, got {type(event).__name__}")
        op = f"record {event.kind}"
        at = time_text(event.at, f"{op} at")
        try:
            body = json_text(event.to_json(), op)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{op}: event not storable ({exc})") from None
        tx_id = getattr(event, "tx_id", None)
        now = time_text(self._clock.now())
        seq: int | None = None
        dropped = 0
        async with self._db.write(op) as conn:
            tx_seq = await self._track_transaction(conn, event, tx_id, outbox, at, op)
            event_id, _ = await run(conn, "INSERT INTO events (kind, connector_id, tx_id, at, body, created_at) "
                                          "VALUES (?, ?, ?, ?, ?, ?)",
                                    (event.kind, event.connector_id, tx_id, at, body, now))
            if outbox:
                assert event_id is not None
                seq, dropped = await self._outbox_append(conn, event, event_id, tx_id, tx_seq, now)  # type: ignore[attr-defined]
        if outbox:
            self._outbox_appended(dropped)  # type: ignore[attr-defined]
        return seq

    async def _track_transaction(self, conn: aiosqlite.Connection, event: Event, tx_id: str | None, outbox: bool,
                                 at: str, op: str) -> int | None:
        """Keep ``transactions`` in step with ``event``; the event's tx_seq (None when
        it gets no outbox row or belongs to no transaction)."""
        if tx_id is None:
            return None
        if not isinstance(tx_id, str) or not tx_id:
            raise StoreError(f"{op}: tx_id must be a non-empty string, got {tx_id!r}")
        found = await one(conn, "SELECT state, next_tx_seq FROM transactions WHERE tx_id = ?", (tx_id,))
        if isinstance(event, TransactionStarted):
            if found is not None:
                raise StoreError(f"{op}: transaction {tx_id} was already started")
            await run(conn, "INSERT INTO transactions (tx_id, connector_id, id_tag, meter_start_wh, started_at, "
                            "next_tx_seq) VALUES (?, ?, ?, ?, ?, ?)",
                      (tx_id, event.connector_id, event.id_tag, event.meter_start_wh, at, 1 if outbox else 0))
            return 0 if outbox else None
        if found is None:
            raise StoreError(f"{op}: transaction {tx_id} was never started")
        state, next_seq = found
        if state != "open":
            raise StoreError(f"{op}: transaction {tx_id} has already ended")
        if isinstance(event, TransactionEnded):
            await run(conn, "UPDATE transactions SET state = 'ended', meter_stop_wh = ?, ended_at = ?, reason = ? "
                            "WHERE tx_id = ?", (event.meter_stop_wh, at, StopReason(event.reason).value, tx_id))
        elif isinstance(event, MeterSampled):
            wh = energy_register_wh(event)
            if wh is not None:
                await run(conn, "UPDATE transactions SET last_meter_wh = ? WHERE tx_id = ?", (wh, tx_id))
        if not outbox:
            return None
        await run(conn, "UPDATE transactions SET next_tx_seq = ? WHERE tx_id = ?", (next_seq + 1, tx_id))
        return int(next_seq)

    async def transaction(self, tx_id: str) -> TxRecord | None:
        async with self._db.read("transaction") as conn:
            row = await one(conn, f"SELECT {_TX_COLUMNS} FROM transactions WHERE tx_id = ?", (tx_id,))
        return None if row is None else _tx_record(row)

    async def open_transactions(self) -> list[TxRecord]:
        """Transactions started and not ended, oldest first (restart recovery)."""
        async with self._db.read("open_transactions") as conn:
            found = await rows(conn, f"SELECT {_TX_COLUMNS} FROM transactions WHERE state = 'open' "
                                     "ORDER BY started_at, rowid")
        return [_tx_record(r) for r in found]

    async def last_status(self) -> dict[int, StatusChanged]:
        """The latest recorded status of each connector (0 = the station)."""
        async with self._db.read("last_status") as conn:
            found = await rows(conn, "SELECT connector_id, body FROM events WHERE id IN "
                                     "(SELECT max(id) FROM events WHERE kind = 'status' GROUP BY connector_id)")
        return {cid: event_from_json(json.loads(body)) for cid, body in found}  # type: ignore[misc]

    async def tx_events(self, tx_id: str) -> list[Event]:
        """Every stored event of a transaction, in the order recorded."""
        async with self._db.read("tx_events") as conn:
            found = await rows(conn, "SELECT body FROM events WHERE tx_id = ? ORDER BY id", (tx_id,))
        return [event_from_json(json.loads(b)) for (b,) in found]

    async def tx_samples(self, tx_id: str, *, contexts: tuple[str, ...] = ("Sample.Periodic", "Sample.Clock"),
                         limit: int | None = None) -> list[MeterSampled]:
        """The meter samples recorded inside transaction ``tx_id`` whose context is one
        of ``contexts``, oldest first. With ``limit``, at most that many, spread evenly
        over the transaction with its first and last sample always kept: a StopTransaction
        of a day-long transaction must stay a bounded message, and an even spread keeps
        the shape of its curve where "the newest N" would keep only its end.

        Only the chosen rows are decoded (the choice reads ids and contexts), so a long
        transaction costs one index scan, not thousands of JSON parses per send."""
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise StoreError(f"tx_samples: limit must be an integer >= 1 or None, got {limit!r}")
        wanted = set(contexts)
        async with self._db.read("tx_samples") as conn:
            found = await rows(conn, "SELECT id, json_extract(body, '$.context') FROM events "
                                     "WHERE tx_id = ? AND kind = 'meter' ORDER BY at, id", (tx_id,))
            ids = [i for i, ctx in found if ctx in wanted]
            ids = spread(ids, limit)
            bodies: list[Any] = []
            for start in range(0, len(ids), 500):   # SQLite caps the parameters of one statement
                chunk = ids[start:start + 500]
                bodies += await rows(conn, f"SELECT body FROM events WHERE id IN ({','.join('?' * len(chunk))}) "
                                           "ORDER BY at, id", chunk)
        return [event_from_json(json.loads(b)) for (b,) in bodies]  # type: ignore[misc]

    async def samples(self, *, connector_id: int | None = None, since: object = None,
                      limit: int | None = None) -> list[MeterSampled]:
        """Stored meter samples (with or without an outbox row), oldest first;
        ``since`` is an aware datetime."""
        where, params = ["kind = 'meter'"], []
        if connector_id is not None:
            where.append("connector_id = ?")
            params.append(connector_id)
        if since is not None:
            where.append("at >= ?")
            params.append(time_text(since, "samples since"))  # type: ignore[arg-type]
        sql = f"SELECT body FROM events WHERE {' AND '.join(where)} ORDER BY at, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        async with self._db.read("samples") as conn:
            found = await rows(conn, sql, params)
        return [event_from_json(json.loads(b)) for (b,) in found]  # type: ignore[misc]

    async def prune(self, older_than_days: float) -> int:
        """Delete meter samples older than ``older_than_days`` that the outbox does not
        still hold; returns how many went. Other events are kept."""
        if older_than_days < 0:
            raise StoreError(f"prune: older_than_days must be >= 0, got {older_than_days}")
        cutoff = time_text(self._clock.now() - timedelta(days=older_than_days))
        async with self._db.write("prune") as conn:
            _, count = await run(conn, "DELETE FROM events WHERE kind = 'meter' AND at < ? AND NOT EXISTS "
                                       "(SELECT 1 FROM outbox o WHERE o.event_id = events.id)", (cutoff,))
        if count:
            log.info("store: pruned %d meter samples older than %g days", count, older_than_days)
        return count


def spread(items: list[Any], limit: int | None) -> list[Any]:
    """At most ``limit`` of ``items``, evenly spaced, the first and the last kept."""
    n = len(items)
    if limit is None or n <= limit:
        return list(items)
    if limit == 1:
        return [items[-1]]
    return [items[round(i * (n - 1) / (limit - 1))] for i in range(limit)]


def energy_register_wh(event: MeterSampled) -> float | None:
    """The total (phase-less) import energy register of a sample, in Wh, if present."""
    for v in event.values:
        if v.measurand == ENERGY_REGISTER and v.phase is None:
            if v.unit == "Wh":
                return float(v.value)
            if v.unit == "kWh":
                return float(v.value) * 1000.0
    return None


def _tx_record(r: tuple) -> TxRecord:
    return TxRecord(tx_id=r[0], connector_id=r[1], id_tag=r[2], meter_start_wh=r[3],
                    started_at=parse_time(r[4]), state=r[5], meter_stop_wh=r[6],  # type: ignore[arg-type]
                    ended_at=parse_time(r[7]), reason=None if r[8] is None else StopReason(r[8]),
                    csms_tx_id=r[9], last_meter_wh=r[10], next_tx_seq=r[11])
