"""Default answers of the test CSMS, and the transactions it has seen.

Kept apart from the server so a reader sees in one place what this CSMS says to each
station message: the boot status and interval it was configured with, idTag decisions
by its TagRule, transactionIds it assigns (1.6) or records (2.0.1), and "no
vendor handler" for DataTransfer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from agent.timefmt import utc_text
from hil.csms.rules import TagRule


@dataclass
class TxRecord:
    """One transaction as the CSMS knows it.

    1.6: ``key`` is the transactionId this CSMS assigned; ``start`` the StartTransaction
    payload, ``stop`` the StopTransaction payload, ``meter_values`` the MeterValues that
    named it. 2.0.1: ``key`` is the station's transactionId; ``events`` every
    TransactionEvent payload in arrival order (``start`` the Started one, ``stop`` the
    Ended one).
    """

    key: int | str
    station: str
    version: str
    start: dict[str, Any] | None = None
    stop: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    meter_values: list[dict[str, Any]] = field(default_factory=list)

    @property
    def seq_nos(self) -> list[int]:
        return [e["seqNo"] for e in self.events]


@dataclass
class Behaviour:
    boot_status: str = "Accepted"
    heartbeat_interval: int = 300
    tags: TagRule = field(default_factory=TagRule)


class Answers:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.transactions: dict[int | str, TxRecord] = {}
        self._next_tx = itertools.count(1)

    def now(self) -> str:
        return utc_text(datetime.now(timezone.utc))

    def default(self, station: str, version: str, action: str, p: dict[str, Any]) -> dict[str, Any]:
        b = self.behaviour
        if action == "BootNotification":
            return {"status": b.boot_status, "currentTime": self.now(), "interval": b.heartbeat_interval}
        if action == "Heartbeat":
            return {"currentTime": self.now()}
        if action == "DataTransfer":
            return {"status": "UnknownVendorId"}
        if action == "SignCertificate":
            return {"status": "Accepted"}
        if version == "1.6":
            return self._default16(station, action, p)
        return self._default201(station, action, p)

    def _default16(self, station: str, action: str, p: dict[str, Any]) -> dict[str, Any]:
        tags = self.behaviour.tags
        if action == "Authorize":
            return {"idTagInfo": tags.id_tag_info(p["idTag"])}
        if action == "StartTransaction":
            tx_id = next(self._next_tx)
            self.transactions[tx_id] = TxRecord(tx_id, station, "1.6", start=p)
            return {"transactionId": tx_id, "idTagInfo": tags.id_tag_info(p["idTag"])}
        if action == "StopTransaction":
            rec = self.transactions.get(p["transactionId"])
            if rec is None:  # a stop for a transaction we never started: keep it visible
                rec = self.transactions[p["transactionId"]] = TxRecord(p["transactionId"], station, "1.6")
            rec.stop = p
            return {"idTagInfo": tags.id_tag_info(p["idTag"])} if "idTag" in p else {}
        if action == "MeterValues" and "transactionId" in p:
            rec = self.transactions.get(p["transactionId"])
            if rec is not None:
                rec.meter_values.append(p)
        return {}

    def _default201(self, station: str, action: str, p: dict[str, Any]) -> dict[str, Any]:
        tags = self.behaviour.tags
        if action == "Authorize":
            return {"idTokenInfo": tags.id_token_info(p["idToken"]["idToken"])}
        if action == "TransactionEvent":
            tx_id = p["transactionInfo"]["transactionId"]
            rec = self.transactions.setdefault(tx_id, TxRecord(tx_id, station, "2.0.1"))
            rec.events.append(p)
            if p["eventType"] == "Started":
                rec.start = p
            elif p["eventType"] == "Ended":
                rec.stop = p
            if "idToken" in p:
                return {"idTokenInfo": tags.id_token_info(p["idToken"]["idToken"])}
            return {}
        if action in ("NotifyEVChargingNeeds", "NotifyEVChargingSchedule"):
            return {"status": "Accepted"}
        if action == "GetCertificateStatus":
            return {"status": "Failed"}
        if action == "Get15118EVCertificate":
            return {"status": "Failed", "exiResponse": ""}
        return {}
