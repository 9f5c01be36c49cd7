"""Cross-field rules about devices: their bus, profile, unit id, connector and currents.

These are the mistakes that otherwise show up on site as a charger that never answers
(wrong unit id or bus), two chargers fighting over one unit id, or a current setpoint
the hardware cannot take.
"""

from __future__ import annotations

import re

from agent.config.bind import shown
from agent.config.checkctx import Ctx, check, did_you_mean, listing
from agent.config.issues import path_text
from agent.config.model import PHASE_NAMES

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
METER_ROLES = ("grid_meter", "sub_meter")
#: keys of [[devices]] that mean something for chargers only
CHARGER_KEYS = (
    "connector_id", "connector_index", "phases", "wiring", "min_current", "max_current",
    "fixed_current", "failsafe_current", "failsafe_timeout", "priority", "circuit", "meter",
    "free_charging_tag", "can_switch_phases",
)
#: OCPP 1.6 idTag is CiString20
ID_TAG_MAX = 20


def _dev(i: int, key: str | None = None) -> tuple:
    return ("devices", i) if key is None else ("devices", i, key)


def _amps(value: float) -> str:
    return f"{value:g} A"


@check("The ids of buses, devices and circuits are non-empty, unique and made of letters, digits, '-', '_', '.'")
def ids_unique(ctx: Ctx) -> None:
    lists = (
        (("buses",), ctx.cfg.buses, "bus"),
        (("devices",), ctx.cfg.devices, "device"),
        (("limits", "circuits"), ctx.cfg.limits.circuits, "circuit"),
    )
    for base, items, what in lists:
        first: dict[str, int] = {}
        for i, item in enumerate(items):
            path = base + (i, "id")
            if not item.id:
                ctx.error(path, f"a {what} needs a non-empty id")
            elif not ID_RE.match(item.id):
                ctx.error(path, f"{what} id {shown(item.id)} must start with a letter or digit and contain "
                                "only letters, digits, '-', '_' and '.' (it is used in logs, status and commands)")
            elif item.id in first:
                ctx.error(path, f'duplicate {what} id "{item.id}" (also {path_text(base + (first[item.id],))})')
            else:
                first[item.id] = i


@check("A device's bus exists, and its unit id is 1..247 on an RS-485 (rtu) bus")
def device_bus(ctx: Ctx) -> None:
    buses = {b.id: b for b in ctx.cfg.buses}
    for i, d in enumerate(ctx.cfg.devices):
        bus = buses.get(d.bus)
        if bus is None:
            ctx.error(_dev(i, "bus"), f'no bus "{d.bus}"{did_you_mean(d.bus, buses)}; buses: {listing(buses)}',
                      uses=[("buses",)])
            continue
        if bus.type == "rtu" and not 1 <= d.unit_id <= 247:
            ctx.error(_dev(i, "unit_id"), f'must be 1..247 on RS-485 (bus "{bus.id}"), got {d.unit_id}',
                      uses=[_dev(i, "bus")])


@check("Unit ids are unique per bus, except connectors of one multi-connector charger "
       "(same profile and unit id, different connector_index)")
def unit_ids_unique(ctx: Ctx) -> None:
    seen: dict[tuple[str, int], list[int]] = {}
    for i, d in enumerate(ctx.cfg.devices):
        if not d.bus:
            continue
        key = (d.bus, d.unit_id)
        for j in seen.get(key, []):
            other = ctx.cfg.devices[j]
            uses = [_dev(i, "bus"), _dev(j, "unit_id"), _dev(j, "bus")]
            shared = d.role == other.role == "charger" and d.profile == other.profile
            prof = ctx.profile(d.profile) if shared else None
            single = prof is not None and getattr(prof, "connector_stride", 0) == 0
            if shared and single and d.connector_index != other.connector_index:
                ctx.error(_dev(i, "unit_id"),
                          f'shares unit id {d.unit_id} with devices[{j}] ("{other.id}"), but profile '
                          f'"{d.profile}" has one connector per unit id: give each its own unit id',
                          uses=uses + [_dev(i, "profile")])
            elif shared and not single:
                if d.connector_index == other.connector_index:
                    ctx.error(_dev(i, "connector_index"),
                              f'devices[{j}] ("{other.id}") already uses connector_index {d.connector_index} '
                              f'of unit {d.unit_id} on bus "{d.bus}"', uses=uses + [_dev(j, "connector_index")])
                continue  # connectors of one multi-connector charger
            else:
                ctx.error(_dev(i, "unit_id"),
                          f'unit id {d.unit_id} is already used on bus "{d.bus}" by devices[{j}] ("{other.id}")',
                          uses=uses)
            break
        seen.setdefault(key, []).append(i)


@check("A device's profile exists, is a meter for meter roles and a charger for chargers, "
       "and supports the bus type; an unset unit_id that differs from the profile's default is a warning")
