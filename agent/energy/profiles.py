"""OCPP charging-profile math, as OCPP 1.6 defines it (2.0.1 shares it via its adapter).

- Within a purpose the profile with the highest ``stackLevel`` that applies at a moment
  wins. A profile applies when the moment is inside validFrom..validTo and inside its
  schedule (after the schedule starts and before ``duration`` ends); so when a higher
  profile's schedule has run out, the next one down takes over. On equal stack levels a
  TxDefaultProfile set on the connector beats one set on connector 0.
- Schedule start: Absolute at ``startSchedule``; Recurring at the latest Daily/Weekly
  repetition of ``startSchedule`` (so a daily 22:00 schedule of 8 h runs across midnight
  to 06:00); Relative at the transaction's start (without a transaction: the start of the
  window asked about).
- A connector's limit = min(ChargePointMaxProfile, TxProfile if one applies else
  TxDefaultProfile). A TxProfile applies only while a transaction runs on the connector
  (and, when both name one, only to that transactionId). Connector 0 = ChargePointMax.
- Limits in W become amps per phase with the nominal voltage and the period's
  ``numberPhases`` (3 when absent); amps become W the same way.

The allocator takes the result as amps per phase: ``station_limit`` for the site (the
ChargePointMaxProfile) and ``connector_limit`` for a connector's own profiles.
``composite_schedule`` answers GetCompositeSchedule from the same function.
Profiles are plain dicts in the shape documented in ``agent.energy.profile_shape``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agent.energy.profile_shape import (
    ChargingProfile,
    Period,
    ProfileError,
    parse_profile,
    profile_errors,
    with_start,
)
from agent.timefmt import utc_text

__all__ = [
    "ChargingProfile", "CompositePeriod", "CompositeSchedule", "Effective", "ProfileError",
    "clear_profiles", "composite_schedule", "connector_limit", "effective_limit", "install_profile",
    "parse_profile", "profile_errors", "station_limit", "with_start",
]

REPEAT = {"Daily": 86400, "Weekly": 7 * 86400}
ProfileLike = Mapping[str, Any] | ChargingProfile


@dataclass(frozen=True, slots=True)
class Effective:
    """The limit in force at one moment, in amps per phase, and the profile it came from."""

    amps: float
    number_phases: int | None
    profile: ChargingProfile

    @property
    def source(self) -> str:
        p = self.profile
        return f"{p.purpose} {p.id} (stack {p.stack_level})"


def _parsed(profiles: Iterable[ProfileLike]) -> list[ChargingProfile]:
    return [p if isinstance(p, ChargingProfile) else parse_profile(p) for p in profiles]


def _instance_start(p: ChargingProfile, t: datetime, tx_start: datetime | None, origin: datetime) -> datetime | None:
    if p.kind == "Absolute":
        return p.start_schedule
    if p.kind == "Relative":
        return tx_start if tx_start is not None else origin
    every = REPEAT[p.recurrency or "Daily"]
    anchor = p.start_schedule
    assert anchor is not None  # validated
    n = math.floor((t - anchor).total_seconds() / every)
    return anchor + timedelta(seconds=n * every)


def _period_at(p: ChargingProfile, t: datetime, tx_start: datetime | None, origin: datetime) -> Period | None:
    if p.valid_from is not None and t < p.valid_from:
        return None
    if p.valid_to is not None and t >= p.valid_to:
        return None
    start = _instance_start(p, t, tx_start, origin)
    if start is None or t < start:
        return None
    elapsed = (t - start).total_seconds()
    if p.duration is not None and elapsed >= p.duration:
        return None
    found = None
    for per in p.periods:
        if per.start <= elapsed:
            found = per
        else:
            break
    return found


def to_amps(limit: float, unit: str, phases: int | None, voltage: float) -> float:
    return limit if unit == "A" else limit / (voltage * (phases or 3))


def _prevailing(cands: Iterable[ChargingProfile], t: datetime, tx_start: datetime | None, origin: datetime,
                voltage: float) -> Effective | None:
    best: tuple[tuple[int, bool], Effective] | None = None
    for p in cands:
        per = _period_at(p, t, tx_start, origin)
        if per is None:
            continue
        key = (p.stack_level, p.connector_id != 0)
        if best is None or key > best[0]:
            best = (key, Effective(to_amps(per.limit, p.unit, per.number_phases, voltage), per.number_phases, p))
    return None if best is None else best[1]


def _applies_tx(p: ChargingProfile, connector_id: int, tx_start: datetime | None, tx_id: int | None) -> bool:
    return (p.purpose == "TxProfile" and p.connector_id == connector_id and tx_start is not None
            and (p.transaction_id is None or tx_id is None or p.transaction_id == tx_id))


def station_limit(profiles: Iterable[ProfileLike], t: datetime, *, nominal_voltage: float = 230.0) -> Effective | None:
    """The ChargePointMaxProfile in force at ``t`` (all connectors together), if any."""
    cps = [p for p in _parsed(profiles) if p.purpose == "ChargePointMaxProfile"]
    return _prevailing(cps, t, None, t, nominal_voltage)


def connector_limit(profiles: Iterable[ProfileLike], connector_id: int, t: datetime, *,
                    tx_start: datetime | None = None, tx_id: int | None = None,
                    nominal_voltage: float = 230.0, origin: datetime | None = None) -> Effective | None:
    """The connector's own profile limit at ``t``: TxProfile if one applies, else
    TxDefaultProfile (on the connector or on 0). ChargePointMax is not included."""
    ps = _parsed(profiles)
    origin = origin or t
    tx = _prevailing([p for p in ps if _applies_tx(p, connector_id, tx_start, tx_id)], t, tx_start, origin,
                     nominal_voltage)
    if tx is not None:
        return tx
    defaults = [p for p in ps if p.purpose == "TxDefaultProfile" and p.connector_id in (0, connector_id)]
    return _prevailing(defaults, t, tx_start, origin, nominal_voltage)


def effective_limit(profiles: Iterable[ProfileLike], connector_id: int, t: datetime, *,
                    tx_start: datetime | None = None, tx_id: int | None = None,
                    nominal_voltage: float = 230.0, origin: datetime | None = None) -> Effective | None:
    """min(ChargePointMax, the connector's own) at ``t``; connector 0: ChargePointMax."""
    ps = _parsed(profiles)
    cp = station_limit(ps, t, nominal_voltage=nominal_voltage)
    if connector_id == 0:
        return cp
    own = connector_limit(ps, connector_id, t, tx_start=tx_start, tx_id=tx_id,
                          nominal_voltage=nominal_voltage, origin=origin)
    parts = [e for e in (cp, own) if e is not None]
    return min(parts, key=lambda e: e.amps) if parts else None


@dataclass(frozen=True, slots=True)
class CompositePeriod:
    start_period: int
    #: in the schedule's unit; None = no profile limits this period
    limit: float | None
    number_phases: int | None = None


@dataclass(frozen=True)
class CompositeSchedule:
    start: datetime
    duration: int
    unit: str
    periods: tuple[CompositePeriod, ...]

    def to_ocpp(self, unlimited: float) -> dict[str, Any]:
        """1.6 ``chargingSchedule`` (GetCompositeSchedule.conf); periods with no profile
        get ``unlimited`` (the station's own maximum in this unit)."""
        periods = []
        for p in self.periods:
            d: dict[str, Any] = {"startPeriod": p.start_period,
                                 "limit": round(unlimited if p.limit is None else p.limit, 1)}
            if p.number_phases is not None:
                d["numberPhases"] = p.number_phases
            periods.append(d)
        return {"duration": self.duration, "startSchedule": utc_text(self.start),
                "chargingRateUnit": self.unit, "chargingSchedulePeriod": periods}


def _instances(p: ChargingProfile, start: datetime, end: datetime, tx_start: datetime | None) -> list[datetime]:
    if p.kind != "Recurring":
        s = _instance_start(p, start, tx_start, start)
        return [] if s is None else [s]
    every = REPEAT[p.recurrency or "Daily"]
    first = _instance_start(p, start, tx_start, start)
    assert first is not None
    out = []
    while first < end:
        out.append(first)
        first += timedelta(seconds=every)
    return out


def composite_schedule(profiles: Iterable[ProfileLike], connector_id: int, start: datetime, duration: int,
                       unit: str = "A", tx_start: datetime | None = None, *, tx_id: int | None = None,
                       nominal_voltage: float = 230.0) -> CompositeSchedule:
    """What the connector (0: the station) may draw from ``start`` for ``duration`` s,
    as periods in ``unit`` ("A" per phase or "W" total). Raises ``ProfileError`` if a
    profile is invalid, ``ValueError`` for a bad unit or duration."""
    if unit not in ("A", "W"):
        raise ValueError(f"chargingRateUnit must be A or W, got {unit!r}")
    if not isinstance(duration, int) or duration <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    if start.tzinfo is None:
        raise ValueError("composite schedule start must be timezone-aware")
    ps = [p for p in _parsed(profiles) if p.connector_id in (0, connector_id)]
    end = start + timedelta(seconds=duration)
    times = {start}
    for p in ps:
        for t in (p.valid_from, p.valid_to):
            if t is not None and start < t < end:
                times.add(t)
        for inst in _instances(p, start, end, tx_start):
            edges = [inst] + [inst + timedelta(seconds=per.start) for per in p.periods]
            if p.duration is not None:
                edges.append(inst + timedelta(seconds=p.duration))
            times.update(t for t in edges if start < t < end)
    periods: dict[int, CompositePeriod] = {}
    for t in sorted(times):
        eff = effective_limit(ps, connector_id, t, tx_start=tx_start, tx_id=tx_id,
                              nominal_voltage=nominal_voltage, origin=start)
        if eff is None:
            limit, phases = None, None
        else:
            phases = eff.number_phases
            limit = eff.amps if unit == "A" else eff.amps * nominal_voltage * (phases or 3)
        offset = int((t - start).total_seconds())
        periods[offset] = CompositePeriod(offset, limit, phases)  # a later edge in the same second wins
    merged: list[CompositePeriod] = []
    for off in sorted(periods):
        p = periods[off]
        if merged and (merged[-1].limit, merged[-1].number_phases) == (p.limit, p.number_phases):
            continue
        merged.append(p)
    return CompositeSchedule(start, duration, unit, tuple(merged))


def install_profile(existing: Iterable[Mapping[str, Any]], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """SetChargingProfile: ``new`` replaces a profile with the same chargingProfileId or
    the same (connectorId, stackLevel, purpose). Raises ``ProfileError`` if ``new`` is bad;
    ``existing`` is never modified."""
    p = parse_profile(new)
    kept = []
    for old in existing:
        same_id = old.get("chargingProfileId") == p.id
        same_slot = (old.get("connectorId"), old.get("stackLevel"), old.get("chargingProfilePurpose")) == (
            p.connector_id, p.stack_level, p.purpose)
        if not (same_id or same_slot):
            kept.append(dict(old))
    return kept + [dict(new)]


def clear_profiles(existing: Iterable[Mapping[str, Any]], *, profile_id: int | None = None,
                   connector_id: int | None = None, purpose: str | None = None,
                   stack_level: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """ClearChargingProfile: by id, else by every criterion given (none = all).
    Returns (kept, how many were removed)."""
    kept, removed = [], 0
    for old in existing:
        if profile_id is not None:
            hit = old.get("chargingProfileId") == profile_id
        else:
            hit = ((connector_id is None or old.get("connectorId") == connector_id)
                   and (purpose is None or old.get("chargingProfilePurpose") == purpose)
                   and (stack_level is None or old.get("stackLevel") == stack_level))
        if hit:
            removed += 1
        else:
            kept.append(dict(old))
    return kept, removed
