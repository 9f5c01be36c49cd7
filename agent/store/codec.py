"""How values become columns and back: times, JSON, authorization entries.

Store columns hold times as fixed-width UTC text with microseconds
(``2026-01-01T12:00:00.000000Z``): SQL can compare them as text (pruning by age), and
an ``AuthEntry`` comes back exactly as it went in. Event bodies are the events' own JSON
(``Event.to_json()``), so the outbox rebuilds the same event after a restart.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from agent.auth.types import AuthEntry, AuthStatus
from agent.store.errors import StoreError

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def time_text(dt: datetime, what: str = "time") -> str:
    """Fixed-width UTC text of an aware datetime; a naive one is refused, naming ``what``."""
    if not isinstance(dt, datetime):
        raise StoreError(f"{what}: expected a datetime, got {type(dt).__name__}")
    if dt.tzinfo is None:
        raise StoreError(f"{what}: naive datetime {dt!r}; the store only keeps timezone-aware times")
    return dt.astimezone(timezone.utc).strftime(_TIME_FORMAT)


def parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=timezone.utc)


def json_text(value: Any, what: str) -> str:
    """Compact JSON, or a ``StoreError`` naming ``what`` could not be stored."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what}: not storable as JSON ({exc})") from None


def auth_row(entry: AuthEntry) -> tuple[Any, ...]:
    """(key, id_tag, status, expiry, parent, stored_at, last_used) of an entry."""
    if not isinstance(entry, AuthEntry):
        raise StoreError(f"auth entry: expected AuthEntry, got {type(entry).__name__}")
    where = f"auth entry {entry.id_tag!r}"

    def opt_time(name: str) -> str | None:
        value = getattr(entry, name)
        return None if value is None else time_text(value, f"{where} {name}")

    return (entry.key, entry.id_tag, AuthStatus(entry.status).value, opt_time("expiry"), entry.parent,
            opt_time("stored_at"), opt_time("last_used"))


AUTH_COLUMNS = "id_tag, status, expiry, parent, stored_at, last_used"


def auth_entry(row: Any) -> AuthEntry:
    """The entry of a row selected as ``AUTH_COLUMNS``."""
    id_tag, status, expiry, parent, stored_at, last_used = row
    return AuthEntry(id_tag, AuthStatus(status), expiry=parse_time(expiry), parent=parent,
                     stored_at=parse_time(stored_at), last_used=parse_time(last_used))
