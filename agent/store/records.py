"""What the store hands back: a transaction's record and outbox rows.

Plain frozen data, so sessions (restart recovery) and the uplink (delivery) never see a
database row or a version's payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from agent.sessions.events import Event, StopReason


@dataclass(frozen=True)
class TxRecord:
    """One transaction as the ``transactions`` table keeps it.

    ``started_at`` / ``ended_at`` are the ``at`` of its started / ended events;
    ``csms_tx_id`` is the id a 1.6 CSMS assigned (stored by ``outbox_done``);
    ``last_meter_wh`` is the energy register of the latest meter sample of the
    transaction, if any; ``next_tx_seq`` is the ``tx_seq`` its next outbox row gets.
    """

    tx_id: str
    connector_id: int
    id_tag: str
    meter_start_wh: int
    started_at: datetime
    state: str                          # "open" | "ended"
    meter_stop_wh: int | None = None
    ended_at: datetime | None = None
    reason: StopReason | None = None
    csms_tx_id: int | str | None = None
    last_meter_wh: float | None = None
    next_tx_seq: int = 0

    @property
    def is_open(self) -> bool:
        return self.state == "open"


@dataclass(frozen=True)
class OutboxRow:
    """One queued event for the CSMS, oldest first by ``seq``.

    ``tx_seq`` is the event's index among its transaction's outbox rows (0 = started),
    fixed at ``record()`` so a 2.0.1 seqNo is the same on every retry; None outside a
    transaction. ``message_id`` is stored before the first send and reused on retries.
    """

    seq: int
    event: Event
    message_id: str | None
    attempts: int
    tx_id: str | None
    tx_seq: int | None
    created_at: datetime
    last_error: str | None = None


@dataclass(frozen=True)
class DroppedRow:
    """An outbox row that was given up (``reason``: "overflow", or the uplink's words),
    kept for diagnostics with its event."""

    seq: int
    event: Event
    message_id: str | None
    attempts: int
    tx_id: str | None
    tx_seq: int | None
    created_at: datetime
    last_error: str | None
    reason: str
    dropped_at: datetime
