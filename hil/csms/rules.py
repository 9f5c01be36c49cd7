"""How the test CSMS decides: which idTags it accepts, and which faults it plays.

Both are plain data a test sets up front or changes while the station is connected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.timefmt import utc_text


@dataclass
class TagRule:
    """Accept every tag, or only ``accept``; refuse tags starting with a reject prefix.

    ``blocked`` / ``expired`` answer Blocked / Expired; ``parents`` gives a tag its
    parentIdTag (1.6) / groupIdToken (2.0.1); ``expiry`` is sent as the expiryDate of
    accepted tags.
    """

    accept: frozenset[str] | None = None          # None: every tag not refused below
    reject_prefixes: tuple[str, ...] = ()
    blocked: frozenset[str] = frozenset()
    expired: frozenset[str] = frozenset()
    parents: Mapping[str, str] = field(default_factory=dict)
    expiry: datetime | None = None

    @classmethod
    def accept_all(cls) -> TagRule:
        return cls()

    @classmethod
    def accept_only(cls, tags: Iterable[str], **kw: Any) -> TagRule:
        return cls(accept=frozenset(tags), **kw)

    @classmethod
    def reject_prefix(cls, *prefixes: str, **kw: Any) -> TagRule:
        return cls(reject_prefixes=tuple(prefixes), **kw)

    @classmethod
    def parse(cls, spec: str) -> TagRule:
        """Command-line form: ``all``, ``only:A,B,C`` or ``reject-prefix:X,Y``."""
        spec = spec.strip()
        if spec == "all":
            return cls()
        kind, _, rest = spec.partition(":")
        items = tuple(t for t in (s.strip() for s in rest.split(",")) if t)
        if kind == "only" and items:
            return cls.accept_only(items)
        if kind == "reject-prefix" and items:
            return cls.reject_prefix(*items)
        raise ValueError(f"tag rule {spec!r}: use 'all', 'only:TAG,TAG' or 'reject-prefix:PREFIX,...'")

    def status(self, tag: str) -> str:
        if tag in self.blocked:
            return "Blocked"
        if tag in self.expired:
            return "Expired"
        if any(tag.startswith(p) for p in self.reject_prefixes):
            return "Invalid"
        if self.accept is not None and tag not in self.accept:
            return "Invalid"
        return "Accepted"

    def id_tag_info(self, tag: str) -> dict[str, Any]:
        """OCPP 1.6 IdTagInfo."""
        info: dict[str, Any] = {"status": self.status(tag)}
        if tag in self.parents:
            info["parentIdTag"] = self.parents[tag]
        if self.expiry is not None and info["status"] == "Accepted":
            info["expiryDate"] = utc_text(self.expiry)
        return info

    def id_token_info(self, tag: str) -> dict[str, Any]:
        """OCPP 2.0.1 IdTokenInfoType."""
        info: dict[str, Any] = {"status": self.status(tag)}
        if tag in self.parents:
            info["groupIdToken"] = {"idToken": self.parents[tag], "type": "Central"}
        if self.expiry is not None and info["status"] == "Accepted":
            info["cacheExpiryDateTime"] = utc_text(self.expiry)
        return info


FAULT_KINDS = ("error", "never", "drop", "delay")


@dataclass
class Fault:
    """What to do to the next ``times`` CALLs of one action (None: every one).

    error: answer CALLERROR ``code`` without processing the call.
    never: no answer. ``after=False`` ignores the call; ``after=True`` processes it
           (a transaction is recorded) and then withholds the answer.
    drop:  abort the TCP connection (no close frame). ``after`` as for never: the
           nastiest case for exactly-once is processed-but-unanswered.
    delay: answer normally after ``seconds``.
    """

    kind: str
    times: int | None = None
    after: bool = False
    seconds: float = 0.0
    code: str = "InternalError"
    description: str = "test CSMS fault"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r}: use one of {', '.join(FAULT_KINDS)}")
        if self.times is not None and self.times < 1:
            raise ValueError("fault times must be >= 1 or None (always)")


class Faults:
    """Per-action faults; ``"*"`` applies to every action without its own."""

    def __init__(self) -> None:
        self._by_action: dict[str, Fault] = {}

    def set(self, action: str, fault: Fault) -> None:
        self._by_action[action] = fault

    def clear(self, action: str | None = None) -> None:
        if action is None:
            self._by_action.clear()
        else:
            self._by_action.pop(action, None)

    def take(self, action: str) -> Fault | None:
        """The fault for this CALL, consuming one of its ``times``."""
        key = action if action in self._by_action else "*"
        fault = self._by_action.get(key)
        if fault is None:
            return None
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                del self._by_action[key]
        return fault
