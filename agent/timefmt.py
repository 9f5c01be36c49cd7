"""The one place timestamps become text.

OCPP 2.0.1 CSMSs may reject more than three fractional digits, and every stored or sent
time must carry a timezone, so all formatting and parsing of wall-clock times goes
through here.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utc_text(dt: datetime) -> str:
    """RFC 3339 UTC with millisecond precision: ``2026-01-01T12:00:00.123Z``."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime: evsite only handles timezone-aware times")
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_utc(text: str) -> datetime:
    """Parse an RFC 3339 time with an offset or ``Z``; naive text is an error."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        raise ValueError(f"time without timezone: {text!r}")
    return dt.astimezone(timezone.utc)
