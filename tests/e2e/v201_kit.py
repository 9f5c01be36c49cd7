"""What the 2.0.1 end-to-end tests share: the e2e site as an OCPP 2.0.1 station, the
2.0.1 payloads the CSMS sends it, and readings of the TransactionEvents the CSMS process
logged (hil/csms/log.py JSON lines)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import write_site


def write_site_201(tmp_path: Path, chargers: int = 2) -> Path:
    """tests/e2e/conftest.write_site with ``uplink.ocpp = "2.0.1"`` (the CSMS process
    serves both versions; the agent offers only 2.0.1)."""
    path = write_site(tmp_path, chargers)
    text = path.read_text()
    assert "\n[uplink]\n" in text
    path.write_text(text.replace("\n[uplink]\n", '\n[uplink]\nocpp = "2.0.1"\n', 1))
    return path


def local_list_201(version: int, tags: list[str]) -> dict[str, Any]:
    """A full SendLocalList accepting ``tags``."""
    return {"versionNumber": version, "updateType": "Full", "localAuthorizationList": [
        {"idToken": {"idToken": t, "type": "ISO14443"}, "idTokenInfo": {"status": "Accepted"}} for t in tags]}


def set_variables(*items: tuple[str, str, str]) -> dict[str, Any]:
    """SetVariables for (component, variable, value) triples."""
    return {"setVariableData": [{"component": {"name": c}, "variable": {"name": v}, "attributeValue": value}
                                for c, v, value in items]}


def transaction_events(messages: list[dict[str, Any]], since: int = 0) -> list[dict[str, Any]]:
    """TransactionEvent calls the agent sent, in the order the CSMS received them."""
    return [m for m in messages if m["seq"] >= since and m["dir"] == "in" and m["kind"] == "call"
            and m["action"] == "TransactionEvent"]


def by_transaction(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """TransactionEvent log entries per transactionId, in arrival order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for m in events:
        out.setdefault(m["payload"]["transactionInfo"]["transactionId"], []).append(m)
    return out


def energy(payload: dict[str, Any], context: str | None = None) -> list[float]:
    """Energy.Active.Import.Register values of a TransactionEvent (of one reading context)."""
    return [float(v["value"]) for mv in payload.get("meterValue", []) for v in mv["sampledValue"]
            if v.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register"
            and (context is None or v.get("context") == context)]
