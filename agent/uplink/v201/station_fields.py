"""Field checks the ``ocpp`` library does not do for the 2.0.1 handlers.

The library validates payloads against the schemas, but jsonschema ignores ``format``,
so a ``date-time`` field can hold any text. A handler that parsed it later would fail
with a ValueError, which the library answers as InternalError; the CSMS should hear
which field is wrong instead (PropertyConstraintViolation naming it), and nothing
is stored. Likewise the schemas say "integer" without a range, where OCPP means 32 bits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ocpp.exceptions import PropertyConstraintViolationError

from agent.timefmt import parse_utc


def date_time(text: str | None, name: str) -> datetime | None:
    """``text`` as an aware UTC datetime (None stays None), or a CALLERROR naming ``name``."""
    if text is None:
        return None
    try:
        return parse_utc(text)
    except (ValueError, TypeError):
        raise PropertyConstraintViolationError(description=f"{name} is not an RFC 3339 date-time with a timezone",
                                               details={"field": name}) from None


def out_of_int32(value: Any, path: str = "") -> str | None:
    """The path of the first integer outside -2^31 .. 2^31-1 (OCPP's integer type), if
    any: such ids and versions cannot be kept, so the call is refused before it acts.
    ``customData`` is skipped: it is vendor data the station neither reads nor stores,
    and may well hold a millisecond timestamp."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return path or "payload" if not -2**31 <= value < 2**31 else None
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "customData":
                continue
            if (hit := out_of_int32(v, f"{path}.{k}" if path else str(k))) is not None:
                return hit
    if isinstance(value, list):
        for i, v in enumerate(value):
            if (hit := out_of_int32(v, f"{path}[{i}]")) is not None:
                return hit
    return None
