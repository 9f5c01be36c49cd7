"""CSMS calls the agent does not carry out (yet), answered with the status each message
defines for "not done" rather than a CALLERROR, so a CSMS sees a clean refusal:
publishing firmware to local stations, network profiles, display messages, customer
information and variable monitoring. Each refusal is logged once per call. (Firmware
updates, GetLog and certificates are maintenance.py's.)"""

from __future__ import annotations

import logging
from typing import Any

from ocpp.routing import on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

log = logging.getLogger("evsite.uplink.v201")


def _refused(action: str, why: str) -> dict[str, str]:
    log.info("%s refused: %s", action, why)
    return {"reason_code": "NotSupported", "additional_info": why}


class UnsupportedHandlers:
    @on(Action.publish_firmware)
    async def on_v201_publish_firmware(self, **_: Any) -> Any:
        return call_result.PublishFirmware(status="Rejected", status_info=_refused(
            "PublishFirmware", "this station does not act as a local firmware server"))

    @on(Action.unpublish_firmware)
    async def on_v201_unpublish_firmware(self, **_: Any) -> Any:
        return call_result.UnpublishFirmware(status="NoFirmware")

    @on(Action.set_network_profile)
    async def on_v201_set_network_profile(self, **_: Any) -> Any:
        return call_result.SetNetworkProfile(status="Rejected", status_info=_refused(
            "SetNetworkProfile", "the CSMS connection comes from the site config"))

    @on(Action.customer_information)
    async def on_v201_customer_information(self, **_: Any) -> Any:
        return call_result.CustomerInformation(status="Rejected", status_info=_refused(
            "CustomerInformation", "customer information reports are not implemented"))

    @on(Action.set_display_message)
    async def on_v201_set_display_message(self, **_: Any) -> Any:
        return call_result.SetDisplayMessage(status="Rejected", status_info=_refused(
            "SetDisplayMessage", "the site has no display"))

    @on(Action.get_display_messages)
    async def on_v201_get_display_messages(self, **_: Any) -> Any:
        return call_result.GetDisplayMessages(status="Unknown")

    @on(Action.clear_display_message)
    async def on_v201_clear_display_message(self, **_: Any) -> Any:
        return call_result.ClearDisplayMessage(status="Unknown")

    @on(Action.get_monitoring_report)
    async def on_v201_get_monitoring_report(self, **_: Any) -> Any:
        return call_result.GetMonitoringReport(status="NotSupported")

    @on(Action.set_monitoring_base)
    async def on_v201_set_monitoring_base(self, **_: Any) -> Any:
        return call_result.SetMonitoringBase(status="NotSupported")

    @on(Action.set_monitoring_level)
    async def on_v201_set_monitoring_level(self, **_: Any) -> Any:
        return call_result.SetMonitoringLevel(status="Rejected", status_info=_refused(
            "SetMonitoringLevel", "variable monitoring is not implemented"))
