"""The one SQLite connection: opening it safely, and transactions that fail cleanly.

One aiosqlite connection in WAL mode serves the whole agent. Its statements run on
aiosqlite's thread, so a transaction spans several awaits; an ``asyncio.Lock`` keeps
transactions (and reads) of different tasks from interleaving on the connection.
``write()`` is ``BEGIN IMMEDIATE`` ... ``COMMIT``; any failure rolls back and becomes a
``StoreError`` naming the operation, so the connection stays usable (a full disk or a
read-only file fails that write, not the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiosqlite

from agent.store import schema
from agent.store.errors import StoreError, describe

log = logging.getLogger("evsite.store")

SYNCHRONOUS = {"NORMAL": 1, "FULL": 2, "EXTRA": 3}


class Database:
    def __init__(self, path: str, conn: aiosqlite.Connection, version: int) -> None:
        self.path = path
        self.version = version
        self._conn: aiosqlite.Connection | None = conn
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, synchronous: str = "FULL", busy_timeout: float = 5.0,
                   check: bool = True) -> Database:
        """Open (creating if absent) and migrate the store at ``path``; ``StoreError``
        naming the path for anything that is not a healthy evsite store of this or an
        older schema version, which is then left exactly as it was."""
        path = os.fspath(path)
        level = str(synchronous).upper()
        if level not in SYNCHRONOUS:
            raise StoreError(f"store {path}: synchronous must be one of {', '.join(SYNCHRONOUS)}, got {synchronous!r}")
        if busy_timeout < 0:
            raise StoreError(f"store {path}: busy_timeout must be >= 0 seconds, got {busy_timeout}")
        if os.path.isdir(path):
            raise StoreError(f"store {path}: is a directory, not a database file")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise StoreError(f"store {path}: cannot open (directory {parent} does not exist)")
        connecting = aiosqlite.connect(path, isolation_level=None)
        try:
            conn = await connecting
        except aiosqlite.Error as exc:
            await _reap_worker(connecting)
            raise StoreError(f"store {path}: cannot open ({describe(exc)})") from None
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            await conn.execute("PRAGMA foreign_keys = ON")
            version = await schema.inspect(conn, path, check=check)
            await _set_wal(conn, path)
            await conn.execute(f"PRAGMA synchronous = {level}")
            version = await schema.migrate(conn, path, version)
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, aiosqlite.Error):
                raise StoreError(f"store {path}: cannot open ({describe(exc)})") from None
            raise
        return cls(path, conn, version)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            async with self._lock:
                await conn.close()

    @property
    def closed(self) -> bool:
        return self._conn is None

    def _connection(self, operation: str) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreError(f"{operation}: the store is closed")
        return self._conn

    @contextlib.asynccontextmanager
    async def write(self, operation: str) -> AsyncIterator[aiosqlite.Connection]:
        """One transaction: committed when the block ends, rolled back if anything
        raises, including a cancellation at any await (BEGIN, a statement, COMMIT)."""
        async with self._lock:
            conn = self._connection(operation)
            try:
                await conn.execute("BEGIN IMMEDIATE")
                yield conn
                await conn.execute("COMMIT")
            except BaseException as exc:
                await self._rollback(conn, operation)
                if isinstance(exc, aiosqlite.Error):
                    raise StoreError(f"{operation}: {describe(exc)}") from exc
                raise

    @contextlib.asynccontextmanager
    async def read(self, operation: str) -> AsyncIterator[aiosqlite.Connection]:
        """The connection for reads, never in the middle of another task's write."""
        async with self._lock:
            conn = self._connection(operation)
            try:
                yield conn
            except aiosqlite.Error as exc:
                raise StoreError(f"{operation}: {describe(exc)}") from exc

    async def _rollback(self, conn: aiosqlite.Connection, operation: str) -> None:
        """ROLLBACK unconditionally. A cancelled await does not stop its statement on
        aiosqlite's thread, and statements run in order, so this lands behind it and the
        lock is never released with a transaction open. "No transaction is active" means
        there was nothing to undo (BEGIN failed, or a cancelled COMMIT went through)."""
        try:
            await conn.execute("ROLLBACK")
        except aiosqlite.Error as exc:
            if "no transaction is active" in str(exc):
                log.debug("%s: nothing to roll back", operation)
            else:  # the write already failed; say so, keep its error
                log.error("%s: rollback failed: %s", operation, describe(exc))


async def _reap_worker(connecting: aiosqlite.Connection) -> None:
    """After a failed connect, aiosqlite stops its worker thread without waiting; wait
    for it, so it does not report to an event loop that has gone by then."""
    thread = getattr(connecting, "_thread", None)
    if thread is not None and thread.is_alive():
        await asyncio.to_thread(thread.join, 5.0)


async def _set_wal(conn: aiosqlite.Connection, path: str) -> None:
    async with conn.execute("PRAGMA journal_mode = WAL") as cur:
        row = await cur.fetchone()
    mode = str(row[0]).lower() if row else "?"
    if mode != "wal":
        raise StoreError(f"store {path}: cannot use WAL journal mode (SQLite says {mode!r})")


async def run(conn: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> tuple[int | None, int]:
    """Execute one statement: (lastrowid, rowcount)."""
    async with conn.execute(sql, tuple(params)) as cur:
        return cur.lastrowid, cur.rowcount


async def rows(conn: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> list[Any]:
    async with conn.execute(sql, tuple(params)) as cur:
        return list(await cur.fetchall())


async def one(conn: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> Any:
    async with conn.execute(sql, tuple(params)) as cur:
        return await cur.fetchone()
