"""OCPP 2.0.1 words for remote maintenance: firmware (L01-L02), logs (N01), certificates
(M01-M05, A02-A03) and the security events the machinery raises (A04).

A mixin of ``Station`` (station.py), the twin of agent/uplink/v16/maintenance.py: the
work is done by the version-neutral machinery in agent/maintenance
(``runtime.maintenance``, a MaintenanceService); this module only checks what 2.0.1
can say, answers in 2.0.1 words, and turns the machinery's status words into
FirmwareStatusNotification / LogStatusNotification (``V201Reporter``).

Why 2.0.1 answers more than 1.6 does: its UpdateFirmware and GetLog answers have a
Rejected with a ``statusInfo``, so everything the machinery can refuse before starting
(no usable release tree, an unsupported URL scheme, an unsigned request while
``signed_only`` is set, a request half signed, an install already under way) is
refused in the answer with the reason, instead of surfacing later as DownloadFailed.

As everywhere in the station, handlers never wait for the CSMS: an ``@on`` handler
checks and answers; the work starts in the ``@after`` hook, so the first status
notification never overtakes the answer. The reporter is handed to the service once
per connection (``maintenance_online``, called by the session after its boot), since
2.0.1 does not boot again on a reconnect; statuses that happened offline go out then.

Stored security event types are the neutral words; the few the machinery still records
in 1.6 spelling are renamed on the way out (``SECURITY_EVENTS_201``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ocpp.exceptions import PropertyConstraintViolationError
from ocpp.routing import after, on
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action

from agent.auth.types import OfflineError
from agent.maintenance.certificates import ROOT_KINDS, HashData
from agent.maintenance.diagnostics import LogRequest
from agent.maintenance.download import DownloadError, safe_url
from agent.maintenance.update import RequestRefused, UpdateJob
from agent.timefmt import parse_utc

log = logging.getLogger("evsite.uplink.v201.maintenance")

#: 1.6 spellings the machinery may record -> the 2.0.1 security event names
SECURITY_EVENTS_201 = {"InvalidChargePointCertificate": "InvalidChargingStationCertificate",
                       "InvalidCentralSystemCertificate": "InvalidCsmsCertificate"}
#: neutral firmware words 2.0.1's FirmwareStatusEnumType lacks
FIRMWARE_201 = {"InstallRescheduled": "InstallScheduled"}
UPLOAD_201 = {"UploadFailed": "UploadFailure"}
#: TriggerMessage requests this mixin serves (the rest: ProvisioningHandlers)
TRIGGERED = ("FirmwareStatusNotification", "LogStatusNotification", "SignChargingStationCertificate")
ORGANIZATION_KEY = "SecurityCtrlr/OrganizationName"


def firmware_word(status: str) -> str:
    return FIRMWARE_201.get(status, status)


class V201Reporter:
    """The service's status words as 2.0.1 messages on one connection (``station``)."""

    def __init__(self, ctx: Any, station: Any) -> None:
        self.ctx, self.station = ctx, station

    async def _send(self, payload: Any) -> None:
        if self.ctx.station is not self.station:
            raise OfflineError("that connection has ended")
        await self.ctx._call(payload)

    async def firmware_status(self, status: str, job: UpdateJob | None) -> None:
        request_id = job.request_id if job is not None and status != "Idle" else None
        await self._send(call.FirmwareStatusNotification(status=firmware_word(status), request_id=request_id))

    async def upload_status(self, status: str, request: LogRequest | None) -> None:
        request_id = request.request_id if request is not None and status != "Idle" else None
        await self._send(call.LogStatusNotification(status=UPLOAD_201.get(status, status), request_id=request_id))


def maintenance_online(ctx: Any) -> None:
    """A connection is up and booted: the service reports through it from now on (and
    confirms a release on trial). Runs as the service's task, beside the outbox."""
    service = getattr(ctx.rt, "maintenance", None)
    if service is not None and ctx.station is not None:
        service.spawn(service.online(V201Reporter(ctx, ctx.station)), "maintenance online")


