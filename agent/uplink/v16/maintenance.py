"""OCPP 1.6 words for remote maintenance: Firmware Management and the security extension.

A mixin of ``Station`` (station.py): the CSMS's maintenance calls, answered from the
version-neutral machinery in agent/maintenance (``runtime.maintenance``, a
MaintenanceService), and ``V16Reporter``, which turns that machinery's status words
into FirmwareStatusNotification / SignedFirmwareStatusNotification /
DiagnosticsStatusNotification / LogStatusNotification.

As everywhere in the station, handlers never wait for the CSMS: an ``@on`` handler
checks the request and answers; the work starts in the ``@after`` hook (which the
library runs as a task once the answer is sent), so the first status notification
never overtakes the answer.

Two things happen in ``call`` (every station-initiated CALL goes through it):

- a BootNotification answered Accepted tells the service the station is online: it
  sends statuses kept while offline and confirms a release on trial;
- SecurityEventNotification types are the neutral (2.0.1) words in the store; the 1.6
  names are put in here (InvalidCsmsCertificate -> InvalidCentralSystemCertificate).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ocpp.exceptions import PropertyConstraintViolationError
from ocpp.routing import after, on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action

from agent.auth.types import OfflineError
from agent.maintenance.certificates import HashData
from agent.maintenance.diagnostics import LogRequest
from agent.maintenance.download import DownloadError, safe_url
from agent.maintenance.update import RequestRefused, UpdateJob, coarse
from agent.timefmt import parse_utc

log = logging.getLogger("evsite.uplink.v16.maintenance")

#: 1.6 certificate types -> the neutral words of agent.maintenance.certificates
CERT_KINDS = {"CentralSystemRootCertificate": "CSMSRootCertificate", "ManufacturerRootCertificate": "ManufacturerRootCertificate"}
#: neutral security event types whose 1.6 name differs
SECURITY_EVENTS_16 = {"InvalidCsmsCertificate": "InvalidCentralSystemCertificate",
                      "InvalidChargingStationCertificate": "InvalidChargePointCertificate"}
#: SignedFirmwareStatusNotification has no InstallRescheduled
_SIGNED = {"InstallRescheduled": "InstallScheduled"}
_UPLOAD_16 = {"UploadFailed": "UploadFailure"}
_EXTENDED = ("BootNotification", "LogStatusNotification", "FirmwareStatusNotification", "Heartbeat", "MeterValues",
             "SignChargePointCertificate", "StatusNotification")


class V16Reporter:
    """The service's status words as 1.6 messages on one connection."""

    def __init__(self, station: Any) -> None:
        self.station = station
        self._last_plain: tuple[Any, str] | None = None

    async def _send(self, payload: Any) -> None:
        ctx = self.station.ctx
        if ctx.station is not self.station:
            raise OfflineError("that connection has ended")
        await ctx._call(payload)

    async def firmware_status(self, status: str, job: UpdateJob | None) -> None:
        if job is not None and job.signed:
            await self._send(call.SignedFirmwareStatusNotification(status=_SIGNED.get(status, status),
                                                                   request_id=job.request_id))
            return
        plain = coarse(status)
        if plain == "Idle" or self._last_plain == (id(job), plain):
            return  # SignatureVerified, InstallRescheduled...: nothing new in 1.6's words (Idle: triggered only)
        self._last_plain = (id(job), plain)
        await self._send(call.FirmwareStatusNotification(status=plain))

    async def upload_status(self, status: str, request: LogRequest | None) -> None:
        if request is None or request.request_id is None:      # GetDiagnostics
            if status in ("Uploading", "Uploaded", "UploadFailed", "Idle"):
                await self._send(call.DiagnosticsStatusNotification(status=status))
            return
        await self._send(call.LogStatusNotification(status=_UPLOAD_16.get(status, status), request_id=request.request_id))


