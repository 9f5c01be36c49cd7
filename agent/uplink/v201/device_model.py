"""GetVariables, SetVariables and the device-model reports, over ``variables.VARIABLES``.

The station as 2.0.1 addresses it: station-wide controllers (no ``evse``), one ``EVSE``
component per charger (evse id = the connector id the site config gives the charger)
and one ``Connector`` under it (connectorId 1).

Every item of a Get/SetVariables request gets its own status, so one unknown variable
never spoils the rest; a SetVariables value is checked against the variable's data type
and range, then against the setting's own rules, *before* anything is stored: a
refused value leaves the stored one as it was. Values of 2.0.1-only variables are kept
in the store's key/value table under ``STORE_KEY`` and survive restarts.

Reports (GetBaseReport / GetReport) are built here as a list of ReportData; the session
splits them into NotifyReport messages (``chunks``) after the answer went out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agent import __version__
from agent.timefmt import utc_text
from agent.uplink.v201.variables import VARIABLES, Var, check_value, to_setting, to_v201

log = logging.getLogger("evsite.uplink.v201")

STORE_KEY = "v201.variables"
#: the most items one GetVariables / SetVariables / GetReport request may carry
ITEMS_PER_MESSAGE = 100
#: ReportData entries per NotifyReport message (the CSMS gets the rest in the next ones)
REPORT_ITEMS_PER_MESSAGE = 20
#: the largest message the station takes (UplinkOptions.max_message)
MAX_MESSAGE = 1 << 20
REPORTING_VALUE_SIZE = 2500
BASES = ("ConfigurationInventory", "FullInventory", "SummaryInventory")
CRITERIA = ("Active", "Available", "Enabled", "Problem")


@dataclass(frozen=True)
class Instance:
    """One variable of one component instance (``evse`` None for station-wide ones)."""

    var: Var
    evse: int | None = None

    def component(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.var.component}
        if self.var.scope == "evse":
            out["evse"] = {"id": self.evse}
        elif self.var.scope == "connector":
            out["evse"] = {"id": self.evse, "connectorId": 1}
        return out

    def variable(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.var.name}
        if self.var.instance:
            out["instance"] = self.var.instance
        return out


class DeviceModel:
    """``ctx`` is the V201Uplink (settings, store, sessions, config, profiles, rt)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.stored: dict[str, str] = {}
        self._loaded = False

    async def load(self) -> None:
        """The 2.0.1-only values set earlier (once per process)."""
        if self._loaded:
            return
        value = await self.ctx.store.kv_get(STORE_KEY) or {}
        self.stored = {k: str(v) for k, v in value.items()} if isinstance(value, dict) else {}
        self._loaded = True

    # ---- addressing ---------------------------------------------------------------------
    def evse_ids(self) -> list[int]:
        return sorted(self.ctx.sessions.connectors)

    def instances(self) -> Iterator[Instance]:
        for var in VARIABLES:
            if var.scope == "station":
                yield Instance(var)
            else:
                for evse in self.evse_ids():
                    yield Instance(var, evse)

    def resolve(self, component: dict[str, Any], variable: dict[str, Any]) -> Instance | str:
        """The variable addressed by a request item, or "UnknownComponent" / "UnknownVariable"."""
        name, instance = component.get("name"), component.get("instance")
        evse = component.get("evse") or {}
        evse_id, connector_id = evse.get("id"), evse.get("connector_id", evse.get("connectorId"))
        scope = None
        if instance is None:
            candidates = [v for v in VARIABLES if v.component == name]
            if candidates:
                scope = candidates[0].scope
        if scope is None:
            return "UnknownComponent"
        if scope == "station" and evse:
            return "UnknownComponent"
        if scope == "evse" and (evse_id not in self.evse_ids() or connector_id is not None):
            return "UnknownComponent"
        if scope == "connector" and (evse_id not in self.evse_ids() or connector_id != 1):
            return "UnknownComponent"
        for v in candidates:
            if v.name == variable.get("name") and v.instance == variable.get("instance"):
                return Instance(v, evse_id if scope != "station" else None)
        return "UnknownVariable"

    # ---- reading ------------------------------------------------------------------------
    async def value(self, inst: Instance, attribute: str = "Actual") -> str:
        var = inst.var
        if attribute == "MaxSet":
            return str(self._live(var.max_set or "", inst.evse))
        if var.setting is not None:
            return to_v201(var, self.ctx.settings.text(var.setting))
        if var.live is not None:
            if var.live == "local_list_entries":
                return str(await self.ctx.store.list_count())
            return str(self._live(var.live, inst.evse))
        if var.stored:
            return self.stored.get(var.key, var.default or "")
        return var.default or ""

    def _live(self, what: str, evse: int | None) -> Any:
        ctx = self.ctx
        up = ctx.rt.config.uplink
        if what == "now":
            return utc_text(ctx.clock.now())
        if what == "availability":
            return ctx.availability(evse)
        if what == "problem":
            return "true" if ctx.availability(evse) == "Faulted" else "false"
        if what == "call_timeout":
            return int(up.call_timeout)
        if what == "profile_entries":
            return len(ctx.profiles.profiles) if ctx.profiles is not None else 0
        if what == "max_message":
            return MAX_MESSAGE
        if what == "items_per_message":
            return ITEMS_PER_MESSAGE
        if what == "security_profile":
            return up.security_profile
        if what == "station_id":
            return up.station_id
        if what == "model":
            return up.model
        if what == "vendor":
            return up.vendor
        if what == "firmware":
            return __version__
        if what == "supply_phases":
            devices = {d.connector_id: d for d in ctx.rt.config.chargers()}
            if evse is None:
                return max((d.phases for d in devices.values()), default=3)
            return devices[evse].phases if evse in devices else 3
        if what == "power":
            c = ctx.sessions.connectors.get(evse)
            power = c.reading.power_total if c is not None and c.reading is not None else None
            return round(float(power), 1) if power is not None else 0
        if what == "max_power":
            devices = {d.connector_id: d for d in ctx.rt.config.chargers()}
            d = devices.get(evse)
            return round(d.max_current * ctx.rt.config.limits.nominal_voltage * d.phases, 1) if d is not None else 0
        raise KeyError(f"no live value {what!r}")

    async def get(self, item: dict[str, Any]) -> dict[str, Any]:
        """One GetVariableResult for one GetVariableData item (snake_case keys)."""
        component, variable = item["component"], item["variable"]
        attribute = item.get("attribute_type") or "Actual"
        out: dict[str, Any] = {"component": component, "variable": variable}
        if item.get("attribute_type"):
            out["attribute_type"] = attribute
        inst = self.resolve(component, variable)
        if isinstance(inst, str):
            return {**out, "attribute_status": inst}
        if attribute not in inst.var.attributes:
            return {**out, "attribute_status": "NotSupportedAttributeType"}
        if inst.var.mutability == "WriteOnly":
            return {**out, "attribute_status": "Rejected",
                    "attribute_status_info": {"reason_code": "WriteOnly"}}
        value = await self.value(inst, attribute)
        return {**out, "attribute_status": "Accepted", "attribute_value": value[:REPORTING_VALUE_SIZE]}

    # ---- writing ------------------------------------------------------------------------
    async def set(self, item: dict[str, Any]) -> dict[str, Any]:
        """One SetVariableResult for one SetVariableData item; stored before it is Accepted."""
        component, variable = item["component"], item["variable"]
        attribute = item.get("attribute_type") or "Actual"
        out: dict[str, Any] = {"component": component, "variable": variable}
        if item.get("attribute_type"):
            out["attribute_type"] = attribute
        inst = self.resolve(component, variable)
        if isinstance(inst, str):
            return {**out, "attribute_status": inst}
        var = inst.var
        if attribute not in var.attributes:
            return {**out, "attribute_status": "NotSupportedAttributeType"}
        if attribute != "Actual" or var.mutability == "ReadOnly":
            return _rejected(out, "ReadOnly", f"{var.key} is read-only")
        try:
            value = check_value(var, item["attribute_value"])
        except ValueError as exc:
            return _rejected(out, "InvalidValue", f"{var.key}: {exc}")
        if var.setting is not None:
            status = await self.ctx.settings.change(var.setting, to_setting(var, value))
            if status == "Rejected":
                return _rejected(out, "InvalidValue", f"{var.key}: {value!r} refused by setting {var.setting}")
            if status == "NotSupported":
                return {**out, "attribute_status": "UnknownVariable"}
            return {**out, "attribute_status": status}
        stored = dict(self.stored, **{var.key: value})
        await self.ctx.store.kv_set(STORE_KEY, stored)
        self.stored = stored
        log.info("device model: %s set to %r", var.key, value)
        return {**out, "attribute_status": "RebootRequired" if var.reboot else "Accepted"}

    # ---- reports ----------------------------------------------------------------------------
    async def base_report(self, base: str) -> list[dict[str, Any]]:
        if base == "ConfigurationInventory":
            chosen = [i for i in self.instances() if i.var.mutability != "ReadOnly"]
        elif base == "SummaryInventory":
            chosen = [i for i in self.instances() if i.var.name in ("AvailabilityState", "Available", "Problem")]
        else:
            chosen = list(self.instances())
        return [await self.report_data(i) for i in chosen]

    async def custom_report(self, component_variables: list[dict[str, Any]] | None,
                            criteria: list[str] | None) -> list[dict[str, Any]]:
        """GetReport: the instances matching any requested component/variable (all when
        none is given) whose component meets at least one criterion (when given)."""
        chosen = list(self.instances())
        if component_variables:
            chosen = [i for i in chosen if any(_matches(i, cv) for cv in component_variables)]
        if criteria:
            chosen = [i for i in chosen if await self._meets(i, criteria)]
        return [await self.report_data(i) for i in chosen]

    async def _meets(self, inst: Instance, criteria: list[str]) -> bool:
        for crit in criteria:
            flag = next((v for v in VARIABLES if v.component == inst.var.component and v.name == crit
                         and v.data_type == "boolean"), None)
            if flag is not None and await self.value(Instance(flag, inst.evse)) == "true":
                return True
        return False

    async def report_data(self, inst: Instance) -> dict[str, Any]:
        var = inst.var
        attributes = []
        for attr in var.attributes:
            entry: dict[str, Any] = {"type": attr, "mutability": var.mutability if attr == "Actual" else "ReadOnly",
                                     "persistent": var.live is None or attr != "Actual", "constant": var.constant}
            if var.mutability != "WriteOnly":
                entry["value"] = (await self.value(inst, attr))[:REPORTING_VALUE_SIZE]
            attributes.append(entry)
        characteristics: dict[str, Any] = {"dataType": var.data_type, "supportsMonitoring": False}
        if var.unit:
            characteristics["unit"] = var.unit
        if var.min is not None:
            characteristics["minLimit"] = var.min
        if var.max is not None:
            characteristics["maxLimit"] = var.max
        if var.values:
            characteristics["valuesList"] = ",".join(var.values)
        return {"component": inst.component(), "variable": inst.variable(), "variableAttribute": attributes,
                "variableCharacteristics": characteristics}


