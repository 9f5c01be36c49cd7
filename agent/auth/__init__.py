"""Authorization, version-neutral: the Local Authorization List, the cache, and the
offline policy, behind one ``Authorizer.authorize(id_tag) -> AuthResult``."""

from agent.auth.authorizer import Authorizer, OnlineAuthorize
from agent.auth.cache import AuthCache
from agent.auth.local_list import ListUpdateOutcome, LocalList
from agent.auth.store import AuthStore, MemoryAuthStore
from agent.auth.types import (
    AuthEntry, AuthPolicy, AuthResult, AuthSource, AuthStatus, ListItem, OfflineError,
    UpdateStatus, UpdateType, tag_key,
)

__all__ = [
    "AuthCache", "AuthEntry", "AuthPolicy", "AuthResult", "AuthSource", "AuthStatus", "AuthStore",
    "Authorizer", "ListItem", "ListUpdateOutcome", "LocalList", "MemoryAuthStore", "OfflineError",
    "OnlineAuthorize", "UpdateStatus", "UpdateType", "tag_key",
]
