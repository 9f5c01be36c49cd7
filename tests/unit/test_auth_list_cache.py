"""SendLocalList / GetLocalListVersion semantics, and the authorization cache."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agent.auth import (
    AuthCache, AuthEntry, AuthPolicy, AuthResult, AuthStatus, ListItem, LocalList, MemoryAuthStore, UpdateStatus,
)
from agent.clock import SimClock

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
A, B = AuthStatus.ACCEPTED, AuthStatus.BLOCKED
OK, FAILED, MISMATCH = UpdateStatus.ACCEPTED, UpdateStatus.FAILED, UpdateStatus.VERSION_MISMATCH


def make_list(**policy) -> tuple[LocalList, MemoryAuthStore]:
    store = MemoryAuthStore()
    p = AuthPolicy(**policy)
    return LocalList(store, lambda: p), store


async def snapshot(store: MemoryAuthStore) -> tuple[int, dict]:
    return await store.list_version(), dict(store._list)


async def test_version_semantics():
    ll, _ = make_list()
    assert await ll.version() == 0                         # nothing yet: empty
    assert (await ll.send_local_list(3, "Full", [ListItem("A", A), ListItem("B", B)])).status is OK
    assert await ll.version() == 3
    assert (await ll.send_local_list(5, "Full", [])).status is OK
    assert await ll.version() == 0                         # empty list reads 0 whatever its version
    disabled, _ = make_list(local_auth_list_enabled=False)
    assert await disabled.version() == -1


async def test_full_update_replaces_and_lookups_ignore_case():
    ll, _ = make_list()
    await ll.send_local_list(1, "Full", [ListItem("OLD", A)])
    expiry = NOW + timedelta(days=1)
    await ll.send_local_list(2, "Full", [ListItem("Card-1", A, expiry=expiry, parent="P")])
    assert await ll.get("OLD") is None
    entry = await ll.get("card-1")
    assert (entry.id_tag, entry.status, entry.expiry, entry.parent) == ("Card-1", A, expiry, "P")


async def test_differential_adds_updates_removes_and_sets_version():
    ll, _ = make_list()
    await ll.send_local_list(1, "Full", [ListItem("A", A), ListItem("B", A)])
    out = await ll.send_local_list(2, "Differential", [ListItem("A", B), ListItem("B"), ListItem("C", A)])
    assert out.status is OK
    assert (await ll.get("A")).status is B
    assert await ll.get("B") is None
    assert (await ll.get("C")).status is A
    assert await ll.version() == 2


@pytest.mark.parametrize("version", [1, 0])
async def test_differential_version_must_grow(version):
    ll, store = make_list()
    await ll.send_local_list(1, "Full", [ListItem("A", A)])
    before = await snapshot(store)
    out = await ll.send_local_list(version, "Differential", [ListItem("Z", A)])
    assert out.status is MISMATCH and "not above the current 1" in out.reason
    assert await snapshot(store) == before


async def test_differential_on_an_empty_list_compares_with_zero():
    ll, _ = make_list()
    await ll.send_local_list(7, "Full", [])
    assert (await ll.send_local_list(1, "Differential", [ListItem("A", A)])).status is OK
    assert await ll.version() == 1


@pytest.mark.parametrize(
    "version, kind, items, policy, words",
    [
        (2, "Full", [ListItem("A")], {}, "has no idTagInfo"),
        (2, "Full", [ListItem("A", A), ListItem("a", B)], {}, "appears twice"),
        (2, "Differential", [ListItem("", A)], {}, "empty idTag"),
        (-1, "Full", [], {}, "negative"),
        (0, "Full", [ListItem("A", A)], {}, "version > 0"),
        (2, "Full", [ListItem(f"T{i}", A) for i in range(4)], {"send_local_list_max_length": 3}, "SendLocalListMaxLength is 3"),
        (2, "Full", [ListItem(f"T{i}", A) for i in range(3)], {"local_auth_list_max_length": 2}, "exceed LocalAuthListMaxLength 2"),
        (2, "Differential", [ListItem("N1", A), ListItem("N2", A)], {"local_auth_list_max_length": 2}, "would hold 3 entries"),
    ],
)
async def test_bad_updates_fail_and_touch_nothing(version, kind, items, policy, words):
    ll, store = make_list(**policy)
    await ll.send_local_list(1, "Full", [ListItem("OLD", A)])
    before = await snapshot(store)
    out = await ll.send_local_list(version, kind, items)
    assert out.status is FAILED and words in out.reason
    assert await snapshot(store) == before


async def test_differential_that_replaces_entries_fits_the_capacity():
    ll, _ = make_list(local_auth_list_max_length=2)
    await ll.send_local_list(1, "Full", [ListItem("A", A), ListItem("B", A)])
    out = await ll.send_local_list(2, "Differential", [ListItem("A", B), ListItem("B"), ListItem("C", A)])
    assert out.status is OK


async def test_disabled_list_is_not_supported_and_not_consulted():
    ll, store = make_list(local_auth_list_enabled=False)
    await store.list_replace(4, [AuthEntry("A", A)])
    assert (await ll.send_local_list(5, "Full", [])).status is UpdateStatus.NOT_SUPPORTED
    assert await ll.get("A") is None
    assert await store.list_count() == 1


async def test_unknown_update_type_is_refused_clearly():
    ll, _ = make_list()
    with pytest.raises(ValueError, match="Partial"):
        await ll.send_local_list(1, "Partial", [])


# ---- cache ------------------------------------------------------------------------------


def make_cache(**policy) -> tuple[AuthCache, MemoryAuthStore, SimClock]:
    store, clock = MemoryAuthStore(), SimClock(start=NOW)
    p = AuthPolicy(**policy)
    return AuthCache(store, lambda: p, clock), store, clock


async def test_cache_put_get_and_clear():
    cache, store, _ = make_cache()
    await cache.put("Tag", AuthResult(A, parent_id_tag="P", expiry=NOW + timedelta(hours=1)))
    got = await cache.get("TAG")
    assert (got.status, got.parent, got.stored_at) == (A, "P", NOW)
    assert await cache.clear() is True
    assert await cache.get("TAG") is None


async def test_disabled_cache_neither_stores_nor_answers_and_rejects_clear():
    cache, store, _ = make_cache(authorization_cache_enabled=False)
    await cache.put("T", AuthResult(A))
    assert await store.cache_count() == 0
    await store.cache_put(AuthEntry("T", A))
    assert await cache.get("T") is None
    assert await cache.clear() is False
    assert await store.cache_count() == 1


async def test_cache_lifetime_drops_old_entries():
    cache, store, clock = make_cache(cache_lifetime=3600)
    await cache.put("T", AuthResult(A))
    clock.jump_wall(timedelta(minutes=59))
    assert (await cache.get("T")).status is A
    clock.jump_wall(timedelta(minutes=2))
    assert await cache.get("T") is None
    assert await store.cache_count() == 0


async def test_full_cache_evicts_useless_entries_first_then_least_recently_used():
    cache, store, clock = make_cache(cache_max_entries=3)
    await cache.put("OLD-GOOD", AuthResult(A))
    clock.jump_wall(timedelta(minutes=1))
    await cache.put("BLOCKED", AuthResult(B))
    clock.jump_wall(timedelta(minutes=1))
    await cache.put("RECENT", AuthResult(A))
    clock.jump_wall(timedelta(minutes=1))
    await cache.put("NEW-1", AuthResult(A))           # full: the Blocked one goes first
    assert await cache.get("BLOCKED") is None
    clock.jump_wall(timedelta(minutes=1))
    await cache.get("OLD-GOOD")                       # used now: no longer the least recent
    clock.jump_wall(timedelta(minutes=1))
    await cache.put("NEW-2", AuthResult(A))           # then the least recently used: RECENT
    keys = {e.key for e in await store.cache_entries()}
    assert keys == {"old-good", "new-1", "new-2"}


async def test_updating_an_entry_in_a_full_cache_evicts_nothing():
    cache, store, _ = make_cache(cache_max_entries=2)
    await cache.put("A", AuthResult(A))
    await cache.put("B", AuthResult(A))
    await cache.put("a", AuthResult(B))
    assert await store.cache_count() == 2
    assert (await cache.get("A")).status is B


def test_policy_limits_are_checked():
    with pytest.raises(ValueError, match="cache_max_entries"):
        AuthPolicy(cache_max_entries=0)
    with pytest.raises(ValueError, match="cache_lifetime"):
        AuthPolicy(cache_lifetime=0)
