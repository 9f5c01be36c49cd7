"""The Local Authorization List as the CSMS manages it: SendLocalList, GetLocalListVersion.

Every request is checked completely before anything is written, and then written in
one store transaction: a refused update (Failed, VersionMismatch) leaves the stored
list exactly as it was (design invariant 4).

Versions, per 1.6 (2.0.1 says the same): GetLocalListVersion answers -1 when the list
is disabled, 0 when it is empty, else the version last set. A differential update must
carry a version greater than the one reported; a full update may carry any version
(a list with entries needs one > 0: 0 means "empty").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.auth.store import AuthStore
from agent.auth.types import AuthEntry, AuthPolicy, ListItem, UpdateStatus, UpdateType, tag_key

log = logging.getLogger("evsite.auth")


@dataclass(frozen=True)
class ListUpdateOutcome:
    status: UpdateStatus
    reason: str = ""           # why it was refused (logged; 2.0.1 can send it as statusInfo)


class LocalList:
    def __init__(self, store: AuthStore, policy: Callable[[], AuthPolicy]) -> None:
        self.store = store
        self.policy = policy

    async def version(self) -> int:
        """What GetLocalListVersion answers."""
        if not self.policy().local_auth_list_enabled:
            return -1
        if await self.store.list_count() == 0:
            return 0
        return await self.store.list_version()

    async def get(self, id_tag: str) -> AuthEntry | None:
        """The list's entry for ``id_tag`` (None when absent or the list is disabled)."""
        if not self.policy().local_auth_list_enabled:
            return None
        return await self.store.list_get(tag_key(id_tag))

    async def send_local_list(self, version: int, update_type: UpdateType | str, items: Sequence[ListItem]) -> ListUpdateOutcome:
        """Apply a SendLocalList request; see the module docstring for the rules."""
        outcome = await self._apply(version, UpdateType(update_type), items)
        if outcome.status is UpdateStatus.ACCEPTED:
            log.info("local authorization list: %s update to version %d (%d entries)", update_type, version, len(items))
        else:
            log.warning("local authorization list: %s update to version %d refused (%s): %s",
                        update_type, version, outcome.status, outcome.reason)
        return outcome

    async def _apply(self, version: int, update_type: UpdateType, items: Sequence[ListItem]) -> ListUpdateOutcome:
        p = self.policy()
        if not p.local_auth_list_enabled:
            return ListUpdateOutcome(UpdateStatus.NOT_SUPPORTED, "LocalAuthListEnabled is false")
        if version < 0:
            return ListUpdateOutcome(UpdateStatus.FAILED, f"list version {version} is negative")
        if len(items) > p.send_local_list_max_length:
            return ListUpdateOutcome(
                UpdateStatus.FAILED, f"{len(items)} entries in one request; SendLocalListMaxLength is {p.send_local_list_max_length}"
            )
        seen: set[str] = set()
        for i, item in enumerate(items):
            if not item.id_tag:
                return ListUpdateOutcome(UpdateStatus.FAILED, f"entry {i} has an empty idTag")
            key = tag_key(item.id_tag)
            if key in seen:
                return ListUpdateOutcome(UpdateStatus.FAILED, f"idTag {item.id_tag!r} appears twice")
            seen.add(key)
            if update_type is UpdateType.FULL and item.status is None:
                return ListUpdateOutcome(UpdateStatus.FAILED, f"entry {item.id_tag!r} of a full update has no idTagInfo")

        entries = [AuthEntry(i.id_tag, i.status, i.expiry, i.parent) for i in items if i.status is not None]
        if update_type is UpdateType.FULL:
            if len(entries) > p.local_auth_list_max_length:
                return ListUpdateOutcome(UpdateStatus.FAILED, f"{len(entries)} entries exceed LocalAuthListMaxLength {p.local_auth_list_max_length}")
            if entries and version == 0:
                return ListUpdateOutcome(UpdateStatus.FAILED, "a list with entries needs a version > 0 (0 means empty)")
            await self.store.list_replace(version, entries)
            return ListUpdateOutcome(UpdateStatus.ACCEPTED)

        current = await self.version()
        if version <= current:
            return ListUpdateOutcome(UpdateStatus.VERSION_MISMATCH, f"differential version {version} is not above the current {current}")
        removals = [tag_key(i.id_tag) for i in items if i.status is None]
        size = await self.store.list_count()
        for key in seen:
            if await self.store.list_get(key) is not None:
                size -= 1
        size += len(entries)
        if size > p.local_auth_list_max_length:
            return ListUpdateOutcome(UpdateStatus.FAILED, f"the list would hold {size} entries; LocalAuthListMaxLength is {p.local_auth_list_max_length}")
        await self.store.list_update(version, entries, removals)
        return ListUpdateOutcome(UpdateStatus.ACCEPTED)
