"""Provisioning and availability (2.0.1 functional blocks B, G, F06, P): the device
model (Get/SetVariables, GetBaseReport, GetReport), ChangeAvailability, Reset,
TriggerMessage, DataTransfer."""

from __future__ import annotations

import logging
from typing import Any

from ocpp.exceptions import OccurrenceConstraintViolationError
from ocpp.routing import after, on
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action

from agent.uplink.v201.device_model import ITEMS_PER_MESSAGE

log = logging.getLogger("evsite.uplink.v201")

TRIGGERABLE = ("BootNotification", "Heartbeat", "StatusNotification", "MeterValues", "TransactionEvent",
               "FirmwareStatusNotification", "LogStatusNotification")


def _too_many(what: str, n: int) -> OccurrenceConstraintViolationError:
    return OccurrenceConstraintViolationError(
        description=f"{n} items in one {what}; ItemsPerMessage{what} is {ITEMS_PER_MESSAGE}")


class ProvisioningHandlers:
    ctx: Any
    pending_reports: dict[int, list[Any]]

    # ---- device model ----------------------------------------------------------------------
    @on(Action.get_variables)
    async def on_v201_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        if len(get_variable_data) > ITEMS_PER_MESSAGE:
            raise _too_many("GetVariables", len(get_variable_data))
        results = [await self.ctx.model.get(item) for item in get_variable_data]
        return call_result.GetVariables(get_variable_result=results)

    @on(Action.set_variables)
    async def on_v201_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        if len(set_variable_data) > ITEMS_PER_MESSAGE:
            raise _too_many("SetVariables", len(set_variable_data))
        results = [await self.ctx.model.set(item) for item in set_variable_data]
        return call_result.SetVariables(set_variable_result=results)

    @on(Action.get_base_report)
    async def on_v201_get_base_report(self, request_id: int, report_base: str, **_: Any) -> Any:
        self.pending_reports[request_id] = await self.ctx.model.base_report(report_base)
        return call_result.GetBaseReport(status="Accepted")

    @after(Action.get_base_report)
    def after_v201_get_base_report(self, request_id: int, **_: Any) -> None:
        self._send_pending_report(request_id)

    @on(Action.get_report)
    async def on_v201_get_report(self, request_id: int, component_variable: list[dict[str, Any]] | None = None,
                                 component_criteria: list[str] | None = None, **_: Any) -> Any:
        if component_variable and len(component_variable) > ITEMS_PER_MESSAGE:
            raise _too_many("GetReport", len(component_variable))
        items = await self.ctx.model.custom_report(component_variable, component_criteria)
        if not items:
            return call_result.GetReport(status="EmptyResultSet")
        self.pending_reports[request_id] = items
        return call_result.GetReport(status="Accepted")

    @after(Action.get_report)
    def after_v201_get_report(self, request_id: int, **_: Any) -> None:
        self._send_pending_report(request_id)

    def _send_pending_report(self, request_id: int) -> None:
        items = self.pending_reports.pop(request_id, None)
        if items is not None:
            self.ctx.later(self.ctx.send_report(request_id, items), f"NotifyReport {request_id}")

    # ---- availability and reset ---------------------------------------------------------------
    @on(Action.change_availability)
    async def on_v201_change_availability(self, operational_status: str, evse: dict[str, Any] | None = None,
                                          **_: Any) -> Any:
        target = 0
        if evse is not None and evse.get("id"):
            if evse["id"] not in self.ctx.sessions.connectors or evse.get("connector_id") not in (None, 1):
                return call_result.ChangeAvailability(
                    status="Rejected", status_info={"reason_code": "UnknownEvse", "additional_info": f"no EVSE/connector {evse}"})
            target = evse["id"]
        status = await self.ctx.sessions.set_availability(target, operational_status == "Operative")
        return call_result.ChangeAvailability(status=status)

    @on(Action.reset)
    async def on_v201_reset(self, type: str, evse_id: int | None = None, **_: Any) -> Any:
        if evse_id is not None:
            return call_result.Reset(status="Rejected", status_info={
                "reason_code": "UnsupportedRequest", "additional_info": "an EVSE cannot be reset on its own"})
        if type == "OnIdle" and self.ctx.sessions.busy():
            return call_result.Reset(status="Scheduled")
        return call_result.Reset(status="Accepted")

    @after(Action.reset)
    def after_v201_reset(self, type: str, evse_id: int | None = None, **_: Any) -> None:
        if evse_id is None:
            # not tied to this connection: a reset happens even if the link drops meanwhile
            self.ctx.sessions._spawn(self.ctx.reset(immediate=type == "Immediate"), "v201 reset")

    # ---- TriggerMessage -----------------------------------------------------------------------
    @on(Action.trigger_message)
    async def on_v201_trigger(self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any) -> Any:
        if requested_message not in TRIGGERABLE:
            return call_result.TriggerMessage(status="NotImplemented")
        targets = self._trigger_targets(evse)
        if targets is None:
            return call_result.TriggerMessage(status="Rejected", status_info={"reason_code": "UnknownEvse"})
        if requested_message == "BootNotification" and self.ctx.accepted:
            # F06.FR.17: the boot was already accepted
            return call_result.TriggerMessage(status="Rejected")
        if requested_message == "TransactionEvent" and not any(
                self.ctx.sessions.connectors[c].tx is not None for c in targets):
            return call_result.TriggerMessage(status="Rejected", status_info={"reason_code": "NoTransaction"})
        return call_result.TriggerMessage(status="Accepted")

    @after(Action.trigger_message)
    def after_v201_trigger(self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any) -> None:
        targets = self._trigger_targets(evse)
        if requested_message not in TRIGGERABLE or targets is None:
            return
        ctx = self.ctx
        if requested_message == "BootNotification":
            if not ctx.accepted:
                ctx.boot_requested()
            return
        if requested_message == "Heartbeat":
            coro = ctx.heartbeat()
        elif requested_message == "StatusNotification":
            coro = ctx.send_statuses(targets)
        elif requested_message == "MeterValues":
            coro = ctx.send_meter_values(targets)
        elif requested_message == "TransactionEvent":
            coro = ctx.trigger_transaction_events(targets)
        elif requested_message == "FirmwareStatusNotification":
            coro = ctx._call(call.FirmwareStatusNotification(status="Idle"))
        else:
            coro = ctx._call(call.LogStatusNotification(status="Idle"))
        ctx.later(coro, f"triggered {requested_message}")

    def _trigger_targets(self, evse: dict[str, Any] | None) -> list[int] | None:
        """The connectors a trigger is about (all without an EVSE); None for an unknown one."""
        connectors = self.ctx.sessions.connectors
        if evse is None or not evse.get("id"):
            return sorted(connectors)
        if evse["id"] not in connectors or evse.get("connector_id") not in (None, 1):
            return None
        return [evse["id"]]

    # ---- DataTransfer ---------------------------------------------------------------------------
    @on(Action.data_transfer)
    async def on_v201_data_transfer(self, vendor_id: str, message_id: str | None = None, data: Any = None,
                                    **_: Any) -> Any:
        return call_result.DataTransfer(status="UnknownVendorId")