class MaintenanceHandlers:
    """Mixed into ``Station``; ``self.ctx`` is the V16Uplink, ``self.ctx.rt`` the Runtime."""

    ctx: Any

    @property
    def maintenance(self) -> Any:
        return getattr(self.ctx.rt, "maintenance", None)

    async def call(self, payload: Any, suppress: bool = True, unique_id: Any = None,
                   skip_schema_validation: bool = False) -> Any:
        if isinstance(payload, call.SecurityEventNotification) and payload.type in SECURITY_EVENTS_16:
            payload = dataclasses.replace(payload, type=SECURITY_EVENTS_16[payload.type])
        result = await super().call(payload, suppress=suppress, unique_id=unique_id,  # type: ignore[misc]
                                    skip_schema_validation=skip_schema_validation)
        service = self.maintenance
        if service is not None and isinstance(payload, call.BootNotification) and getattr(result, "status", None) == "Accepted":
            service.spawn(service.online(V16Reporter(self)), "maintenance online")
        return result

    # ---- firmware ------------------------------------------------------------------------------
    @on(Action.update_firmware)
    async def on_update_firmware(self, location: str, retrieve_date: str, retries: int | None = None,
                                 retry_interval: int | None = None, call_unique_id: str = "") -> Any:
        job = UpdateJob(location, _time(retrieve_date, "retrieveDate", required=True), retries or 0, float(retry_interval or 0))
        self._accepted_jobs()[call_unique_id] = job
        return call_result.UpdateFirmware()

    @after(Action.update_firmware)
    async def after_update_firmware(self, call_unique_id: str = "", **_: Any) -> None:
        job = self._accepted_jobs().pop(call_unique_id, None)
        service = self.maintenance
        if job is None:
            return
        if service is None:
            log.error("UpdateFirmware for %s ignored: remote maintenance is not running", safe_url(job.location))
            return
        service.firmware.start(job)

    @on(Action.signed_update_firmware)
    async def on_signed_update_firmware(self, request_id: int, firmware: dict, retries: int | None = None,
                                        retry_interval: int | None = None, call_unique_id: str = "") -> Any:
        job = UpdateJob(firmware["location"], _time(firmware["retrieve_date_time"], "retrieveDateTime", required=True), retries or 0,
                        float(retry_interval or 0), request_id, firmware["signing_certificate"], firmware["signature"],
                        _time(firmware.get("install_date_time"), "installDateTime"))
        service = self.maintenance
        if service is None:
            return call_result.SignedUpdateFirmware(status="Rejected")
        try:
            status = service.firmware.check(job)
        except RequestRefused as refused:
            log.error("SignedUpdateFirmware %d refused (%s): %s", request_id, refused.status, refused)
            if refused.security_event:
                await service.security_event(refused.security_event, str(refused)[:255])
            return call_result.SignedUpdateFirmware(status=refused.status)
        self._accepted_jobs()[call_unique_id] = job
        return call_result.SignedUpdateFirmware(status=status)

    @after(Action.signed_update_firmware)
    async def after_signed_update_firmware(self, call_unique_id: str = "", **_: Any) -> None:
        job = self._accepted_jobs().pop(call_unique_id, None)
        if job is not None and self.maintenance is not None:
            self.maintenance.firmware.start(job)

    def _accepted_jobs(self) -> dict[str, Any]:
        jobs = self.__dict__.get("_maint_jobs")
        if jobs is None:
            jobs = self.__dict__["_maint_jobs"] = {}
        return jobs

    # ---- logs ------------------------------------------------------------------------------------
    @on(Action.get_diagnostics)
    async def on_get_diagnostics(self, location: str, retries: int | None = None, retry_interval: int | None = None,
                                 start_time: str | None = None, stop_time: str | None = None,
                                 call_unique_id: str = "") -> Any:
        req = LogRequest("diagnostics", location, None, _time(start_time, "startTime"), _time(stop_time, "stopTime"),
                         retries or 0, float(retry_interval or 0))
        name = self._check_upload(req, call_unique_id)
        return call_result.GetDiagnostics(file_name=name)

    @on(Action.get_log)
    async def on_get_log(self, log: dict, log_type: str, request_id: int, retries: int | None = None,
                         retry_interval: int | None = None, call_unique_id: str = "") -> Any:
        kind = "security" if log_type == "SecurityLog" else "diagnostics"
        req = LogRequest(kind, log["remote_location"], request_id, _time(log.get("oldest_timestamp"), "oldestTimestamp"),
                         _time(log.get("latest_timestamp"), "latestTimestamp"), retries or 0, float(retry_interval or 0))
        service = self.maintenance
        busy = service is not None and service.logs.running
        name = self._check_upload(req, call_unique_id)
        if name is None:
            return call_result.GetLog(status="Rejected")
        return call_result.GetLog(status="AcceptedCanceled" if busy else "Accepted", filename=name)

    def _check_upload(self, req: LogRequest, uid: str) -> str | None:
        service = self.maintenance
        if service is None:
            log.error("log upload refused: remote maintenance is not running")
            return None
        try:
            name = service.logs.check(req)
        except (DownloadError, ValueError) as exc:
            log.error("log upload to %s refused: %s", safe_url(req.location), exc)
            return None
        self._accepted_jobs()[uid] = req
        return name

    @after(Action.get_diagnostics)
    async def after_get_diagnostics(self, call_unique_id: str = "", **_: Any) -> None:
        self._start_upload(call_unique_id)

    @after(Action.get_log)
    async def after_get_log(self, call_unique_id: str = "", **_: Any) -> None:
        self._start_upload(call_unique_id)

    def _start_upload(self, uid: str) -> None:
        req = self._accepted_jobs().pop(uid, None)
        if req is not None and self.maintenance is not None:
            self.maintenance.logs.start(req)

    # ---- certificates ----------------------------------------------------------------------------
    @on(Action.install_certificate)
    async def on_install_certificate(self, certificate_type: str, certificate: str) -> Any:
        service = self.maintenance
        if service is None:
            return call_result.InstallCertificate(status="Rejected")
        return call_result.InstallCertificate(status=service.install_certificate(CERT_KINDS[certificate_type], certificate))

    @on(Action.delete_certificate)
    async def on_delete_certificate(self, certificate_hash_data: dict) -> Any:
        service = self.maintenance
        if service is None:
            return call_result.DeleteCertificate(status="Failed")
        wanted = HashData(certificate_hash_data["hash_algorithm"], certificate_hash_data["issuer_name_hash"],
                          certificate_hash_data["issuer_key_hash"], certificate_hash_data["serial_number"])
        return call_result.DeleteCertificate(status=service.delete_certificate(wanted))

    @on(Action.get_installed_certificate_ids)
    async def on_get_installed_certificate_ids(self, certificate_type: str) -> Any:
        service = self.maintenance
        found = service.certs.installed([CERT_KINDS[certificate_type]]) if service is not None else []
        if not found:
            return call_result.GetInstalledCertificateIds(status="NotFound")
        return call_result.GetInstalledCertificateIds(status="Accepted", certificate_hash_data=[
            dataclasses.asdict(h) for _, h in found])

    @on(Action.certificate_signed)
    async def on_certificate_signed(self, certificate_chain: str) -> Any:
        service = self.maintenance
        status = await service.certificate_signed(certificate_chain) if service is not None else "Rejected"
        return call_result.CertificateSigned(status=status)

    @after(Action.certificate_signed)
    async def after_certificate_signed(self, certificate_chain: str) -> None:
        service = self.maintenance
        if service is not None and service.certs.active_client() is not None and self.ctx.rt.config.uplink.security_profile == 3:
            service.spawn(service.reconnect("client certificate renewed"), "reconnect with the new certificate")

    # ---- ExtendedTriggerMessage ---------------------------------------------------------------------
    @on(Action.extended_trigger_message)
    async def on_extended_trigger_message(self, requested_message: str, connector_id: int | None = None) -> Any:
        if requested_message not in _EXTENDED:
            return call_result.ExtendedTriggerMessage(status="NotImplemented")
        if connector_id not in (None, 0) and connector_id not in self.ctx.sessions.connectors:
            return call_result.ExtendedTriggerMessage(status="Rejected")
        return call_result.ExtendedTriggerMessage(status="Accepted")

    @after(Action.extended_trigger_message)
    async def after_extended_trigger_message(self, requested_message: str, connector_id: int | None = None) -> None:
        # in a task the service owns (and cancels when the agent stops): the library's
        # after-hook tasks are fire-and-forget
        service = self.maintenance
        work = self._extended(requested_message, connector_id)
        if service is not None:
            service.spawn(work, f"ExtendedTriggerMessage {requested_message}")
        else:
            await work

    async def _extended(self, requested_message: str, connector_id: int | None) -> None:
        service = self.maintenance
        try:
            if requested_message in ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification"):
                await self.ctx.triggered(requested_message, connector_id)
            elif service is None:
                return
            elif requested_message == "FirmwareStatusNotification":
                fw = service.firmware
                job = fw.job if fw.running or fw.state else None
                status = fw.status if job is not None else "Idle"
                await self.ctx._call(call.SignedFirmwareStatusNotification(
                    status=_SIGNED.get(status, status), request_id=job.request_id if job else None))
            elif requested_message == "LogStatusNotification":
                up = service.logs
                req = up.current if up.running else None
                await self.ctx._call(call.LogStatusNotification(status=_UPLOAD_16.get(up.status, up.status) if req else "Idle",
                                                               request_id=req.request_id if req else None))
            elif requested_message == "SignChargePointCertificate":
                csr = service.make_csr()
                result = await self.ctx._call(call.SignCertificate(csr=csr))
                log.info("SignCertificate answered %s", result.status)
        except Exception as exc:  # best effort, like TriggerMessage
            log.warning("ExtendedTriggerMessage %s not served: %s", requested_message, exc)


def _time(text: str | None, name: str, required: bool = False) -> Any:
    """A date-time field (the library does not check formats): a CALLERROR naming it."""
    if not text and not required:
        return None
    try:
        return parse_utc(text)
    except (ValueError, TypeError):
        raise PropertyConstraintViolationError(description=f"{name} is not an RFC 3339 date-time with a timezone",
                                               details={"field": name}) from None
