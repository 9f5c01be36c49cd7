"""The words of authorization, shared by both OCPP versions.

1.6 says idTag / IdTagInfo / parentIdTag; 2.0.1 says idToken / IdTokenInfo /
groupIdToken. The agent uses one vocabulary (a tag, an AuthResult, a parent) and the
adapters translate at the edge. Tags compare case-insensitively, as both versions
require (IdToken / CiString).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime


class AuthStatus(enum.StrEnum):
    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    EXPIRED = "Expired"
    INVALID = "Invalid"
    CONCURRENT_TX = "ConcurrentTx"
    # 2.0.1 only
    NO_CREDIT = "NoCredit"
    NOT_ALLOWED_TYPE_EVSE = "NotAllowedTypeEVSE"
    NOT_AT_THIS_LOCATION = "NotAtThisLocation"
    NOT_AT_THIS_TIME = "NotAtThisTime"
    UNKNOWN = "Unknown"   # also: offline, not in list or cache, and unknown tags not allowed


class AuthSource(enum.StrEnum):
    """Where a decision came from: for logs, the status API and tests."""

    ONLINE = "online"                    # the CSMS answered Authorize
    LOCAL_LIST = "local_list"
    CACHE = "cache"
    OFFLINE_UNKNOWN = "offline_unknown"  # offline, accepted by AllowOfflineTxForUnknownId
    OFFLINE_REFUSED = "offline_refused"  # offline, nothing allowed it
    SAME_TAG = "same_tag"                # stopping with the tag that started


class UpdateType(enum.StrEnum):
    FULL = "Full"
    DIFFERENTIAL = "Differential"


class UpdateStatus(enum.StrEnum):
    ACCEPTED = "Accepted"
    FAILED = "Failed"
    NOT_SUPPORTED = "NotSupported"       # 1.6 only; the 2.0.1 adapter answers Failed
    VERSION_MISMATCH = "VersionMismatch"


class OfflineError(ConnectionError):
    """Raised by an online-authorize callable when there is no usable uplink."""


def tag_key(tag: str) -> str:
    """The comparison key of a tag: OCPP idTags are case-insensitive."""
    return tag.casefold()


@dataclass(frozen=True)
class AuthResult:
    """The answer to "may this tag charge?" (the sessions' ``Authorizer`` contract)."""

    status: AuthStatus
    parent_id_tag: str | None = None     # 1.6 parentIdTag
    expiry: datetime | None = None
    group: str | None = None             # 2.0.1 groupIdToken
    source: AuthSource = AuthSource.ONLINE

    @property
    def accepted(self) -> bool:
        return self.status is AuthStatus.ACCEPTED

    @property
    def parent(self) -> str | None:
        """The group key either version gave: parentIdTag or groupIdToken."""
        return self.parent_id_tag or self.group


@dataclass(frozen=True)
class AuthEntry:
    """One Local Authorization List or cache record (an IdTagInfo with its tag)."""

    id_tag: str
    status: AuthStatus
    expiry: datetime | None = None
    parent: str | None = None
    stored_at: datetime | None = None    # cache: when the CSMS's answer was stored
    last_used: datetime | None = None    # cache: for least-recently-used eviction

    @property
    def key(self) -> str:
        return tag_key(self.id_tag)

    def effective(self, now: datetime) -> AuthEntry:
        """This entry as of ``now``: an Accepted entry past its expiry is Expired."""
        if self.status is AuthStatus.ACCEPTED and self.expiry is not None and self.expiry <= now:
            return replace(self, status=AuthStatus.EXPIRED)
        return self

    def result(self, source: AuthSource) -> AuthResult:
        return AuthResult(self.status, parent_id_tag=self.parent, expiry=self.expiry, group=self.parent, source=source)


@dataclass(frozen=True)
class ListItem:
    """One entry of a SendLocalList request; ``status`` None means no IdTagInfo
    (in a differential update: remove the tag)."""

    id_tag: str
    status: AuthStatus | None = None
    expiry: datetime | None = None
    parent: str | None = None


@dataclass(frozen=True)
class AuthPolicy:
    """The settings that steer authorization, by their 1.6 key names.

    2.0.1 equivalents: AuthCtrlr.LocalAuthorizeOffline / LocalPreAuthorize /
    OfflineTxForUnknownIdEnabled, AuthCacheCtrlr.Enabled / LifeTime / Storage,
    LocalAuthListCtrlr.Enabled / Entries / ItemsPerMessage.
    """

    local_authorize_offline: bool = True
    local_pre_authorize: bool = False
    allow_offline_tx_for_unknown_id: bool = False
    authorization_cache_enabled: bool = True
    local_auth_list_enabled: bool = True
    local_auth_list_max_length: int = 10_000    # LocalAuthListMaxLength
    send_local_list_max_length: int = 1_000     # SendLocalListMaxLength
    cache_max_entries: int = 1_000
    cache_lifetime: float | None = None         # seconds an entry stays valid (2.0.1 AuthCacheLifeTime)

    def __post_init__(self) -> None:
        for name in ("local_auth_list_max_length", "send_local_list_max_length", "cache_max_entries"):
            if getattr(self, name) < 1:
                raise ValueError(f"auth policy {name} must be >= 1, got {getattr(self, name)}")
        if self.cache_lifetime is not None and self.cache_lifetime <= 0:
            raise ValueError(f"auth policy cache_lifetime must be > 0 seconds or None, got {self.cache_lifetime}")
