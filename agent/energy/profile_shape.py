"""Charging profiles as evsite stores them, and their validation.

The accepted shape is OCPP 1.6's ``csChargingProfiles`` (the JSON of
SetChargingProfile.req) plus the ``connectorId`` it was set on, in one dict. The 1.6
adapter adds ``connectorId``; the 2.0.1 adapter converts its ``chargingProfile`` (evseId,
id, chargingSchedule as a list) to this shape. Strict, like the site config: unknown keys
and wrong types are errors, every problem is reported with its key path::

    {
      "connectorId": 1,                        # 0 = the whole station
      "chargingProfileId": 7,                  # int
      "transactionId": 123,                    # optional, TxProfile only
      "stackLevel": 0,                         # int >= 0; highest wins within a purpose
      "chargingProfilePurpose": "TxProfile",   # ChargePointMaxProfile | TxDefaultProfile | TxProfile
      "chargingProfileKind": "Absolute",       # Absolute | Recurring | Relative
      "recurrencyKind": "Daily",               # Recurring only: Daily | Weekly
      "validFrom": "2026-01-01T00:00:00Z",     # optional, RFC 3339 with offset
      "validTo": "2026-02-01T00:00:00Z",       # optional
      "chargingSchedule": {
        "duration": 3600,                      # optional, s; absent = until the next recurrence / forever
        "startSchedule": "2026-01-01T22:00:00Z",   # Absolute and Recurring: required (see below)
        "chargingRateUnit": "A",               # A (per phase) | W (total)
        "chargingSchedulePeriod": [            # first startPeriod 0, strictly increasing
          {"startPeriod": 0, "limit": 16.0, "numberPhases": 3}
        ],
        "minChargingRate": 6.0                 # optional; kept, not used (min_current is)
      }
    }

OCPP lets an Absolute profile leave out ``startSchedule`` (the station then uses the
time it received it): adapters fill it in with ``with_start(profile, received_at)``
before storing, so a stored profile means the same after a restart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.timefmt import parse_utc, utc_text

PURPOSES = ("ChargePointMaxProfile", "TxDefaultProfile", "TxProfile")
KINDS = ("Absolute", "Recurring", "Relative")
RECURRENCY = ("Daily", "Weekly")
UNITS = ("A", "W")
TOP_KEYS = {"connectorId", "chargingProfileId", "transactionId", "stackLevel", "chargingProfilePurpose",
            "chargingProfileKind", "recurrencyKind", "validFrom", "validTo", "chargingSchedule"}
SCHEDULE_KEYS = {"duration", "startSchedule", "chargingRateUnit", "chargingSchedulePeriod", "minChargingRate"}
PERIOD_KEYS = {"startPeriod", "limit", "numberPhases"}


class ProfileError(ValueError):
    """A charging profile that cannot be used; ``problems`` lists every one found."""

    def __init__(self, problems: list[str], profile_id: Any = None) -> None:
        self.problems = problems
        head = f"charging profile {profile_id}" if profile_id is not None else "charging profile"
        super().__init__(f"{head}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class Period:
    start: int
    limit: float
    number_phases: int | None = None


@dataclass(frozen=True)
class ChargingProfile:
    """A validated profile (times aware UTC)."""

    connector_id: int
    id: int
    stack_level: int
    purpose: str
    kind: str
    recurrency: str | None
    valid_from: datetime | None
    valid_to: datetime | None
    transaction_id: int | None
    start_schedule: datetime | None
    duration: int | None
    unit: str
    periods: tuple[Period, ...]
    min_charging_rate: float | None = None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, key: str, text: str) -> None:
        self.problems.append(f"{key}: {text}")

    def keys(self, d: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for k in sorted(set(d) - allowed):
            self.bad(f"{where}{k}", f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def int_(self, d: Mapping[str, Any], key: str, where: str = "", *, lo: int | None = None,
             required: bool = True) -> int | None:
        if key not in d:
            if required:
                self.bad(where + key, "missing")
            return None
        v = d[key]
        if not _is_int(v):
            self.bad(where + key, f"must be an integer, got {v!r}")
            return None
        if lo is not None and v < lo:
            self.bad(where + key, f"must be >= {lo}, got {v}")
            return None
        return v

    def choice(self, d: Mapping[str, Any], key: str, choices: tuple[str, ...], where: str = "",
               required: bool = True) -> str | None:
        if key not in d:
            if required:
                self.bad(where + key, f"missing (one of {', '.join(choices)})")
            return None
        v = d[key]
        if v not in choices:
            self.bad(where + key, f"must be one of {', '.join(choices)}, got {v!r}")
            return None
        return v

    def time(self, d: Mapping[str, Any], key: str, where: str = "") -> datetime | None:
        if key not in d or d[key] is None:
            return None
        v = d[key]
        if isinstance(v, datetime):
            if v.tzinfo is None:
                self.bad(where + key, "time without timezone")
                return None
            return v
        if not isinstance(v, str):
            self.bad(where + key, f"must be an RFC 3339 time, got {v!r}")
            return None
        try:
            return parse_utc(v)
        except ValueError as exc:
            self.bad(where + key, f"not an RFC 3339 time with offset ({exc})")
            return None


def parse_profile(d: Any) -> ChargingProfile:
    """The typed profile, or ``ProfileError`` listing every problem."""
    ck = _Checker()
    if not isinstance(d, Mapping):
        raise ProfileError([f"must be an object (csChargingProfiles + connectorId), got {type(d).__name__}"])
    ck.keys(d, TOP_KEYS, "")
    connector = ck.int_(d, "connectorId", lo=0)
    pid = ck.int_(d, "chargingProfileId")
    level = ck.int_(d, "stackLevel", lo=0)
    purpose = ck.choice(d, "chargingProfilePurpose", PURPOSES)
    kind = ck.choice(d, "chargingProfileKind", KINDS)
    recurrency = ck.choice(d, "recurrencyKind", RECURRENCY, required=kind == "Recurring")
    if recurrency is not None and kind != "Recurring":
        ck.bad("recurrencyKind", f"only for chargingProfileKind Recurring, this one is {kind}")
    tx = ck.int_(d, "transactionId", required=False)
    if "transactionId" in d and purpose not in (None, "TxProfile"):
        ck.bad("transactionId", f"only a TxProfile names a transaction, this is a {purpose}")
    if connector is not None and purpose == "ChargePointMaxProfile" and connector != 0:
        ck.bad("connectorId", f"a ChargePointMaxProfile is set on connector 0, got {connector}")
    if connector is not None and purpose == "TxProfile" and connector == 0:
        ck.bad("connectorId", "a TxProfile is set on a connector (> 0), got 0")
    valid_from = ck.time(d, "validFrom")
    valid_to = ck.time(d, "validTo")
    if valid_from and valid_to and valid_to <= valid_from:
        ck.bad("validTo", f"{utc_text(valid_to)} is not after validFrom {utc_text(valid_from)}")

    sched = d.get("chargingSchedule")
    start = duration = unit = min_rate = None
    periods: list[Period] = []
    if not isinstance(sched, Mapping):
        ck.bad("chargingSchedule", "missing" if sched is None else f"must be an object, got {sched!r}")
    else:
        w = "chargingSchedule."
        ck.keys(sched, SCHEDULE_KEYS, w)
        duration = ck.int_(sched, "duration", w, lo=0, required=False)
        start = ck.time(sched, "startSchedule", w)
        if start is None and "startSchedule" not in sched and kind in ("Absolute", "Recurring"):
            ck.bad(w + "startSchedule", f"required for a{'n' if kind == 'Absolute' else ''} {kind} profile "
                   "(adapters set it to the time received when the CSMS leaves it out)")
        unit = ck.choice(sched, "chargingRateUnit", UNITS, w)
        if "minChargingRate" in sched:
            v = sched["minChargingRate"]
            if not _is_num(v) or v < 0:
                ck.bad(w + "minChargingRate", f"must be a number >= 0, got {v!r}")
            else:
                min_rate = float(v)
        raw_periods = sched.get("chargingSchedulePeriod")
        if not isinstance(raw_periods, list) or not raw_periods:
            ck.bad(w + "chargingSchedulePeriod", "must be a non-empty list of periods")
        else:
            last = None
            for i, p in enumerate(raw_periods):
                pw = f"{w}chargingSchedulePeriod[{i}]."
                if not isinstance(p, Mapping):
                    ck.bad(pw[:-1], f"must be an object, got {p!r}")
                    continue
                ck.keys(p, PERIOD_KEYS, pw)
                sp = ck.int_(p, "startPeriod", pw, lo=0)
                limit = p.get("limit")
                if not _is_num(limit) or limit < 0:
                    ck.bad(pw + "limit", f"must be a number >= 0, got {limit!r}")
                    limit = None
                phases = ck.int_(p, "numberPhases", pw, required=False)
                if phases is not None and phases not in (1, 2, 3):
                    ck.bad(pw + "numberPhases", f"must be 1, 2 or 3, got {phases}")
                    phases = None
                if sp is not None:
                    if i == 0 and sp != 0:
                        ck.bad(pw + "startPeriod", f"the first period starts at 0, got {sp}")
                    if last is not None and sp <= last:
                        ck.bad(pw + "startPeriod", f"must be greater than the previous ({last}), got {sp}")
                    last = sp
                if sp is not None and limit is not None:
                    periods.append(Period(sp, float(limit), phases))
    if ck.problems:
        raise ProfileError(ck.problems, d.get("chargingProfileId"))
    return ChargingProfile(
        connector_id=connector, id=pid, stack_level=level, purpose=purpose, kind=kind,  # type: ignore[arg-type]
        recurrency=recurrency, valid_from=valid_from, valid_to=valid_to, transaction_id=tx,
        start_schedule=start, duration=duration, unit=unit, periods=tuple(periods),  # type: ignore[arg-type]
        min_charging_rate=min_rate,
    )


def profile_errors(d: Any) -> list[str]:
    """Every problem of a profile dict; empty when it is usable."""
    try:
        parse_profile(d)
    except ProfileError as exc:
        return exc.problems
    return []


def with_start(profile: Mapping[str, Any], received_at: datetime) -> dict[str, Any]:
    """An Absolute profile without ``startSchedule`` gets ``received_at`` (OCPP: the
    schedule starts when the station received it). Other profiles come back unchanged."""
    out = dict(profile)
    sched = out.get("chargingSchedule")
    if out.get("chargingProfileKind") == "Absolute" and isinstance(sched, Mapping) and "startSchedule" not in sched:
        out["chargingSchedule"] = {**sched, "startSchedule": utc_text(received_at)}
    return out