def device_profile(ctx: Ctx) -> None:
    if ctx.profiles is None:
        return
    names = ctx.profiles.names()
    buses = {b.id: b for b in ctx.cfg.buses}
    for i, d in enumerate(ctx.cfg.devices):
        if d.profile not in names:
            ctx.error(_dev(i, "profile"),
                      f'unknown device profile "{d.profile}"{did_you_mean(d.profile, names)}; known: {listing(names)}')
            continue
        try:
            prof = ctx.profiles.get(d.profile)
        except ValueError as exc:
            ctx.error(_dev(i, "profile"), f"profile cannot be loaded: {exc}")
            continue
        want = "charger" if d.role == "charger" else "meter"
        if d.role and prof.kind != want:
            ctx.error(_dev(i, "role"), f'role {d.role} needs a {want} profile; "{d.profile}" is a {prof.kind}',
                      uses=[_dev(i, "profile")])
        default_unit = getattr(prof, "unit_id", None)
        if ctx.wrote(_dev(i, "unit_id")) is False and default_unit is not None and default_unit != d.unit_id:
            ctx.warn(_dev(i, "unit_id"), f'not set, so {d.unit_id}; "{d.profile}" devices answer on '
                                         f"{default_unit} by default: set unit_id")
        bus = buses.get(d.bus)
        if bus is not None and bus.type and bus.type not in prof.transports:
            ctx.error(_dev(i, "bus"),
                      f'profile "{d.profile}" does not work on a {bus.type} bus (it supports: '
                      f'{listing(prof.transports)})', uses=[_dev(i, "profile"), ("buses",)])


@check("At most one grid meter")
def one_grid_meter(ctx: Ctx) -> None:
    first = None
    for i, d in enumerate(ctx.cfg.devices):
        if d.role != "grid_meter":
            continue
        if first is None:
            first = i
        else:
            ctx.error(_dev(i, "role"), f'a second grid_meter (the first is devices[{first}], "{ctx.cfg.devices[first].id}"); '
                                       "a site has at most one: make the others sub_meter")


@check("Charger connector ids are 1, 2, ... and unique (gaps are a warning)")
def connector_ids(ctx: Ctx) -> None:
    first: dict[int, int] = {}
    for i, d in enumerate(ctx.cfg.devices):
        if d.role != "charger":
            continue
        if d.connector_id < 1:
            ctx.error(_dev(i, "connector_id"), "a charger needs connector_id = 1, 2, ... (its OCPP connector id)")
        elif d.connector_id in first:
            ctx.error(_dev(i, "connector_id"),
                      f"connector_id {d.connector_id} is already used by devices[{first[d.connector_id]}]")
        else:
            first[d.connector_id] = i
    ids = sorted(first)
    if ids and ids != list(range(1, len(ids) + 1)):
        missing = sorted(set(range(1, ids[-1] + 1)) - set(ids))
        i = first[ids[-1]]
        ctx.warn(_dev(i, "connector_id"), f"connector ids have gaps (no {', '.join(map(str, missing))}); "
                                          "OCPP CSMSs expect connectors numbered 1..N")
    if not any(d.role == "charger" for d in ctx.cfg.devices):
        ctx.warn(("devices",), "no charger configured")


@check("A charger's wiring lists exactly `phases` site phases from L1/L2/L3 without repeats")
def wiring(ctx: Ctx) -> None:
    for i, d in enumerate(ctx.cfg.devices):
        if d.role != "charger":
            continue
        path = _dev(i, "wiring")
        if d.phases == 1 and ctx.wrote(path) is False:
            ctx.error(path, 'a 1-phase charger needs wiring = ["L1"], ["L2"] or ["L3"]: the site phase it is on',
                      uses=[_dev(i, "phases")])
            continue
        bad = False
        for k, phase in enumerate(d.wiring):
            if phase not in PHASE_NAMES:
                ctx.error(path + (k,), f'must be "L1", "L2" or "L3", got "{phase}"{did_you_mean(phase.upper(), PHASE_NAMES)}')
                bad = True
        if bad:
            continue
        repeated = sorted({p for p in d.wiring if d.wiring.count(p) > 1})
        if repeated:
            ctx.error(path, f"lists {', '.join(repeated)} more than once; each charger phase is on a different site phase")
        elif len(d.wiring) != d.phases:
            ctx.error(path, f"has {len(d.wiring)} entr{'y' if len(d.wiring) == 1 else 'ies'} but phases = {d.phases}",
                      uses=[_dev(i, "phases")])


@check("Charger currents: min_current <= max_current <= the profile's maximum; fixed_current is 0 or within min..max; "
       "failsafe_current <= max_current")