def boot_reason(rt: Any) -> str:
    """FirmwareUpdate for the first boot of a release on trial, else PowerUp."""
    firmware = getattr(getattr(rt, "maintenance", None), "firmware", None)
    state = getattr(firmware, "state", None) or {}
    if state.get("phase") == "trial" and state.get("version") == getattr(firmware, "running_version", None):
        return "FirmwareUpdate"
    return "PowerUp"


def _info(code: str, why: str) -> dict[str, str]:
    return {"reason_code": code, "additional_info": why[:512]}


class MaintenanceHandlers:
    """Mixed into ``Station`` before ProvisioningHandlers (it extends TriggerMessage);
    ``self.ctx`` is the V201Uplink, ``self.ctx.rt`` the Runtime."""

    ctx: Any

    @property
    def maintenance(self) -> Any:
        return getattr(self.ctx.rt, "maintenance", None)

    async def call(self, payload: Any, suppress: bool = True, unique_id: Any = None,
                   skip_schema_validation: bool = False) -> Any:
        if isinstance(payload, call.SecurityEventNotification) and payload.type in SECURITY_EVENTS_201:
            payload = dataclasses.replace(payload, type=SECURITY_EVENTS_201[payload.type])
        return await super().call(payload, suppress=suppress, unique_id=unique_id,  # type: ignore[misc]
                                  skip_schema_validation=skip_schema_validation)

    def _accepted(self) -> dict[str, Any]:
        """Requests answered Accepted, by CALL id, for their @after hook."""
        jobs = self.__dict__.get("_maint_jobs")
        if jobs is None:
            jobs = self.__dict__["_maint_jobs"] = {}
        return jobs

    # ---- firmware (L01 secure, L02 non-secure) ----------------------------------------------
    @on(Action.update_firmware)
    async def on_v201_update_firmware(self, request_id: int, firmware: dict[str, Any], retries: int | None = None,
                                      retry_interval: int | None = None, call_unique_id: str = "", **_: Any) -> Any:
        job = UpdateJob(firmware["location"], _time(firmware["retrieve_date_time"], "retrieveDateTime", required=True), retries or 0,
                        float(retry_interval or 0), request_id, firmware.get("signing_certificate"),
                        firmware.get("signature"), _time(firmware.get("install_date_time"), "installDateTime"))
        refusal = self._firmware_refusal(job)
        if refusal is not None:
            code, why = refusal
            log.error("UpdateFirmware %d refused (%s): %s", request_id, code, why)
            return call_result.UpdateFirmware(status="Rejected", status_info=_info(code, why))
        service = self.maintenance
        try:
            status = service.firmware.check(job)
        except RequestRefused as refused:
            log.error("UpdateFirmware %d refused (%s): %s", request_id, refused.status, refused)
            if refused.security_event:
                await service.security_event(refused.security_event, str(refused)[:255])
            code = "InvalidCertificate" if refused.status == "InvalidCertificate" else "InvalidURL"
            return call_result.UpdateFirmware(status=refused.status, status_info=_info(code, str(refused)))
        self._accepted()[call_unique_id] = job
        log.info("UpdateFirmware %d from %s: %s", request_id, safe_url(job.location), status)
        return call_result.UpdateFirmware(status=status)

    def _firmware_refusal(self, job: UpdateJob) -> tuple[str, str] | None:
        """(reasonCode, why) for what 2.0.1 refuses in the answer, before ``check``."""
        service = self.maintenance
        if service is None:
            return "NotSupported", "remote maintenance is not running"
        why = service.releases.usable()
        if why:
            return "NotSupported", f"software updates are not possible here: {why}"
        phase = (service.firmware.state or {}).get("phase")
        if phase in ("installing", "trial"):
            return "FwUpdateInProgress", f"release {(service.firmware.state or {}).get('version')} is being installed"
        if (job.signature is None) != (job.signing_certificate is None):
            missing = "signingCertificate" if job.signing_certificate is None else "signature"
            return "MissingParam", f"a signed update needs both signature and signingCertificate; {missing} is missing"
        if not job.signed and service.cfg.signed_only:
            return "MissingParam", "unsigned update refused: maintenance.signed_only is set"
        return None

    @after(Action.update_firmware)
    async def after_v201_update_firmware(self, call_unique_id: str = "", **_: Any) -> None:
        job = self._accepted().pop(call_unique_id, None)
        if job is not None and self.maintenance is not None:
            self.maintenance.firmware.start(job)

    # ---- logs (N01) -----------------------------------------------------------------------------
    @on(Action.get_log)
    async def on_v201_get_log(self, log: dict[str, Any], log_type: str, request_id: int, retries: int | None = None,
                              retry_interval: int | None = None, call_unique_id: str = "", **_: Any) -> Any:
        where = log
        req = LogRequest("security" if log_type == "SecurityLog" else "diagnostics", where["remote_location"],
                         request_id, _time(where.get("oldest_timestamp"), "oldestTimestamp"),
                         _time(where.get("latest_timestamp"), "latestTimestamp"), retries or 0,
                         float(retry_interval or 0))
        service = self.maintenance
        if service is None:
            return call_result.GetLog(status="Rejected", status_info=_info("NotSupported", "remote maintenance is not running"))
        busy = service.logs.running
        try:
            name = service.logs.check(req)
        except (DownloadError, ValueError) as exc:
            code = "InvalidURL" if isinstance(exc, DownloadError) else "InvalidValue"
            _log_refusal(req, exc)
            return call_result.GetLog(status="Rejected", status_info=_info(code, str(exc)))
        self._accepted()[call_unique_id] = req
        return call_result.GetLog(status="AcceptedCanceled" if busy else "Accepted", filename=name)

    @after(Action.get_log)
    async def after_v201_get_log(self, call_unique_id: str = "", **_: Any) -> None:
        req = self._accepted().pop(call_unique_id, None)
        if req is not None and self.maintenance is not None:
            self.maintenance.logs.start(req)

    # ---- certificates (M01-M05) -------------------------------------------------------------------
    @on(Action.install_certificate)
    async def on_v201_install_certificate(self, certificate_type: str, certificate: str, **_: Any) -> Any:
        service = self.maintenance
        if service is None:
            return call_result.InstallCertificate(status="Rejected", status_info=_info(
                "NotSupported", "remote maintenance is not running"))
        if certificate_type not in ROOT_KINDS:
            return call_result.InstallCertificate(status="Rejected", status_info=_info(
                "UnsupportedRequest", f"{certificate_type} is for ISO 15118, which this station does not do"))
        status = service.install_certificate(certificate_type, certificate)
        if status == "Accepted":
            return call_result.InstallCertificate(status=status)
        return call_result.InstallCertificate(status=status, status_info=_info(
            "InvalidCertificate" if status == "Rejected" else "InternalError", "see the station's log"))

    @on(Action.delete_certificate)
    async def on_v201_delete_certificate(self, certificate_hash_data: dict[str, Any], **_: Any) -> Any:
        service = self.maintenance
        if service is None:
            return call_result.DeleteCertificate(status="NotFound")
        h = certificate_hash_data
        wanted = HashData(h["hash_algorithm"], h["issuer_name_hash"], h["issuer_key_hash"], h["serial_number"])
        return call_result.DeleteCertificate(status=service.delete_certificate(wanted))

    @on(Action.get_installed_certificate_ids)
    async def on_v201_get_installed_certificate_ids(self, certificate_type: list[str] | None = None, **_: Any) -> Any:
        service = self.maintenance
        kinds = [k for k in ROOT_KINDS if certificate_type is None or k in certificate_type]
        found = service.certs.installed(kinds) if service is not None and kinds else []
        if not found:
            return call_result.GetInstalledCertificateIds(status="NotFound")
        return call_result.GetInstalledCertificateIds(status="Accepted", certificate_hash_data_chain=[
            {"certificate_type": kind, "certificate_hash_data": dataclasses.asdict(h)} for kind, h in found])

    # ---- the station's own certificate (A02-A03) ----------------------------------------------
    @on(Action.certificate_signed)
    async def on_v201_certificate_signed(self, certificate_chain: str, certificate_type: str | None = None,
                                         call_unique_id: str = "", **_: Any) -> Any:
        service = self.maintenance
        if service is None:
            return call_result.CertificateSigned(status="Rejected", status_info=_info(
                "NotSupported", "remote maintenance is not running"))
        if certificate_type == "V2GCertificate":
            return call_result.CertificateSigned(status="Rejected", status_info=_info(
                "UnsupportedRequest", "no ISO 15118 here: there is no V2G certificate to sign"))
        status = await service.certificate_signed(certificate_chain)
        if status != "Accepted":
            return call_result.CertificateSigned(status=status, status_info=_info(
                "InvalidCertificate", "not for the pending key, not valid now, or not chaining to a CSMS root"))
        self._accepted()[call_unique_id] = "certificate"
        return call_result.CertificateSigned(status=status)

    @after(Action.certificate_signed)
    async def after_v201_certificate_signed(self, call_unique_id: str = "", **_: Any) -> None:
        service = self.maintenance
        accepted = self._accepted().pop(call_unique_id, None) is not None
        if accepted and service is not None and self.ctx.rt.config.uplink.security_profile == 3:
            service.spawn(service.reconnect("client certificate renewed"), "reconnect with the new certificate")

    # ---- TriggerMessage for the above --------------------------------------------------------------
    @on(Action.trigger_message)
    async def on_v201_trigger(self, requested_message: str, evse: dict[str, Any] | None = None, **kw: Any) -> Any:
        if requested_message == "SignChargingStationCertificate":
            if self.maintenance is None:
                return call_result.TriggerMessage(status="Rejected", status_info=_info(
                    "NotSupported", "remote maintenance is not running"))
            return call_result.TriggerMessage(status="Accepted")
        return await super().on_v201_trigger(requested_message=requested_message, evse=evse, **kw)  # type: ignore[misc]

    @after(Action.trigger_message)
    def after_v201_trigger(self, requested_message: str, evse: dict[str, Any] | None = None, **kw: Any) -> Any:
        if requested_message in TRIGGERED and self.maintenance is not None:
            self.ctx.later(self._triggered(requested_message), f"triggered {requested_message}")
            return None
        return super().after_v201_trigger(requested_message=requested_message, evse=evse, **kw)  # type: ignore[misc]

    async def _triggered(self, requested_message: str) -> None:
        service = self.maintenance
        if requested_message == "FirmwareStatusNotification":
            fw = service.firmware
            job = fw.job if fw.running or fw.state else None
            status = fw.status if job is not None else "Idle"
            await self.ctx._call(call.FirmwareStatusNotification(
                status=firmware_word(status), request_id=job.request_id if job is not None and status != "Idle" else None))
        elif requested_message == "LogStatusNotification":
            up = service.logs
            req = up.current if up.running else None
            await self.ctx._call(call.LogStatusNotification(
                status=UPLOAD_201.get(up.status, up.status) if req is not None else "Idle",
                request_id=req.request_id if req is not None else None))
        else:
            up = self.ctx.rt.config.uplink
            organization = self.ctx.model.stored.get(ORGANIZATION_KEY) or up.vendor
            csr = service.certs.make_csr(up.station_id, str(organization))
            result = await self.ctx._call(call.SignCertificate(csr=csr, certificate_type="ChargingStationCertificate"))
            log.info("SignCertificate answered %s", result.status)


def _log_refusal(req: LogRequest, exc: Exception) -> None:
    log.error("GetLog %s to %s refused: %s", req.request_id, safe_url(req.location), exc)


def _time(text: str | None, name: str, required: bool = False) -> Any:
    """A date-time field (the library does not check formats): a CALLERROR naming it."""
    if text is None and not required:
        return None
    try:
        return parse_utc(text)
    except (ValueError, TypeError):
        raise PropertyConstraintViolationError(description=f"{name} is not an RFC 3339 date-time with a timezone",
                                               details={"field": name}) from None
