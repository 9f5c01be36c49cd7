"""May this tag charge? The one place that answers, for both OCPP versions.

Online, the CSMS decides (Authorize), unless LocalPreAuthorize lets a valid list or
cache entry start the session at once. Offline (no uplink, or the Authorize call timed
out), the decision is local:

1. a tag the list or cache knows as not Accepted (Blocked, Expired, Invalid, or
   Accepted past its expiry) is refused, whatever the other settings: the site never
   grants offline what the CSMS refused;
2. a tag they know as Accepted is accepted when LocalAuthorizeOffline is true;
3. anything else (unknown, or known-good with LocalAuthorizeOffline false) is treated
   as unknown: accepted when AllowOfflineTxForUnknownId is true, else refused with
   status Unknown.

The list is consulted before the cache; a disabled list or cache is not consulted.
Every answer the CSMS gives refreshes the cache (tags on the list excepted).

Stopping: the tag that started a session may always stop it; another tag may when it
is authorized and shares the session's parent (1.6 parentIdTag, 2.0.1 groupIdToken).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from websockets.exceptions import ConnectionClosed

from agent.auth.cache import AuthCache
from agent.auth.local_list import LocalList
from agent.auth.store import AuthStore
from agent.auth.types import AuthEntry, AuthPolicy, AuthResult, AuthSource, AuthStatus, OfflineError, tag_key
from agent.clock import Clock, SystemClock

log = logging.getLogger("evsite.auth")

OnlineAuthorize = Callable[[str], Awaitable[AuthResult]]
#: what an online Authorize may raise when the CSMS cannot answer; websockets'
#: ConnectionClosed (a connection closing under the call) is not a ConnectionError
OFFLINE_ERRORS = (OfflineError, ConnectionError, TimeoutError, asyncio.TimeoutError, ConnectionClosed)


class Authorizer:
    """Implements the sessions' ``Authorizer.authorize(id_tag) -> AuthResult``.

    ``online(id_tag)`` is the adapter's Authorize call (it raises OfflineError,
    ConnectionError or TimeoutError when the CSMS cannot answer); ``is_online()`` tells
    whether to try it at all. ``policy`` is an AuthPolicy or a callable returning the
    current one, so a ChangeConfiguration applies to the next decision.
    ``on_list_conflict(id_tag, list_entry, online_result)`` is called when the CSMS
    contradicts the local list (1.6: report LocalListConflict).
    """

    def __init__(
        self,
        store: AuthStore,
        *,
        online: OnlineAuthorize | None = None,
        is_online: Callable[[], bool] | None = None,
        policy: AuthPolicy | Callable[[], AuthPolicy] | None = None,
        clock: Clock | None = None,
        on_list_conflict: Callable[[str, AuthEntry, AuthResult], object] | None = None,
    ) -> None:
        if policy is None:
            policy = AuthPolicy()
        self.policy: Callable[[], AuthPolicy] = policy if callable(policy) else (lambda p=policy: p)
        self.clock = clock or SystemClock()
        self.online = online
        self.is_online = is_online or (lambda: online is not None)
        self.on_list_conflict = on_list_conflict
        self.local_list = LocalList(store, self.policy)
        self.cache = AuthCache(store, self.policy, self.clock)

    async def authorize(self, id_tag: str) -> AuthResult:
        p = self.policy()
        listed = await self.local_list.get(id_tag)
        listed = listed.effective(self.clock.now()) if listed else None
        cached = None if listed else await self.cache.get(id_tag)
        known = listed or cached
        known_source = AuthSource.LOCAL_LIST if listed else AuthSource.CACHE

        if self.online is not None and self.is_online():
            if p.local_pre_authorize and known is not None and known.status is AuthStatus.ACCEPTED:
                return known.result(known_source)
            try:
                result = await self.online(id_tag)
            except OFFLINE_ERRORS as exc:
                log.info("authorize %s: the CSMS did not answer (%s); deciding offline", _show(id_tag), exc or type(exc).__name__)
            else:
                result = replace(result, source=AuthSource.ONLINE)
                await self.record(id_tag, result)
                if listed is not None and listed.status is not result.status and self.on_list_conflict:
                    self.on_list_conflict(id_tag, listed, result)
                return result
        return self._offline(known, known_source, p)

    async def record(self, id_tag: str, result: AuthResult) -> None:
        """An IdTagInfo/IdTokenInfo from the CSMS (Authorize, StartTransaction,
        StopTransaction, TransactionEvent answers): refresh the cache with it."""
        if await self.local_list.get(id_tag) is None:
            await self.cache.put(id_tag, result)

    async def authorize_stop(self, presented: str, *, started_by: str, started_parent: str | None) -> AuthResult:
        """May ``presented`` stop the session ``started_by`` started? ``accepted`` says."""
        if tag_key(presented) == tag_key(started_by):
            return AuthResult(AuthStatus.ACCEPTED, parent_id_tag=started_parent, group=started_parent, source=AuthSource.SAME_TAG)
        result = await self.authorize(presented)
        if not result.accepted:
            return result
        if started_parent and result.parent and tag_key(started_parent) == tag_key(result.parent):
            return result
        # a valid card, but not of this session's group
        return replace(result, status=AuthStatus.INVALID)

    def _offline(self, known: AuthEntry | None, source: AuthSource, p: AuthPolicy) -> AuthResult:
        if known is not None and known.status is not AuthStatus.ACCEPTED:
            return known.result(source)
        if known is not None and p.local_authorize_offline:
            return known.result(source)
        if p.allow_offline_tx_for_unknown_id:
            return AuthResult(AuthStatus.ACCEPTED, source=AuthSource.OFFLINE_UNKNOWN)
        return AuthResult(AuthStatus.UNKNOWN, source=AuthSource.OFFLINE_REFUSED)


def _show(tag: str) -> str:
    """Tags are personal data in some deployments: log a recognisable stub only."""
    return tag if len(tag) <= 4 else tag[:4] + "…"