def currents(ctx: Ctx) -> None:
    for i, d in enumerate(ctx.cfg.devices):
        if d.role != "charger":
            continue
        lim = [_dev(i, "min_current"), _dev(i, "max_current")]
        if d.min_current > d.max_current:
            ctx.error(_dev(i, "min_current"), f"{_amps(d.min_current)} is above max_current ({_amps(d.max_current)})",
                      uses=lim)
            continue
        if d.fixed_current is not None and d.fixed_current != 0 and not d.min_current <= d.fixed_current <= d.max_current:
            ctx.error(_dev(i, "fixed_current"),
                      f"must be 0 or within min_current..max_current ({d.min_current:g}..{d.max_current:g} A), "
                      f"got {d.fixed_current:g}", uses=lim)
        if d.failsafe_current > d.max_current:
            ctx.error(_dev(i, "failsafe_current"),
                      f"{_amps(d.failsafe_current)} is above max_current ({_amps(d.max_current)})", uses=lim)
        prof = ctx.profile(d.profile)
        if prof is not None and d.max_current > prof.max_current:
            ctx.error(_dev(i, "max_current"), f'{_amps(d.max_current)} is above what profile "{d.profile}" '
                                              f"supports ({_amps(prof.max_current)})", uses=[_dev(i, "profile")])


@check("A charger's failsafe_timeout is longer than the poll interval (a warning below 3 polls)")
def failsafe_timeout(ctx: Ctx) -> None:
    poll = ctx.cfg.site.poll_interval
    for i, d in enumerate(ctx.cfg.devices):
        if d.role != "charger":
            continue
        path, uses = _dev(i, "failsafe_timeout"), [("site", "poll_interval")]
        if d.failsafe_timeout <= poll:
            ctx.error(path, f"{d.failsafe_timeout:g} s is not longer than site.poll_interval ({poll:g} s): "
                            "the charger would fall back to its failsafe current between polls", uses=uses)
        elif d.failsafe_timeout < 3 * poll:
            ctx.warn(path, f"{d.failsafe_timeout:g} s is less than 3 polls ({3 * poll:g} s): one slow poll "
                           "sends the charger to its failsafe current", uses=uses)


@check("A charger's circuit exists and its meter is a sub_meter")
def references(ctx: Ctx) -> None:
    circuits = [c.id for c in ctx.cfg.limits.circuits]
    devices = {d.id: d for d in ctx.cfg.devices}
    for i, d in enumerate(ctx.cfg.devices):
        if d.role != "charger":
            continue
        if d.circuit and d.circuit not in circuits:
            ctx.error(_dev(i, "circuit"), f'no circuit "{d.circuit}"{did_you_mean(d.circuit, circuits)}; '
                                          f"circuits: {listing(circuits)}", uses=[("limits", "circuits")])
        if d.meter:
            meter = devices.get(d.meter)
            if meter is None:
                subs = [m.id for m in ctx.cfg.devices if m.role == "sub_meter"]
                ctx.error(_dev(i, "meter"), f'no device "{d.meter}"{did_you_mean(d.meter, subs)}; '
                                            f"sub_meters: {listing(subs)}")
            elif meter.role != "sub_meter":
                ctx.error(_dev(i, "meter"), f'device "{d.meter}" is a {meter.role or "device"}, not a sub_meter')


@check("Phase switching only on 3-phase chargers whose profile can switch; free_charging_tag at most "
       "20 characters; a failsafe setting the profile cannot write is a warning")
def charger_extras(ctx: Ctx) -> None:
    for i, d in enumerate(ctx.cfg.devices):
        if d.role != "charger":
            continue
        if d.can_switch_phases:
            path = _dev(i, "can_switch_phases")
            prof = ctx.profile(d.profile)
            if d.phases != 3:
                ctx.error(path, "needs a 3-phase charger (phases = 3)", uses=[_dev(i, "phases")])
            elif prof is not None and prof.writes.get("phases") is None:
                ctx.error(path, f'profile "{d.profile}" cannot switch phases (no write.phases register)',
                          uses=[_dev(i, "profile")])
        prof = ctx.profile(d.profile)
        for key in ("failsafe_current", "failsafe_timeout"):
            if prof is not None and ctx.wrote(_dev(i, key)) and prof.writes.get(key) is None:
                ctx.warn(_dev(i, key), f'profile "{d.profile}" cannot set it: the charger keeps its own setting',
                         uses=[_dev(i, "profile")])
        if len(d.free_charging_tag) > ID_TAG_MAX:
            ctx.error(_dev(i, "free_charging_tag"),
                      f"must be at most {ID_TAG_MAX} characters (an OCPP idTag), got {len(d.free_charging_tag)}")


@check("Charger-only keys on a meter are flagged as ignored (warning)")
def meter_keys(ctx: Ctx) -> None:
    if ctx.given is None:
        return
    for i, d in enumerate(ctx.cfg.devices):
        if d.role not in METER_ROLES:
            continue
        for key in CHARGER_KEYS:
            if ctx.wrote(_dev(i, key)):
                ctx.warn(_dev(i, key), f"only applies to chargers; ignored for a {d.role}")

