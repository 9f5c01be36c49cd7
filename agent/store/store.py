"""``Store``: the agent's durable memory in one SQLite file.

Opened once by the supervisor and closed last. The pieces live in their own modules
(``events_log``: events and transactions; ``outbox``: delivery queue; ``auth``: the
``AuthStore`` protocol; ``state``: key/values, settings, profiles, reservations); this
class joins them over one ``Database`` and adds opening, closing and diagnostics.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from agent.clock import Clock
from agent.store.auth import AuthMixin
from agent.store.db import Database, one
from agent.store.errors import StoreError
from agent.store.events_log import EventLogMixin
from agent.store.outbox import OutboxMixin
from agent.store.state import StateMixin

TABLES = ("events", "transactions", "outbox", "outbox_dropped", "kv", "settings", "charging_profiles",
          "reservations", "auth_list", "auth_cache")


class Store(EventLogMixin, OutboxMixin, AuthMixin, StateMixin):
    def __init__(self, db: Database, clock: Clock, outbox_max: int, outbox_len: int) -> None:
        self._db = db
        self._clock = clock
        self.outbox_max = outbox_max
        self._outbox_len = outbox_len
        self._overflow_dropped = 0
        #: set by ``record()`` whenever it adds an outbox row; the delivery loop clears it
        self.outbox_changed = asyncio.Event()
        if outbox_len:
            self.outbox_changed.set()

    @classmethod
    async def open(cls, path: str | os.PathLike[str], clock: Clock, *, synchronous: str = "FULL",
                   outbox_max: int = 100_000, busy_timeout: float = 5.0, check: bool = True) -> Store:
        """Open or create the store at ``path`` and bring its schema up to date.

        ``synchronous`` FULL survives power loss, NORMAL only a crashed process;
        ``busy_timeout`` seconds to wait for a lock another process holds; ``check``
        runs SQLite's quick_check first (reads the whole file once). A file that is not
        a healthy evsite store this version understands is refused with ``StoreError``
        naming the path, and left untouched.
        """
        if not isinstance(outbox_max, int) or isinstance(outbox_max, bool) or outbox_max < 1:
            raise StoreError(f"store {os.fspath(path)}: outbox_max must be an integer >= 1, got {outbox_max!r}")
        db = await Database.open(path, synchronous=synchronous, busy_timeout=busy_timeout, check=check)
        try:
            async with db.read("open: count outbox") as conn:
                (n,) = await one(conn, "SELECT count(*) FROM outbox")
        except BaseException:
            await db.close()
            raise
        return cls(db, clock, outbox_max, int(n))

    async def close(self) -> None:
        """Close the connection (idempotent); later calls raise ``StoreError``."""
        await self._db.close()

    @property
    def path(self) -> str:
        return self._db.path

    @property
    def closed(self) -> bool:
        return self._db.closed

    async def stats(self) -> dict[str, Any]:
        """Diagnostics: schema version, file sizes, row counts per table."""
        counts: dict[str, int] = {}
        async with self._db.read("stats") as conn:
            for table in TABLES:
                (counts[table],) = await one(conn, f"SELECT count(*) FROM {table}")
            (version,) = await one(conn, "PRAGMA user_version")
            (pages,) = await one(conn, "PRAGMA page_count")
            (free,) = await one(conn, "PRAGMA freelist_count")
        return {
            "path": self.path,
            "schema_version": version,
            "file_bytes": _size(self.path),
            "wal_bytes": _size(self.path + "-wal"),
            "pages": pages,
            "free_pages": free,
            "outbox_max": self.outbox_max,
            "rows": counts,
        }


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
