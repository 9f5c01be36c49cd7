"""CSMS calls the agent does not carry out (yet), answered with the status each message
defines for "not done" rather than a CALLERROR, so a CSMS sees a clean refusal:
firmware update and GetLog (the maintenance issue's machinery, not wired to 2.0.1 yet),
certificate management (another issue), network profiles, display messages, customer
information and variable monitoring. Each refusal is logged once per call."""

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
    @on(Action.update_firmware)
    async def on_v201_update_firmware(self, **_: Any) -> Any:
        return call_result.UpdateFirmware(status="Rejected", status_info=_refused(
            "UpdateFirmware", "firmware update over OCPP 2.0.1 is not implemented yet"))

    @on(Action.publish_firmware)
    async def on_v201_publish_firmware(self, **_: Any) -> Any:
        return call_result.PublishFirmware(status="Rejected", status_info=_refused(
            "PublishFirmware", "this station does not act as a local firmware server"))

    @on(Action.unpublish_firmware)
    async def on_v201_unpublish_firmware(self, **_: Any) -> Any:
        return call_result.UnpublishFirmware(status="NoFirmware")

    @on(Action.get_log)
    async def on_v201_get_log(self, **_: Any) -> Any:
        return call_result.GetLog(status="Rejected", status_info=_refused(
            "GetLog", "log upload over OCPP 2.0.1 is not implemented yet"))

    @on(Action.install_certificate)
    async def on_v201_install_certificate(self, **_: Any) -> Any:
        return call_result.InstallCertificate(status="Rejected", status_info=_refused(
            "InstallCertificate", "certificate management is not implemented yet"))

    @on(Action.delete_certificate)
    async def on_v201_delete_certificate(self, **_: Any) -> Any:
        return call_result.DeleteCertificate(status="NotFound")

    @on(Action.get_installed_certificate_ids)
    async def on_v201_get_installed_certificate_ids(self, **_: Any) -> Any:
        return call_result.GetInstalledCertificateIds(status="NotFound")

    @on(Action.certificate_signed)
    async def on_v201_certificate_signed(self, **_: Any) -> Any:
        return call_result.CertificateSigned(status="Rejected", status_info=_refused(
            "CertificateSigned", "no certificate signing request is pending"))

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
