"""The kill soak's verdict (hil/soak_check.py) on hand-made CSMS logs: a clean record
passes, and each way of losing, duplicating, reordering or mis-metering a transaction
is reported. Without these the soak could pass by checking nothing."""

from __future__ import annotations

import copy

from hil.soak_check import Cause, SessionTruth, check

STATION = "S"


def call(mid, action, payload):
    return {"station": STATION, "dir": "in", "kind": "call", "id": mid, "action": action, "payload": payload}


def result(mid, action, payload):
    return {"station": STATION, "dir": "out", "kind": "result", "id": mid, "action": action, "payload": payload}


def values(tx, wh, mid):
    return call(mid, "MeterValues", {"connectorId": 1, "transactionId": tx, "meterValue": [
        {"timestamp": "t", "sampledValue": [{"value": str(wh), "measurand": "Energy.Active.Import.Register"}]}]})


def one_session(tag="0001-SOAK", tx=7, start=100, stop=160, reason="EVDisconnected", prefix="a"):
    return [
        call(f"{prefix}1", "StartTransaction", {"connectorId": 1, "idTag": tag, "meterStart": start, "timestamp": "t"}),
        result(f"{prefix}1", "StartTransaction", {"transactionId": tx, "idTagInfo": {"status": "Accepted"}}),
        values(tx, start + 30, f"{prefix}2"),
        result(f"{prefix}2", "MeterValues", {}),
        call(f"{prefix}3", "StopTransaction", {"transactionId": tx, "meterStop": stop, "timestamp": "t", "reason": reason}),
        result(f"{prefix}3", "StopTransaction", {}),
    ]


def truth(tag="0001-SOAK", *, lo=160, hi=160, kind="unplug", kills=0, outcome="started", connector=1,
          initiated=1.0, confirmed=1.1, cause_at=5.0):
    return SessionTruth(tag, connector, "authorize", initiated, 100, 100, outcome=outcome, confirmed=confirmed,
                        causes=[Cause(kind, cause_at, lo)], stop_hi=hi, kills=kills)


def test_a_clean_record_passes_and_is_counted():
    res = check([truth()], one_session(), STATION)
    assert res.ok, res.problems
    assert res.stats["start_transactions"] == res.stats["stop_transactions"] == 1
    assert res.stats["meter_values"] == 1 and res.stats["stops_exact"] == 1


def test_a_retransmission_with_the_same_id_is_counted_not_blamed():
    log = one_session()
    log.insert(2, copy.deepcopy(log[0]))          # the Start again, same unique id
    res = check([truth()], log, STATION)
    assert res.ok, res.problems
    assert res.stats["retransmissions"] == 1


def test_the_same_transaction_under_a_second_id_is_a_duplicate():
    log = one_session() + one_session(prefix="b")[:2]
    res = check([truth()], log, STATION)
    assert any("2 StartTransactions under different ids" in p for p in res.problems)


def test_a_confirmed_start_missing_at_the_csms_is_lost():
    res = check([truth(), truth("0002-SOAK")], one_session(), STATION)
    assert any("0002-SOAK" in p and "lost" in p for p in res.problems)


def test_an_uncertain_start_may_be_missing_but_a_refused_one_may_not_arrive():
    assert check([truth(), truth("0002-SOAK", outcome="uncertain")], one_session(), STATION).ok
    res = check([truth(outcome="refused")], one_session(), STATION)
    assert any("refused yet" in p for p in res.problems)


def test_a_transaction_without_stop_is_left_open():
    res = check([truth()], one_session()[:4], STATION)
    assert any("left open" in p for p in res.problems)


def test_meter_values_outside_the_registers_bracket_are_reported():
    res = check([truth(lo=170, hi=180)], one_session(), STATION)
    assert any("meterStop 160 Wh" in p for p in res.problems)
    late_start = truth()
    late_start.start_hi = late_start.start_lo = 90
    res = check([late_start], one_session(), STATION)
    assert any("meterStart 100 Wh" in p for p in res.problems)


def test_power_loss_needs_a_kill_while_the_transaction_could_be_open():
    log = one_session(reason="PowerLoss")
    assert any("PowerLoss" in p for p in check([truth()], log, STATION).problems)
    assert check([truth(kills=1)], log, STATION).ok


def test_a_stop_overtaking_its_start_or_a_later_session_is_out_of_order():
    log = one_session()
    reordered = [log[4], log[5], *log[:4]]
    res = check([truth()], reordered, STATION)
    assert any("outside its transaction" in p for p in res.problems)
    # the second session on the same connector arrives before the first one's stop
    first, second = one_session(), one_session("0002-SOAK", tx=8, start=160, stop=200, prefix="b")
    log = first[:4] + second[:2] + first[4:] + second[2:]
    sessions = [truth(), truth("0002-SOAK", lo=200, hi=200, initiated=6.0, confirmed=6.1, cause_at=9.0)]
    res = check(sessions, log, STATION)
    assert any("stop arrived after 0002-SOAK's start" in p for p in res.problems)


def test_something_confirmed_before_another_event_must_arrive_before_it():
    first = one_session(reason="Local")                            # connector 1, stop confirmed at 5.5
    other = one_session("0002-SOAK", tx=8, start=160, stop=200, prefix="b")
    for m in other:
        if m["kind"] == "call" and "connectorId" in m["payload"]:
            m["payload"]["connectorId"] = 2
    a = truth(kind="local", cause_at=5.0)
    a.stop_confirmed = 5.5
    b = truth("0002-SOAK", lo=200, hi=200, connector=2, initiated=6.0, confirmed=6.1, cause_at=9.0)
    b.start_lo = b.start_hi = 160
    log_ok = first + other
    assert check([a, b], log_ok, STATION).ok
    log_bad = first[:4] + other[:2] + first[4:] + other[2:]        # b's start overtakes a's confirmed stop
    res = check([a, b], log_bad, STATION)
    assert any("confirmed before 0002-SOAK start" in p for p in res.problems)


def test_a_message_id_reused_for_other_content_is_reported():
    log = one_session()
    log.append(call("a1", "StartTransaction", {"connectorId": 1, "idTag": "0001-SOAK", "meterStart": 101,
                                                "timestamp": "t"}))
    assert any("reused" in p for p in check([truth()], log, STATION).problems)


def test_unknown_tags_and_transaction_ids_are_reported():
    log = one_session("FFFF-SOAK") + [call("z", "StopTransaction", {"transactionId": 99, "meterStop": 1,
                                                                     "timestamp": "t"})]
    problems = check([], log, STATION).problems
    assert any("never presented" in p for p in problems)
    assert any("transactionId 99" in p for p in problems)
