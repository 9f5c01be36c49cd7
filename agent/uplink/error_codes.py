"""CALLERROR codes spelled as each OCPP version's own table spells them.

The `ocpp` library sends its 2.x spellings in every version. OCPP-J 1.6 (table 7)
spells two codes differently, and its errata (5.1, 5.2) keep them so, because changing a
code on the wire breaks implementations: ``FormationViolation`` and
``OccurenceConstraintViolation``. 2.0.1 corrected the first and kept the second. A
strict CSMS may not recognise a code outside its version's table, so every CALLERROR
the station sends is re-spelled on its way out.
"""

from __future__ import annotations

import json

SPELLING: dict[str, dict[str, str]] = {
    "1.6": {"FormatViolation": "FormationViolation",
            "OccurrenceConstraintViolation": "OccurenceConstraintViolation"},
    "2.0.1": {"FormationViolation": "FormatViolation",
              "OccurrenceConstraintViolation": "OccurenceConstraintViolation"},
}


def spelled_for(version: str, frame: str) -> str:
    """``frame`` with its CALLERROR code in ``version``'s spelling; any other frame as is."""
    if not frame.startswith("[4"):
        return frame
    try:
        msg = json.loads(frame)
    except ValueError:
        return frame
    fixed = SPELLING[version].get(msg[2]) if isinstance(msg, list) and len(msg) > 2 and isinstance(msg[2], str) else None
    if fixed is None:
        return frame
    msg[2] = fixed
    return json.dumps(msg, separators=(",", ":"))


class VersionSpelledErrors:
    """Mixin for a station (an ``ocpp`` ChargePoint): its CALLERRORs follow the table of
    the library's ``_ocpp_version``."""

    _ocpp_version: str

    async def _send(self, message: str) -> None:  # type: ignore[override]
        await super()._send(spelled_for(self._ocpp_version, message))  # type: ignore[misc]
