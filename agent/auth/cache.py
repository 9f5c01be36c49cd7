"""The authorization cache: the CSMS's last word on every tag it was asked about.

Filled from every IdTagInfo the CSMS sends (Authorize, and the adapters pass on
Start/StopTransaction and TransactionEvent answers), whatever the status: a Blocked
answer cached is what refuses that card while offline. Tags on the Local Authorization
List are not cached; the list has priority and must not be shadowed by a stale copy.

Bounded: when full, entries that can no longer authorize (not Accepted, or expired)
go first, then the least recently used. With a lifetime (2.0.1 AuthCacheLifeTime) an
entry older than that is dropped when it is looked up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from agent.auth.store import AuthStore
from agent.auth.types import AuthEntry, AuthPolicy, AuthResult, AuthStatus, tag_key
from agent.clock import Clock

_NEVER = datetime.min.replace(tzinfo=timezone.utc)


class AuthCache:
    def __init__(self, store: AuthStore, policy: Callable[[], AuthPolicy], clock: Clock) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock

    async def get(self, id_tag: str) -> AuthEntry | None:
        """The cached entry as of now (Accepted past its expiry reads Expired, and is
        stored so), None when absent, outlived, or the cache is disabled."""
        p = self.policy()
        if not p.authorization_cache_enabled:
            return None
        entry = await self.store.cache_get(tag_key(id_tag))
        if entry is None:
            return None
        now = self.clock.now()
        if p.cache_lifetime is not None and entry.stored_at is not None:
            if now - entry.stored_at > timedelta(seconds=p.cache_lifetime):
                await self.store.cache_remove([entry.key])
                return None
        current = replace(entry.effective(now), last_used=now)
        await self.store.cache_put(current)
        return current

    async def put(self, id_tag: str, result: AuthResult) -> None:
        """Remember the CSMS's answer for ``id_tag`` (no-op when the cache is disabled)."""
        p = self.policy()
        if not p.authorization_cache_enabled:
            return
        now = self.clock.now()
        entry = AuthEntry(id_tag, result.status, result.expiry, result.parent, stored_at=now, last_used=now)
        existing = await self.store.cache_get(entry.key)
        if existing is None and await self.store.cache_count() >= p.cache_max_entries:
            await self._evict(await self.store.cache_count() - p.cache_max_entries + 1, now)
        await self.store.cache_put(entry)

    async def clear(self) -> bool:
        """ClearCache: False (answer Rejected) when the cache is disabled."""
        if not self.policy().authorization_cache_enabled:
            return False
        await self.store.cache_clear()
        return True

    async def _evict(self, count: int, now: datetime) -> None:
        def rank(e: AuthEntry) -> tuple[int, datetime]:
            useless = e.effective(now).status is not AuthStatus.ACCEPTED
            used = e.last_used or e.stored_at
            return (0 if useless else 1, used or _NEVER)

        victims = sorted(await self.store.cache_entries(), key=rank)[:count]
        await self.store.cache_remove([e.key for e in victims])
