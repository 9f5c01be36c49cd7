"""The central-system side of both OCPP versions on the ``ocpp`` library.

One ChargePoint subclass per version, with an ``@on`` handler for every
station-initiated action, so the library does what a real CSMS built on it would do:
schema validation of the station's payload (a bad one gets the matching CALLERROR),
NotImplemented / NotSupported for unknown actions, and serialization of the answer.
Every handler delegates to ``TestCsms.answer``, which applies a test's custom responder
or the default answer below, and records transactions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ocpp.charge_point import camel_to_snake_case
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call_result as result201

if TYPE_CHECKING:
    from hil.csms.server import StationLink

# Station -> CSMS actions (1.6 core and profiles plus the 1.6 security extension).
STATION_ACTIONS_16 = (
    "Authorize", "BootNotification", "DataTransfer", "DiagnosticsStatusNotification",
    "FirmwareStatusNotification", "Heartbeat", "MeterValues", "StartTransaction",
    "StatusNotification", "StopTransaction",
    "LogStatusNotification", "SecurityEventNotification", "SignCertificate",
    "SignedFirmwareStatusNotification",
)
STATION_ACTIONS_201 = (
    "Authorize", "BootNotification", "ClearedChargingLimit", "DataTransfer",
    "FirmwareStatusNotification", "Get15118EVCertificate", "GetCertificateStatus",
    "Heartbeat", "LogStatusNotification", "MeterValues", "NotifyChargingLimit",
    "NotifyCustomerInformation", "NotifyDisplayMessages", "NotifyEVChargingNeeds",
    "NotifyEVChargingSchedule", "NotifyEvent", "NotifyMonitoringReport", "NotifyReport",
    "PublishFirmwareStatusNotification", "ReportChargingProfiles", "ReservationStatusUpdate",
    "SecurityEventNotification", "SignCertificate", "StatusNotification", "TransactionEvent",
)


class _Central:
    """What both versions share: the link back to the server's state."""

    _call_result: Any

    def __init__(self, station: str, connection: Any, link: StationLink, logger: Any) -> None:
        super().__init__(station, connection, logger=logger)  # type: ignore[call-arg]
        self.link = link

    def _result(self, action: str, payload: dict[str, Any]) -> Any:
        cls = getattr(self._call_result, action)
        return cls(**camel_to_snake_case(payload))


def _handler(action: str) -> Callable[..., Any]:
    async def handle(self: _Central, **_kwargs: Any) -> Any:
        # the handler's kwargs are the payload in snake_case; the server kept the
        # original JSON (camelCase, exactly as sent) for this call
        payload = await self.link.csms.answer(self.link, action)
        return self._result(action, payload)

    snake = "".join("_" + c.lower() if c.isupper() else c for c in action).lstrip("_")
    handle.__name__ = f"on_{snake}"
    return on(action)(handle)


class CentralSystem16(_Central, ChargePoint16):
    _call_result = result16


class CentralSystem201(_Central, ChargePoint201):
    _call_result = result201


for _action in STATION_ACTIONS_16:
    _h = _handler(_action)
    setattr(CentralSystem16, _h.__name__, _h)
for _action in STATION_ACTIONS_201:
    _h = _handler(_action)
    setattr(CentralSystem201, _h.__name__, _h)


CENTRAL = {"1.6": CentralSystem16, "2.0.1": CentralSystem201}
