"""OCPP 1.6 charging-profile math: validation, stack levels, validity, recurrence,
relative schedules, W -> A, combining purposes, composite schedules, Set/Clear rules."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agent.energy.profiles import (
    ProfileError,
    clear_profiles,
    composite_schedule,
    connector_limit,
    effective_limit,
    install_profile,
    parse_profile,
    profile_errors,
    station_limit,
    with_start,
)

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)  # a Monday


def prof(pid=1, *, connector=1, purpose="TxDefaultProfile", kind="Absolute", level=0, periods=((0, 16),),
         unit="A", start=T0, duration=None, **extra):
    sched = {"chargingRateUnit": unit,
             "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods]}
    if start is not None:
        sched["startSchedule"] = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    if duration is not None:
        sched["duration"] = duration
    d = {"connectorId": connector, "chargingProfileId": pid, "stackLevel": level,
         "chargingProfilePurpose": purpose, "chargingProfileKind": kind, "chargingSchedule": sched}
    d.update(extra)
    return d


def limit(profiles, t, connector=1, **kw):
    e = effective_limit(profiles, connector, t, **kw)
    return None if e is None else round(e.amps, 3)


# ---------------------------------------------------------------- validation

def test_a_valid_profile_parses():
    p = parse_profile(prof(periods=((0, 16), (3600, 8.5)), duration=7200, validTo="2026-04-01T00:00:00+02:00"))
    assert p.stack_level == 0 and p.unit == "A" and [x.limit for x in p.periods] == [16.0, 8.5]
    assert p.valid_to == datetime(2026, 3, 31, 22, 0, tzinfo=timezone.utc)


def test_every_problem_is_named_with_its_key():
    bad = prof(level=-1, periods=((5, 16), (5, -1)), unit="kW", purpose="ChargePointMaxProfile", color="red")
    bad["chargingSchedule"]["chargingSchedulePeriod"][1]["numberPhases"] = 4
    problems = profile_errors(bad)
    text = "\n".join(problems)
    assert "color: unknown key" in text
    assert "stackLevel: must be >= 0, got -1" in text
    assert "connectorId: a ChargePointMaxProfile is set on connector 0, got 1" in text
    assert "chargingSchedule.chargingRateUnit: must be one of A, W, got 'kW'" in text
    assert "chargingSchedule.chargingSchedulePeriod[0].startPeriod: the first period starts at 0, got 5" in text
    assert "chargingSchedule.chargingSchedulePeriod[1].startPeriod: must be greater than the previous (5), got 5" in text
    assert "chargingSchedule.chargingSchedulePeriod[1].limit: must be a number >= 0, got -1" in text
    assert "chargingSchedule.chargingSchedulePeriod[1].numberPhases: must be 1, 2 or 3, got 4" in text
    with pytest.raises(ProfileError, match="charging profile 1: "):
        parse_profile(bad)


@pytest.mark.parametrize("change, message", [
    (dict(kind="Recurring"), "recurrencyKind: missing"),
    (dict(recurrencyKind="Daily"), "recurrencyKind: only for chargingProfileKind Recurring"),
    (dict(start=None), "chargingSchedule.startSchedule: required for an Absolute profile"),
    (dict(purpose="TxProfile", connector=0), "connectorId: a TxProfile is set on a connector (> 0), got 0"),
    (dict(transactionId=5), "transactionId: only a TxProfile names a transaction"),
    (dict(validFrom="2026-03-02T12:00:00Z", validTo="2026-03-02T11:00:00Z"), "validTo: 2026-03-02T11:00:00.000Z is not after"),
    (dict(validFrom="yesterday"), "validFrom: not an RFC 3339 time"),
    (dict(validFrom="2026-03-02T12:00:00"), "validFrom: not an RFC 3339 time with offset"),
    (dict(stackLevel="1"), "stackLevel: must be an integer, got '1'"),
])
def test_bad_profiles(change, message):
    kw = {k: v for k, v in change.items() if k in ("kind", "start", "purpose", "connector")}
    extra = {k: v for k, v in change.items() if k not in kw}
    d = prof(**kw)
    d.update(extra)
    assert any(message in p for p in profile_errors(d)), profile_errors(d)


def test_not_an_object():
    assert profile_errors([1, 2]) == ["must be an object (csChargingProfiles + connectorId), got list"]


def test_absolute_without_start_gets_the_time_received():
    d = prof(start=None)
    fixed = with_start(d, T0)
    assert fixed["chargingSchedule"]["startSchedule"] == "2026-03-02T12:00:00.000Z"
    assert profile_errors(fixed) == [] and "startSchedule" not in d["chargingSchedule"]


# ---------------------------------------------------------------- one moment

def test_highest_stack_level_wins_within_a_purpose():
    ps = [prof(1, level=0, periods=((0, 16),)), prof(2, level=3, periods=((0, 10),)), prof(3, level=1, periods=((0, 6),))]
    assert limit(ps, T0) == 10.0


def test_a_higher_profile_whose_schedule_ended_gives_way():
    ps = [prof(1, level=0, periods=((0, 16),)), prof(2, level=5, periods=((0, 8),), duration=600)]
    assert limit(ps, T0 + timedelta(seconds=599)) == 8.0
    assert limit(ps, T0 + timedelta(seconds=600)) == 16.0


def test_validity_window():
    ps = [prof(1, validFrom="2026-03-02T13:00:00Z", validTo="2026-03-02T14:00:00Z")]
    assert limit(ps, T0) is None
    assert limit(ps, T0 + timedelta(hours=1)) == 16.0
    assert limit(ps, T0 + timedelta(hours=2)) is None


def test_before_the_schedule_starts_nothing_applies():
    assert limit([prof(1, start=T0 + timedelta(minutes=5))], T0) is None


def test_periods_step_through_the_schedule():
    ps = [prof(periods=((0, 16), (1800, 10), (3600, 6)))]
    assert [limit(ps, T0 + timedelta(seconds=s)) for s in (0, 1799, 1800, 3600, 99999)] == [16, 16, 10, 6, 6]


def test_recurring_daily_runs_across_midnight():
    # every night 22:00 for 8 h at 10 A, the rest of the day 32 A
    night = prof(1, kind="Recurring", recurrencyKind="Daily", start=datetime(2026, 1, 1, 22, 0, tzinfo=timezone.utc),
                 periods=((0, 10), (8 * 3600, 32)))
    day = datetime(2026, 3, 2, tzinfo=timezone.utc)
    assert limit([night], day + timedelta(hours=21, minutes=59)) == 32
    assert limit([night], day + timedelta(hours=22)) == 10
    assert limit([night], day + timedelta(hours=23, minutes=59)) == 10
    assert limit([night], day + timedelta(days=1, hours=3)) == 10  # after midnight: yesterday's repetition
    assert limit([night], day + timedelta(days=1, hours=6)) == 32


def test_recurring_weekly():
    # Mondays 08:00 (T0 is a Monday) for 10 h at 6 A
    weekly = prof(1, kind="Recurring", recurrencyKind="Weekly", start=datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc),
                  periods=((0, 6),), duration=10 * 3600)
    assert limit([weekly], datetime(2026, 3, 9, 9, 0, tzinfo=timezone.utc)) == 6  # next Monday
    assert limit([weekly], datetime(2026, 3, 10, 9, 0, tzinfo=timezone.utc)) is None  # Tuesday


def test_relative_counts_from_the_transaction_start():
    rel = prof(1, kind="Relative", start=None, periods=((0, 6), (600, 16)))
    tx = T0 - timedelta(seconds=700)
    assert limit([rel], T0, tx_start=tx) == 16
    assert limit([rel], T0, tx_start=T0 - timedelta(seconds=100)) == 6
    assert limit([rel], T0) == 6  # no transaction: from the moment asked about


def test_watts_become_amps_with_voltage_and_phases():
    w3 = prof(1, unit="W", periods=((0, 11040),))
    assert limit([w3], T0) == 16.0  # 11040 W / (230 V * 3)
    w1 = prof(1, unit="W", periods=((0, 3680),))
    w1["chargingSchedule"]["chargingSchedulePeriod"][0]["numberPhases"] = 1
    assert limit([w1], T0) == 16.0
    assert limit([w3], T0, nominal_voltage=240.0) == 15.333


def test_tx_profile_beats_tx_default_only_during_a_transaction():
    ps = [prof(1, purpose="TxDefaultProfile", connector=0, periods=((0, 16),)),
          prof(2, purpose="TxProfile", connector=1, periods=((0, 20),), transactionId=42)]
    assert limit(ps, T0) == 16  # no transaction
    assert limit(ps, T0, tx_start=T0, tx_id=42) == 20  # TxProfile even though it is higher
    assert limit(ps, T0, tx_start=T0, tx_id=43) == 16  # another transaction's profile
    assert limit(ps, T0, connector=2, tx_start=T0, tx_id=42) == 16  # another connector


def test_charge_point_max_caps_the_connector_and_connector_zero():
    ps = [prof(1, purpose="ChargePointMaxProfile", connector=0, periods=((0, 12),)),
          prof(2, purpose="TxDefaultProfile", connector=0, periods=((0, 16),))]
    assert limit(ps, T0) == 12
    assert limit(ps, T0, connector=0) == 12
    assert station_limit(ps, T0).amps == 12
    assert connector_limit(ps, 1, T0).amps == 16  # its own part, without the station's
    assert effective_limit(ps, 1, T0).source == "ChargePointMaxProfile 1 (stack 0)"


def test_tx_default_on_the_connector_beats_connector_zero_at_equal_stack_level():
    ps = [prof(1, connector=0, periods=((0, 16),)), prof(2, connector=1, periods=((0, 10),))]
    assert limit(ps, T0) == 10
    assert limit(ps, T0, connector=2) == 16


# ---------------------------------------------------------------- composite schedule

def test_composite_schedule_merges_stack_levels_and_purposes():
    ps = [prof(1, level=0, periods=((0, 16),)),
          prof(2, level=1, start=T0 + timedelta(minutes=10), periods=((0, 8),), duration=1200),
          prof(3, purpose="ChargePointMaxProfile", connector=0, start=T0 + timedelta(minutes=20), periods=((0, 6),))]
    cs = composite_schedule(ps, 1, T0, 3600, "A")
    assert [(p.start_period, p.limit) for p in cs.periods] == [(0, 16), (600, 8), (1200, 6)]
    ocpp = cs.to_ocpp(unlimited=32)
    assert ocpp == {"duration": 3600, "startSchedule": "2026-03-02T12:00:00.000Z", "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}, {"startPeriod": 600, "limit": 8.0},
                                               {"startPeriod": 1200, "limit": 6.0}]}


def test_composite_schedule_in_watts_and_gaps_without_a_profile():
    ps = [prof(1, start=T0 + timedelta(minutes=30), periods=((0, 16),), duration=600)]
    cs = composite_schedule(ps, 1, T0, 3600, "W")
    assert [(p.start_period, p.limit) for p in cs.periods] == [(0, None), (1800, 16 * 230 * 3), (2400, None)]
    assert cs.to_ocpp(unlimited=22080)["chargingSchedulePeriod"][0]["limit"] == 22080


def test_composite_schedule_follows_a_daily_recurrence_over_midnight():
    night = prof(1, kind="Recurring", recurrencyKind="Daily", start=datetime(2026, 1, 1, 22, 0, tzinfo=timezone.utc),
                 periods=((0, 10), (8 * 3600, 32)))
    start = datetime(2026, 3, 2, 20, 0, tzinfo=timezone.utc)
    cs = composite_schedule([night], 1, start, 24 * 3600)
    # 20:00-22:00 day rate, 22:00-06:00 night rate, then day rate to the end of the window
    assert [(p.start_period, p.limit) for p in cs.periods] == [(0, 32), (7200, 10), (36000, 32)]


def test_composite_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="chargingRateUnit must be A or W"):
        composite_schedule([], 1, T0, 60, "kW")
    with pytest.raises(ValueError, match="duration must be a positive"):
        composite_schedule([], 1, T0, 0)
    with pytest.raises(ProfileError):
        composite_schedule([{"connectorId": 1}], 1, T0, 60)


def test_same_answer_for_connector_limit_and_composite_at_every_moment():
    ps = [prof(1, level=0, periods=((0, 16), (900, 12))),
          prof(2, level=2, kind="Recurring", recurrencyKind="Daily", start=T0 - timedelta(days=3, minutes=-5),
               periods=((0, 7),), duration=300)]
    cs = composite_schedule(ps, 1, T0, 1800)
    for s in range(0, 1800, 60):
        period = [p for p in cs.periods if p.start_period <= s][-1]
        assert period.limit == limit(ps, T0 + timedelta(seconds=s)), s


# ---------------------------------------------------------------- Set / Clear

def test_install_replaces_same_id_or_same_slot():
    a = prof(1, level=0)
    b = prof(2, level=1)
    c = prof(3, level=0, connector=2)
    ps = install_profile([a, b, c], prof(4, level=1))  # same connector, purpose, level as b
    assert sorted(p["chargingProfileId"] for p in ps) == [1, 3, 4]
    ps = install_profile(ps, prof(1, level=7))  # same id as a
    assert sorted((p["chargingProfileId"], p["stackLevel"]) for p in ps) == [(1, 7), (3, 0), (4, 1)]
    with pytest.raises(ProfileError):
        install_profile(ps, prof(9, level=-2))


def test_clear_by_id_or_criteria():
    ps = [prof(1, level=0), prof(2, level=1), prof(3, purpose="ChargePointMaxProfile", connector=0)]
    kept, n = clear_profiles(ps, profile_id=2)
    assert n == 1 and [p["chargingProfileId"] for p in kept] == [1, 3]
    kept, n = clear_profiles(ps, purpose="TxDefaultProfile", stack_level=1)
    assert n == 1 and [p["chargingProfileId"] for p in kept] == [1, 3]
    kept, n = clear_profiles(ps, connector_id=0)
    assert n == 1 and [p["chargingProfileId"] for p in kept] == [1, 2]
    kept, n = clear_profiles(ps)
    assert n == 3 and kept == []
