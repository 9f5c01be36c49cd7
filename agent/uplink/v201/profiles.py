"""2.0.1 charging profiles <-> the profile book's shape (OCPP 1.6 csChargingProfiles).

One book serves both versions (agent/charging_profiles.py), so load management and
GetCompositeSchedule see the same profiles whichever version set them. On the way in a
2.0.1 profile is checked for what only 2.0.1 can say, then converted:

- ChargingStationMaxProfile <-> ChargePointMaxProfile; ChargingStationExternalConstraints
  is set by the station itself, never by the CSMS (K01.FR.22): refused;
- ``chargingSchedule`` is a list in 2.0.1 (up to three, for ISO 15118 offers); the
  agent runs one schedule per profile, so more than one is refused;
- the 2.0.1 transactionId is the station's own string id; the book keeps it as
  ``evsite_tx_id`` (``ProfileBook.put(tx_id=...)``), never in 1.6's integer field;
- the schedule's ``id`` and a period's ``phaseToUse`` have no 1.6 field: they are kept
  in ``extras`` (stored by the adapter) so GetChargingProfiles gives them back;
- an Absolute profile without ``startSchedule`` starts when it was received
  (stated in the stored profile, so it means the same after a restart).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agent.timefmt import utc_text

PURPOSE_IN = {"ChargingStationMaxProfile": "ChargePointMaxProfile", "TxDefaultProfile": "TxDefaultProfile",
              "TxProfile": "TxProfile"}
PURPOSE_OUT = {v: k for k, v in PURPOSE_IN.items()}


class ConversionError(ValueError):
    """A 2.0.1 profile the agent cannot take; the message is the statusInfo text."""


def to_book(profile: dict[str, Any], received_at: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the 1.6-shape profile, 2.0.1 extras) for a camelCase 2.0.1 ChargingProfileType."""
    purpose = profile.get("chargingProfilePurpose")
    if purpose not in PURPOSE_IN:
        raise ConversionError(f"chargingProfilePurpose {purpose} cannot be set by the CSMS")
    schedules = profile.get("chargingSchedule") or []
    if len(schedules) != 1:
        raise ConversionError(f"{len(schedules)} charging schedules in one profile; evsite takes exactly one")
    schedule = schedules[0]
    out: dict[str, Any] = {
        "chargingProfileId": profile["id"],
        "stackLevel": profile["stackLevel"],
        "chargingProfilePurpose": PURPOSE_IN[purpose],
        "chargingProfileKind": profile["chargingProfileKind"],
    }
    for key in ("recurrencyKind", "validFrom", "validTo"):
        if profile.get(key) is not None:
            out[key] = profile[key]
    sched: dict[str, Any] = {"chargingRateUnit": schedule["chargingRateUnit"]}
    for key in ("duration", "startSchedule", "minChargingRate"):
        if schedule.get(key) is not None:
            sched[key] = schedule[key]
    if out["chargingProfileKind"] == "Absolute" and "startSchedule" not in sched:
        sched["startSchedule"] = utc_text(received_at)
    periods, phase_to_use = [], {}
    for i, p in enumerate(schedule["chargingSchedulePeriod"]):
        period = {"startPeriod": p["startPeriod"], "limit": p["limit"]}
        if p.get("numberPhases") is not None:
            period["numberPhases"] = p["numberPhases"]
        if p.get("phaseToUse") is not None:
            phase_to_use[str(i)] = p["phaseToUse"]
        periods.append(period)
    sched["chargingSchedulePeriod"] = periods
    out["chargingSchedule"] = sched
    extras: dict[str, Any] = {"scheduleId": schedule["id"]}
    if phase_to_use:
        extras["phaseToUse"] = phase_to_use
    if profile.get("transactionId") is not None:
        extras["transactionId"] = profile["transactionId"]
    return out, extras


def from_book(entry: dict[str, Any], extras: dict[str, Any] | None) -> dict[str, Any]:
    """A stored profile as a 2.0.1 ChargingProfileType (camelCase)."""
    extras = extras or {}
    sched = entry.get("chargingSchedule") or {}
    periods = []
    for i, p in enumerate(sched.get("chargingSchedulePeriod") or []):
        period = {"startPeriod": p["startPeriod"], "limit": p["limit"]}
        if p.get("numberPhases") is not None:
            period["numberPhases"] = p["numberPhases"]
        phase = (extras.get("phaseToUse") or {}).get(str(i))
        if phase is not None:
            period["phaseToUse"] = phase
        periods.append(period)
    schedule: dict[str, Any] = {"id": extras.get("scheduleId", entry["chargingProfileId"]),
                                "chargingRateUnit": sched.get("chargingRateUnit", "A"),
                                "chargingSchedulePeriod": periods}
    for key in ("duration", "startSchedule", "minChargingRate"):
        if sched.get(key) is not None:
            schedule[key] = sched[key]
    out: dict[str, Any] = {
        "id": entry["chargingProfileId"],
        "stackLevel": entry["stackLevel"],
        "chargingProfilePurpose": PURPOSE_OUT.get(entry["chargingProfilePurpose"], entry["chargingProfilePurpose"]),
        "chargingProfileKind": entry["chargingProfileKind"],
        "chargingSchedule": [schedule],
    }
    for key in ("recurrencyKind", "validFrom", "validTo"):
        if entry.get(key) is not None:
            out[key] = entry[key]
    tx = extras.get("transactionId") or entry.get("evsite_tx_id")
    if tx is not None and out["chargingProfilePurpose"] == "TxProfile":
        out["transactionId"] = str(tx)[:36]
    return out


def composite_to_v201(schedule: dict[str, Any], evse_id: int, start: datetime, duration: int,
                      unit: str) -> dict[str, Any]:
    """Load management's composite schedule (the 1.6 chargingSchedule shape, camelCase)
    as a 2.0.1 CompositeScheduleType. Periods without a limit (nothing applies) are sent
    as the station's own limit is unknown here: they are left out."""
    periods = []
    for p in schedule.get("chargingSchedulePeriod") or []:
        if p.get("limit") is None:
            continue
        period = {"startPeriod": int(p["startPeriod"]), "limit": p["limit"]}
        if p.get("numberPhases") is not None:
            period["numberPhases"] = p["numberPhases"]
        periods.append(period)
    return {"evseId": evse_id, "duration": int(schedule.get("duration", duration)),
            "scheduleStart": schedule.get("startSchedule") or utc_text(start),
            "chargingRateUnit": schedule.get("chargingRateUnit", unit), "chargingSchedulePeriod": periods}
