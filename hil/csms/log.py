"""Every OCPP frame the test CSMS sees, in order, both directions.

Tests assert on this log instead of sleeping: ``wait_for`` returns as soon as a
matching message is (or already was) logged. With a path, each entry is also appended
to a JSONL file, flushed per line, so an end-to-end test or a person can follow a CSMS
running as a separate process (``tail -f``).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from agent.timefmt import utc_text

DIRECTIONS = ("in", "out")           # in: station -> CSMS; out: CSMS -> station
KINDS = ("call", "result", "error", "invalid")


@dataclass(frozen=True)
class Message:
    seq: int                 # position in the log, from 0
    at: datetime             # when the CSMS read or wrote it (UTC)
    station: str
    version: str             # "1.6" or "2.0.1"
    direction: str           # "in" | "out"
    kind: str                # "call" | "result" | "error" | "invalid" (not an OCPP-J frame)
    unique_id: str | None
    action: str | None       # for results and errors: the action of the call they answer
    payload: Any             # call/result: the JSON object; error: {"code", "description", "details"}
    raw: str
    retransmission: bool = False   # a CALL whose unique id this station already sent

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": utc_text(self.at),
            "station": self.station,
            "version": self.version,
            "dir": self.direction,
            "kind": self.kind,
            "id": self.unique_id,
            "action": self.action,
            "payload": self.payload,
            "retransmission": self.retransmission,
        }

    def __str__(self) -> str:
        arrow = "->" if self.direction == "in" else "<-"
        flag = " (retransmission)" if self.retransmission else ""
        return f"#{self.seq} {self.station} {arrow} {self.kind} {self.action or '?'} {self.unique_id}{flag}"


Predicate = Callable[[Message], bool]


class MessageLog:
    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._entries: list[Message] = []
        self._changed = asyncio.Event()
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 (closed in close())

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, **fields: Any) -> Message:
        msg = Message(seq=len(self._entries), at=datetime.now(timezone.utc), **fields)
        self._entries.append(msg)
        if self._file is not None:
            self._file.write(json.dumps(msg.to_json(), separators=(",", ":"), default=str) + "\n")
            self._file.flush()
        # wake every waiter, then give the next ones a fresh event
        self._changed.set()
        self._changed = asyncio.Event()
        return msg

    def select(
        self,
        station: str | None = None,
        action: str | None = None,
        direction: str | None = None,
        kind: str | None = None,
        *,
        since: int = 0,
        retransmissions: bool = True,
        predicate: Predicate | None = None,
    ) -> list[Message]:
        if direction is not None and direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        out = []
        for m in self._entries[since:]:
            if station is not None and m.station != station:
                continue
            if action is not None and m.action != action:
                continue
            if direction is not None and m.direction != direction:
                continue
            if kind is not None and m.kind != kind:
                continue
            if not retransmissions and m.retransmission:
                continue
            if predicate is not None and not predicate(m):
                continue
            out.append(m)
        return out

    async def wait_for(
        self,
        action: str | None = None,
        predicate: Predicate | None = None,
        timeout: float = 5.0,
        *,
        station: str | None = None,
        direction: str = "in",
        kind: str | None = "call",
        count: int = 1,
        since: int = 0,
    ) -> Message:
        """The ``count``-th message matching, counting from log position ``since``;
        waits up to ``timeout`` seconds for it. TimeoutError says what did arrive."""
        if count < 1:
            raise ValueError("count must be >= 1")

        def found() -> Message | None:
            hits = self.select(station, action, direction, kind, since=since, predicate=predicate)
            return hits[count - 1] if len(hits) >= count else None

        try:
            async with asyncio.timeout(timeout):
                while (hit := found()) is None:
                    await self._changed.wait()
                return hit
        except TimeoutError:
            seen = len(self.select(station, action, direction, kind, since=since, predicate=predicate))
            tail = "\n  ".join(str(m) for m in self._entries[-12:]) or "(nothing)"
            what = f"{kind or 'message'} {action or '(any action)'} {direction}"
            raise TimeoutError(
                f"test CSMS: no {what}{' from ' + station if station else ''} #{count} within {timeout:g} s "
                f"({seen} matching so far); last messages:\n  {tail}"
            ) from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
