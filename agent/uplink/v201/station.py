"""The CSMS's calls to the station (OCPP 2.0.1), answered from the site's own parts.

The handlers live in one module per functional area (``handlers_*.py``), mixed into
this ``ChargePoint`` subclass; each is short: it checks what only 2.0.1 can say (EVSE
ids, its enums), asks the version-neutral part that owns the matter (sessions,
settings, the authorizer, the profile book, load management, remote maintenance) and
turns the answer back into 2.0.1 words. Handlers run inside the connection's receive
loop, so they never await a call to the CSMS: messages a call causes (NotifyReport,
ReportChargingProfiles, triggered messages) go out afterwards through ``ctx.later``
from ``@after`` hooks.

The ``ocpp`` library validates every incoming payload against the 2.0.1 schemas first
and answers a bad one with the matching CALLERROR before any handler runs. While the
CSMS has Rejected the boot, every call is answered SecurityError (B03).

Two checks run before the library's, as in the 1.6 station: a frame that is not OCPP-J
but still shows a CALL's message id is answered with a CALLERROR (the library drops it
in silence and the CSMS would wait for its timeout), and a call carrying an integer
beyond 32 bits (OCPP's integer; the schemas give no range) is refused with
TypeConstraintViolation, since such an id or version cannot be stored.
"""

from __future__ import annotations

import logging
from typing import Any

from ocpp.exceptions import SecurityError
from ocpp.v201 import ChargePoint

from agent.uplink.answers import AnswerBook, MatchedAnswers
from agent.uplink.error_codes import VersionSpelledErrors
from agent.uplink.ocpp_log import OcppLibraryLog
from agent.uplink.routing import GuardedRouting
from agent.uplink.v201.handlers_auth import AuthHandlers
from agent.uplink.v201.handlers_other import UnsupportedHandlers
from agent.uplink.v201.handlers_provisioning import ProvisioningHandlers
from agent.uplink.v201.handlers_smart import SmartChargingHandlers
from agent.uplink.v201.handlers_tx import TransactionHandlers
from agent.uplink.v201.maintenance import MaintenanceHandlers
from agent.uplink.v201.station_fields import out_of_int32

log = logging.getLogger("evsite.uplink.v201")
_ocpp_log = OcppLibraryLog(logging.getLogger("evsite.uplink.ocpp"), "2.0.1")


class Station(VersionSpelledErrors, GuardedRouting, MatchedAnswers, MaintenanceHandlers, ProvisioningHandlers, AuthHandlers, TransactionHandlers, SmartChargingHandlers,
              UnsupportedHandlers, ChargePoint):
    """``ctx`` is the V201Uplink of this connection (session.py)."""

    route_log = log

    def __init__(self, station_id: str, connection: Any, ctx: Any, *, response_timeout: float) -> None:
        super().__init__(station_id, connection, response_timeout=response_timeout, logger=_ocpp_log)
        self.ctx = ctx
        self.answers = AnswerBook()   # answers to our CALLs by id (agent/uplink/answers.py)
        #: results of Get*Report / GetChargingProfiles computed by the handler, sent by its @after hook
        self.pending_reports: dict[int, list[Any]] = {}

    def out_of_range(self, payload: Any) -> str | None:
        return out_of_int32(payload)

    async def _handle_call(self, msg: Any) -> Any:
        if self.ctx.boot_status == "Rejected" and not self.ctx.accepted:
            raise SecurityError(description=f"{msg.action} refused: the CSMS rejected this station's boot")
        return await super()._handle_call(msg)


__all__ = ["Station"]
