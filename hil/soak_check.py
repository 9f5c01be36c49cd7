"""What the CSMS received, judged against what the soak driver knows happened.

The kill soak (hil/soak.py) keeps a ``SessionTruth`` per start attempt: its unique tag,
connector, how it was started, what answer the driver got, and the emulated energy
register read at the moments that bound its meter values. ``check(sessions, messages)``
compares that with the test CSMS's message log (every frame, in arrival order) and
lists every problem.

The rules, and why each bound is honest:

- **Exactly once.** A CALL sent again with the same unique id is a retransmission (the
  one the spec allows, after a timeout or a reconnect) and is counted, not a problem.
  The same transaction under a second id is a duplicate: two StartTransactions for one
  tag (tags are never reused), two StopTransactions for one transactionId, or two
  MeterValues with the same payload. A unique id reused for other content is a problem.
- **Every transaction.** A start the agent confirmed (authorize answered "transaction
  started", RemoteStart accepted and the transaction visible) must be at the CSMS
  exactly once; a start whose answer was lost to a kill or a cut may be there at most
  once; a refused one not at all. Every start has exactly one stop: none is left open.
- **In order.** Per connector the starts arrive in the driver's order, each stop before
  the next start. Across connectors: whatever the agent had confirmed before the driver
  caused another event (a start, or a stop's first cause) arrives before that event's
  message (one outbox, one CALL in flight).
- **meterStart** lies in [register at plug-in, register just before the start command]:
  EVs draw nothing before their transaction starts, so the two are equal and the check
  is exact unless energy flowed without a transaction.
- **meterStop** lies in [lo, hi] (1 Wh tolerance: the agent rounds to whole Wh). ``lo``
  is the register at the stop's first cause (the smallest of its causes' readings): read
  right after an unplug (the register is frozen from then on, so an EVDisconnected stop
  is exact); read before a remote or local stop once the agent's own reading had
  reached it; read right before a kill -9. ``hi`` is the register once the stop surely
  happened: read after a confirmed stop, or after the EV was unplugged. A killed agent
  cannot read the register at the kill: its PowerLoss stop after the restart carries the
  register at its first reading after the restart, so for it ``lo`` is the register
  before the kill and ``hi`` the register at the unplug, the EV having charged on
  meanwhile (the charger keeps its last setpoint). The reason must fit a cause:
  EVDisconnected (unplug), Remote, Local, or PowerLoss when a kill happened while the
  transaction could be open.
- **MeterValues** of a transaction come between its start and stop, never decrease, and
  stay within [meterStart, meterStop].
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

TOLERANCE_WH = 1.0
STOP_REASON = {"unplug": "EVDisconnected", "remote": "Remote", "local": "Local", "kill": "PowerLoss"}
OUTCOMES = ("pending", "started", "refused", "uncertain")


@dataclass
class Cause:
    """Something the driver did that ends (or may end) a transaction."""

    kind: str          # unplug | remote | local | kill
    at: float          # driver's monotonic clock
    lo: float          # the register the stop's reading cannot be below (Wh)


@dataclass
class SessionTruth:
    tag: str
    connector: int
    how: str                              # authorize | remote
    initiated: float                      # when the start command went out
    start_lo: float                       # register at plug-in
    start_hi: float                       # register just before the start command
    outcome: str = "pending"
    confirmed: float | None = None        # a durable answer said: started
    causes: list[Cause] = field(default_factory=list)
    stop_hi: float | None = None          # register when the stop had surely happened
    stop_confirmed: float | None = None   # a durable answer said: stopped
    kills: int = 0                        # kill -9s while it could be open

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SessionTruth:
        d = dict(d)
        d["causes"] = [Cause(**c) for c in d.get("causes", [])]
        return cls(**d)


@dataclass
class CheckResult:
    problems: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Call:
    pos: int             # position among first arrivals
    id: str
    action: str
    payload: dict[str, Any]
    copies: int = 1


def _calls(messages: list[dict[str, Any]], station: str | None, problems: list[str]) -> tuple[list[_Call], dict[str, Any]]:
    """First arrival of every station CALL (retransmissions counted) and the CSMS's
    first answer payload per id."""
    first: dict[str, _Call] = {}
    order: list[_Call] = []
    answers: dict[str, Any] = {}
    for m in messages:
        if station is not None and m.get("station") != station:
            continue
        if m["dir"] == "out" and m["kind"] == "result" and m["id"] not in answers:
            answers[m["id"]] = m["payload"]
        if m["dir"] != "in" or m["kind"] != "call":
            continue
        seen = first.get(m["id"])
        if seen is None:
            call = _Call(len(order), m["id"], m["action"], m["payload"])
            first[m["id"]] = call
            order.append(call)
        elif (seen.action, seen.payload) != (m["action"], m["payload"]):
            problems.append(f"message id {m['id']} reused: {seen.action} {json.dumps(seen.payload)[:80]} then "
                            f"{m['action']} {json.dumps(m['payload'])[:80]}")
        else:
            seen.copies += 1
    return order, answers


def _energy(payload: dict[str, Any]) -> list[float]:
    return [float(v["value"]) for mv in payload.get("meterValue", []) for v in mv.get("sampledValue", [])
            if v.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register"
            and v.get("phase") is None]


def check(sessions: list[SessionTruth], messages: list[dict[str, Any]], station: str | None = None) -> CheckResult:
    res = CheckResult()
    p = res.problems
    calls, answers = _calls(messages, station, p)
    starts = [c for c in calls if c.action == "StartTransaction"]
    stops = [c for c in calls if c.action == "StopTransaction"]
    values = [c for c in calls if c.action == "MeterValues" and "transactionId" in c.payload]

    by_tag: dict[str, list[_Call]] = defaultdict(list)
    for s in starts:
        by_tag[s.payload["idTag"]].append(s)
    stop_of: dict[Any, list[_Call]] = defaultdict(list)
    for s in stops:
        stop_of[s.payload["transactionId"]].append(s)
    values_of: dict[Any, list[_Call]] = defaultdict(list)
    for v in values:
        values_of[v.payload["transactionId"]].append(v)
    same_values = Counter(json.dumps(v.payload, sort_keys=True) for v in values)
    p += [f"MeterValues sent {n} times under different ids: {text[:120]}" for text, n in same_values.items() if n > 1]

    known = {s.tag for s in sessions}
    p += [f"StartTransaction for tag {tag!r} that the driver never presented" for tag in by_tag if tag not in known]
    assigned: dict[Any, str] = {}
    exact = bracketed = 0
    widest = 0.0
    per_connector: dict[int, list[tuple[SessionTruth, _Call, _Call | None]]] = defaultdict(list)
    for s in sessions:
        got = by_tag.get(s.tag, [])
        if len(got) > 1:
            p.append(f"{s.tag}: {len(got)} StartTransactions under different ids (a duplicated transaction)")
        if s.outcome == "started" and not got:
            p.append(f"{s.tag}: the agent confirmed the start on connector {s.connector}; the CSMS never got it (lost)")
        if s.outcome == "refused" and got:
            p.append(f"{s.tag}: the start was refused yet the CSMS got a StartTransaction")
        if not got:
            continue
        start = got[0]
        if start.payload["connectorId"] != s.connector:
            p.append(f"{s.tag}: started on connector {start.payload['connectorId']}, presented at {s.connector}")
        tx = (answers.get(start.id) or {}).get("transactionId")
        if tx is None:
            p.append(f"{s.tag}: the CSMS never answered its StartTransaction")
            continue
        assigned[tx] = s.tag
        meter_start = float(start.payload["meterStart"])
        if not s.start_lo - TOLERANCE_WH <= meter_start <= s.start_hi + TOLERANCE_WH:
            p.append(f"{s.tag}: meterStart {meter_start:g} Wh outside the register's [{s.start_lo:g}, {s.start_hi:g}]")
        its_stops = stop_of.get(tx, [])
        if len(its_stops) > 1:
            p.append(f"{s.tag}: {len(its_stops)} StopTransactions for transactionId {tx} under different ids")
        if not its_stops:
            p.append(f"{s.tag}: transaction {tx} left open (no StopTransaction)")
            per_connector[s.connector].append((s, start, None))
            continue
        stop = its_stops[0]
        per_connector[s.connector].append((s, start, stop))
        meter_stop = float(stop.payload["meterStop"])
        reason = stop.payload.get("reason", "Local")
        allowed = {STOP_REASON[c.kind] for c in s.causes} | ({"PowerLoss"} if s.kills else set())
        if reason not in allowed:
            p.append(f"{s.tag}: stopped with {reason}, but the driver caused only {sorted(allowed) or 'nothing'}")
        if not s.causes or s.stop_hi is None:
            p.append(f"{s.tag}: stopped ({reason}) though the driver never ended it")
        else:
            lo, hi = min(c.lo for c in s.causes), s.stop_hi     # (a kill's lo is read just before its signal)
            if not lo - TOLERANCE_WH <= meter_stop <= hi + TOLERANCE_WH:
                p.append(f"{s.tag}: meterStop {meter_stop:g} Wh ({reason}) outside the register's [{lo:g}, {hi:g}]")
            widest = max(widest, hi - lo)
            if hi - lo <= TOLERANCE_WH:
                exact += 1
            else:
                bracketed += 1
        if meter_stop < meter_start:
            p.append(f"{s.tag}: meterStop {meter_stop:g} below meterStart {meter_start:g}")
        last = meter_start
        for v in values_of.get(tx, []):
            if not start.pos < v.pos < stop.pos:
                p.append(f"{s.tag}: MeterValues {v.id} outside its transaction (start #{start.pos}, stop #{stop.pos}, "
                         f"values #{v.pos})")
            for e in _energy(v.payload):
                if e < last - TOLERANCE_WH or e > meter_stop + TOLERANCE_WH:
                    p.append(f"{s.tag}: meter value {e:g} Wh out of order or outside [{meter_start:g}, {meter_stop:g}]")
                last = max(last, e)
    p += [f"StopTransaction for transactionId {tx} that no StartTransaction was given" for tx in stop_of
          if tx not in assigned]
    p += [f"MeterValues for transactionId {tx} that no StartTransaction was given" for tx in values_of
          if tx not in assigned]

    for connector, seq in per_connector.items():
        positions = [(start.pos, stop.pos if stop else None, s.tag) for s, start, stop in seq]
        for (a_start, a_stop, a_tag), (b_start, _, b_tag) in zip(positions, positions[1:]):
            if not a_start < b_start:
                p.append(f"connector {connector}: {b_tag} started before {a_tag} at the CSMS, not in the driver's order")
            if a_stop is not None and not a_stop < b_start:
                p.append(f"connector {connector}: {a_tag}'s stop arrived after {b_tag}'s start")
    p += _causal_order(per_connector)

    res.stats = {
        "sessions": len(sessions), **{o: sum(1 for s in sessions if s.outcome == o) for o in OUTCOMES if o != "pending"},
        "kills_in_sessions": sum(s.kills for s in sessions),
        "start_transactions": len(starts), "stop_transactions": len(stops), "meter_values": len(values),
        "calls": len(calls), "retransmissions": sum(c.copies - 1 for c in calls),
        "stops_exact": exact, "stops_bracketed": bracketed, "widest_stop_bracket_wh": round(widest, 1),
        "stop_reasons": dict(Counter(c.payload.get("reason", "Local") for c in stops)),
    }
    return res


def _causal_order(per_connector: dict[int, list[tuple[SessionTruth, _Call, _Call | None]]]) -> list[str]:
    """Whatever was confirmed before the driver caused an event arrives before it."""
    done: list[tuple[float, int, str]] = []        # (confirmed at, position, what)
    caused: list[tuple[float, int, str]] = []      # (caused at, position, what)
    for seq in per_connector.values():
        for s, start, stop in seq:
            caused.append((s.initiated, start.pos, f"{s.tag} start"))
            if s.confirmed is not None:
                done.append((s.confirmed, start.pos, f"{s.tag} start"))
            if stop is not None and s.causes:
                caused.append((s.causes[0].at, stop.pos, f"{s.tag} stop"))
                if s.stop_confirmed is not None:
                    done.append((s.stop_confirmed, stop.pos, f"{s.tag} stop"))
    done.sort()
    caused.sort()
    problems = []
    i, latest = 0, (-1, "")
    for at, pos, what in caused:
        while i < len(done) and done[i][0] < at:
            latest = max(latest, (done[i][1], done[i][2]))
            i += 1
        if latest[0] > pos:
            problems.append(f"{latest[1]} was confirmed before {what} was caused, yet arrived after it")
    return problems
