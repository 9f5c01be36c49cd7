"""The Local Authorization List and the authorization cache in SQLite: the
``agent.auth.store.AuthStore`` protocol. ``list_replace`` and ``list_update`` are one
transaction each, so a failed SendLocalList never leaves half a list."""

from __future__ import annotations

from collections.abc import Sequence

from agent.auth.types import AuthEntry
from agent.store.codec import AUTH_COLUMNS, auth_entry, auth_row
from agent.store.db import Database, one, rows, run

_INSERT = "INSERT OR REPLACE INTO {table} (key, id_tag, status, expiry, parent, stored_at, last_used) " \
          "VALUES (?, ?, ?, ?, ?, ?, ?)"


class AuthMixin:
    _db: Database

    async def list_version(self) -> int:
        async with self._db.read("list_version") as conn:
            row = await one(conn, "SELECT version FROM auth_list_version WHERE id = 1")
        return 0 if row is None else int(row[0])

    async def list_count(self) -> int:
        return await self._count("auth_list")

    async def list_get(self, key: str) -> AuthEntry | None:
        return await self._get("auth_list", key)

    async def list_replace(self, version: int, entries: Sequence[AuthEntry]) -> None:
        values = [auth_row(e) for e in entries]          # bad entries refused before writing
        async with self._db.write(f"list_replace version {version}") as conn:
            await run(conn, "DELETE FROM auth_list")
            await conn.executemany(_INSERT.format(table="auth_list"), values)
            await _set_version(conn, version)

    async def list_update(self, version: int, upserts: Sequence[AuthEntry], removals: Sequence[str]) -> None:
        values = [auth_row(e) for e in upserts]
        async with self._db.write(f"list_update version {version}") as conn:
            await conn.executemany("DELETE FROM auth_list WHERE key = ?", [(k,) for k in removals])
            await conn.executemany(_INSERT.format(table="auth_list"), values)
            await _set_version(conn, version)

    async def cache_get(self, key: str) -> AuthEntry | None:
        return await self._get("auth_cache", key)

    async def cache_put(self, entry: AuthEntry) -> None:
        value = auth_row(entry)
        async with self._db.write("cache_put") as conn:
            await run(conn, _INSERT.format(table="auth_cache"), value)

    async def cache_remove(self, keys: Sequence[str]) -> None:
        async with self._db.write("cache_remove") as conn:
            await conn.executemany("DELETE FROM auth_cache WHERE key = ?", [(k,) for k in keys])

    async def cache_count(self) -> int:
        return await self._count("auth_cache")

    async def cache_entries(self) -> list[AuthEntry]:
        async with self._db.read("cache_entries") as conn:
            found = await rows(conn, f"SELECT {AUTH_COLUMNS} FROM auth_cache ORDER BY key")
        return [auth_entry(r) for r in found]

    async def cache_clear(self) -> None:
        async with self._db.write("cache_clear") as conn:
            await run(conn, "DELETE FROM auth_cache")

    async def _count(self, table: str) -> int:
        async with self._db.read(f"{table} count") as conn:
            (n,) = await one(conn, f"SELECT count(*) FROM {table}")
        return int(n)

    async def _get(self, table: str, key: str) -> AuthEntry | None:
        async with self._db.read(f"{table} get") as conn:
            row = await one(conn, f"SELECT {AUTH_COLUMNS} FROM {table} WHERE key = ?", (key,))
        return None if row is None else auth_entry(row)


async def _set_version(conn, version: int) -> None:
    await run(conn, "INSERT OR REPLACE INTO auth_list_version (id, version) VALUES (1, ?)", (int(version),))