def chunks(items: list[dict[str, Any]], size: int = REPORT_ITEMS_PER_MESSAGE) -> list[tuple[list[dict[str, Any]], bool]]:
    """NotifyReport parts: (reportData, tbc) in order; tbc is true on all but the last."""
    if size < 1:
        raise ValueError(f"report chunk size must be >= 1, got {size}")
    parts = [items[i:i + size] for i in range(0, len(items), size)] or [[]]
    return [(part, n < len(parts) - 1) for n, part in enumerate(parts)]


def _matches(inst: Instance, cv: dict[str, Any]) -> bool:
    comp = cv.get("component") or {}
    if comp.get("name") != inst.var.component or comp.get("instance") is not None:
        return False
    evse = comp.get("evse")
    if evse:
        if evse.get("id") != inst.evse:
            return False
        connector = evse.get("connector_id", evse.get("connectorId"))
        if connector is not None and (inst.var.scope != "connector" or connector != 1):
            return False
    var = cv.get("variable")
    if var:
        if var.get("name") != inst.var.name:
            return False
        if var.get("instance") is not None and var.get("instance") != inst.var.instance:
            return False
    return True


def _rejected(out: dict[str, Any], code: str, why: str) -> dict[str, Any]:
    log.info("SetVariables item refused: %s", why)
    return {**out, "attribute_status": "Rejected",
            "attribute_status_info": {"reason_code": code, "additional_info": why[:512]}}
