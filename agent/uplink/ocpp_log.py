"""The logger the `ocpp` library writes through, one line per refused CALL.

The library logs every CALL it refuses with ``logger.exception``: a traceback at ERROR,
and for a payload that fails its schema the whole JSON schema inside the message, about
5 KB a frame and up to 50 KB. A CSMS that keeps sending a malformed CALL would fill the
gateway's journal, and the million-frame fuzz ran a test process out of memory on it.
A refusal is the CSMS's mistake, not ours: one WARNING line naming the action, the
CALLERROR code and the cause (cut short) says all there is. Anything else the library
logs with a traceback keeps it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from ocpp.exceptions import OCPPError

from agent.uplink.error_codes import SPELLING

CAUSE_CHARS = 200


class OcppLibraryLog:
    """Stands in for a ``logging.Logger`` where the library takes one."""

    def __init__(self, logger: logging.Logger, version: str) -> None:
        self._log = logger
        self._spelling = SPELLING[version]     # the code as the CSMS receives it

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, OCPPError):
            call = args[0] if args else None
            action = getattr(call, "action", None) or "frame"
            cause = err.details.get("cause") if isinstance(err.details, dict) else None
            self._log.warning("%.60s from the CSMS refused with %s: %.*s", action, self._spelling.get(err.code, err.code), CAUSE_CHARS,
                              str(cause or err.description).splitlines()[0] if (cause or err.description) else "")
            return
        self._log.exception(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:      # info, debug, warning, error, isEnabledFor...
        return getattr(self._log, name)
