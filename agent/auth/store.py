"""Where the Local Authorization List and the cache live: a small protocol.

The real implementation is the SQLite store (agent/store), which must make
``list_replace`` and ``list_update`` one transaction each, so a refused or interrupted
SendLocalList never leaves half a list. ``MemoryAuthStore`` implements the same
protocol for tests and for a store-less agent. Keys are ``tag_key(id_tag)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from agent.auth.types import AuthEntry


class AuthStore(Protocol):
    async def list_version(self) -> int:
        """The version of the stored list as last set (0 before any)."""

    async def list_count(self) -> int: ...

    async def list_get(self, key: str) -> AuthEntry | None: ...

    async def list_replace(self, version: int, entries: Sequence[AuthEntry]) -> None:
        """Replace the whole list and its version, atomically."""

    async def list_update(self, version: int, upserts: Sequence[AuthEntry], removals: Sequence[str]) -> None:
        """Insert or replace ``upserts``, delete the ``removals`` keys, set the version; atomically."""

    async def cache_get(self, key: str) -> AuthEntry | None: ...

    async def cache_put(self, entry: AuthEntry) -> None:
        """Insert or replace by ``entry.key``."""

    async def cache_remove(self, keys: Sequence[str]) -> None: ...

    async def cache_count(self) -> int: ...

    async def cache_entries(self) -> list[AuthEntry]:
        """Every cache entry (only read when the cache is full and must evict)."""

    async def cache_clear(self) -> None: ...


class MemoryAuthStore:
    """AuthStore in dictionaries: for tests, and until the SQLite store is wired in."""

    def __init__(self) -> None:
        self._list: dict[str, AuthEntry] = {}
        self._version = 0
        self._cache: dict[str, AuthEntry] = {}

    async def list_version(self) -> int:
        return self._version

    async def list_count(self) -> int:
        return len(self._list)

    async def list_get(self, key: str) -> AuthEntry | None:
        return self._list.get(key)

    async def list_replace(self, version: int, entries: Sequence[AuthEntry]) -> None:
        self._list = {e.key: e for e in entries}
        self._version = version

    async def list_update(self, version: int, upserts: Sequence[AuthEntry], removals: Sequence[str]) -> None:
        for key in removals:
            self._list.pop(key, None)
        for e in upserts:
            self._list[e.key] = e
        self._version = version

    async def cache_get(self, key: str) -> AuthEntry | None:
        return self._cache.get(key)

    async def cache_put(self, entry: AuthEntry) -> None:
        self._cache[entry.key] = entry

    async def cache_remove(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._cache.pop(key, None)

    async def cache_count(self) -> int:
        return len(self._cache)

    async def cache_entries(self) -> list[AuthEntry]:
        return list(self._cache.values())

    async def cache_clear(self) -> None:
        self._cache.clear()
