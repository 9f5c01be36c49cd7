"""The store as the authorization store (same behaviour as MemoryAuthStore, entries
round-tripped exactly, list updates all-or-nothing, LocalList and AuthCache on top of
it), and the small state tables: key/values, settings, charging profiles, reservations."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agent.auth import (
    AuthCache, AuthEntry, AuthPolicy, AuthResult, AuthStatus, ListItem, LocalList, MemoryAuthStore, UpdateStatus,
)
from agent.clock import SimClock
from agent.store import Store, StoreError

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
A, B = AuthStatus.ACCEPTED, AuthStatus.BLOCKED
CEST = timezone(timedelta(hours=2))


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "evsite.db", SimClock(start=NOW))
    yield s
    await s.close()


async def observe(s) -> dict:
    """Everything the AuthStore protocol lets a caller see."""
    entries = sorted(await s.cache_entries(), key=lambda e: e.key)
    return {
        "version": await s.list_version(), "list_count": await s.list_count(),
        "list": {k: await s.list_get(k) for k in ("a", "b", "c", "card-1", "zz")},
        "cache": entries, "cache_count": await s.cache_count(), "cache_a": await s.cache_get("a"),
    }


async def scenario(s) -> list[dict]:
    seen = [await observe(s)]
    await s.list_replace(3, [AuthEntry("A", A), AuthEntry("Card-1", B, expiry=NOW, parent="P")])
    seen.append(await observe(s))
    await s.list_update(4, [AuthEntry("C", A), AuthEntry("a", B)], ["card-1", "zz"])
    seen.append(await observe(s))
    await s.list_replace(5, [AuthEntry("B", A), AuthEntry("b", B)])           # same key twice: the last wins
    seen.append(await observe(s))
    await s.cache_put(AuthEntry("A", A, stored_at=NOW, last_used=NOW))
    await s.cache_put(AuthEntry("C", B, stored_at=NOW))
    await s.cache_put(AuthEntry("a", B, stored_at=NOW + timedelta(seconds=1)))  # replaces by key
    seen.append(await observe(s))
    await s.cache_remove(["c", "nope"])
    seen.append(await observe(s))
    await s.cache_clear()
    await s.list_replace(6, [])
    seen.append(await observe(s))
    return seen


async def test_behaves_exactly_like_the_memory_auth_store(store):
    assert await scenario(store) == await scenario(MemoryAuthStore())


async def test_entries_round_trip_exactly_and_survive_a_restart(tmp_path):
    entry = AuthEntry("Tag-µ-1", AuthStatus.NOT_AT_THIS_TIME, expiry=datetime(2026, 5, 2, 1, 2, 3, 456789, tzinfo=CEST),
                      parent="Group-7", stored_at=NOW + timedelta(microseconds=1), last_used=NOW)
    bare = AuthEntry("plain", AuthStatus.INVALID)
    s = await Store.open(tmp_path / "a.db", SimClock(start=NOW))
    await s.list_replace(9, [entry, bare])
    await s.cache_put(entry)
    await s.close()
    s = await Store.open(tmp_path / "a.db", SimClock(start=NOW))
    try:
        assert await s.list_get(entry.key) == entry and await s.list_get("plain") == bare
        assert await s.cache_get(entry.key) == entry
        assert (await s.list_get(entry.key)).expiry.microsecond == 456789
        assert await s.list_version() == 9
    finally:
        await s.close()


@pytest.mark.parametrize("bad, words", [
    (AuthEntry("N", A, expiry=datetime(2026, 1, 1)), "auth entry 'N' expiry: naive datetime"),
    ("not an entry", "expected AuthEntry"),
])
async def test_list_updates_are_all_or_nothing(store, bad, words):
    await store.list_replace(1, [AuthEntry("A", A), AuthEntry("B", A)])
    before = await observe(store)
    with pytest.raises(StoreError, match=words):
        await store.list_update(2, [AuthEntry("C", A), bad], ["a"])
    with pytest.raises(StoreError, match=words):
        await store.list_replace(2, [AuthEntry("C", A), bad])
    assert await observe(store) == before


async def test_local_list_and_cache_run_on_the_store(store):
    policy = AuthPolicy(cache_max_entries=2)
    ll, clock = LocalList(store, lambda: policy), SimClock(start=NOW)
    assert (await ll.send_local_list(3, "Full", [ListItem("Card-1", A, parent="P"), ListItem("X", B)])).status \
        is UpdateStatus.ACCEPTED
    assert (await ll.send_local_list(3, "Differential", [ListItem("Z", A)])).status is UpdateStatus.VERSION_MISMATCH
    assert (await ll.send_local_list(4, "Differential", [ListItem("X"), ListItem("Y", A)])).status \
        is UpdateStatus.ACCEPTED
    assert await ll.version() == 4 and (await ll.get("CARD-1")).parent == "P" and await ll.get("x") is None
    cache = AuthCache(store, lambda: policy, clock)
    await cache.put("T1", AuthResult(B))
    clock.jump_wall(timedelta(minutes=1))
    await cache.put("T2", AuthResult(A))
    clock.jump_wall(timedelta(minutes=1))
    await cache.put("T3", AuthResult(A))                               # full: the Blocked one is evicted
    assert {e.key for e in await store.cache_entries()} == {"t2", "t3"}
    assert (await cache.get("t2")).stored_at == NOW + timedelta(minutes=1)


# ---- key/values, settings, profiles, reservations ------------------------------------------


async def test_kv_holds_json_values(store):
    assert await store.kv_get("boot") is None and await store.kv_get("boot", 7) == 7
    value = {"count": 3, "reasons": ["PowerUp", None], "ratio": 0.5, "ok": True}
    await store.kv_set("boot", value)
    assert await store.kv_get("boot") == value
    await store.kv_set("boot", "replaced")
    assert await store.kv_get("boot") == "replaced"
    assert await store.kv_delete("boot") is True and await store.kv_delete("boot") is False
    with pytest.raises(StoreError, match="kv_set 'when': not storable as JSON"):
        await store.kv_set("when", NOW)
    with pytest.raises(StoreError, match="kv_set 'nan': not storable as JSON"):
        await store.kv_set("nan", float("nan"))
    with pytest.raises(StoreError, match="key must be a non-empty string"):
        await store.kv_set("", 1)
    assert await store.kv_get("when") is None


async def test_settings_are_text_by_name(store):
    await store.setting_put("HeartbeatInterval", "300")
    await store.setting_put("AuthorizeRemoteTxRequests", "true")
    await store.setting_put("HeartbeatInterval", "60")
    assert await store.settings_all() == {"AuthorizeRemoteTxRequests": "true", "HeartbeatInterval": "60"}
    with pytest.raises(StoreError, match="setting_put 'MeterValueSampleInterval': value must be text, got int"):
        await store.setting_put("MeterValueSampleInterval", 60)
    assert "MeterValueSampleInterval" not in await store.settings_all()


async def test_charging_profiles_by_id(store):
    p1 = {"id": 7, "connector_id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
          "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}}
    p2 = {"id": 3, "connector_id": 0, "stackLevel": 1, "chargingProfilePurpose": "ChargePointMaxProfile"}
    await store.profile_put(p1)
    await store.profile_put(p2)
    assert await store.profiles_all() == [p2, p1]
    changed = {**p1, "stackLevel": 2}
    await store.profile_put(changed)
    assert await store.profiles_all() == [p2, changed]
    assert await store.profile_remove(3) is True and await store.profile_remove(3) is False
    assert await store.profiles_all() == [changed]
    for bad, words in [({"connector_id": 1}, "needs an integer 'id'"), ({"id": 1}, "needs an integer 'connector_id'"),
                       ({"id": True, "connector_id": 1}, "needs an integer 'id'"), ([1], "expected a dict")]:
        with pytest.raises(StoreError, match=words):
            await store.profile_put(bad)
    assert await store.profiles_all() == [changed]


async def test_reservations_by_id(store):
    r = {"id": 11, "connector_id": 2, "id_tag": "TAG", "expiry": "2026-05-01T13:00:00.000Z", "parent": None}
    await store.reservation_put(r)
    await store.reservation_put({"id": 4, "connector_id": 0})
    assert [x["id"] for x in await store.reservations_all()] == [4, 11]
    assert (await store.reservations_all())[1] == r
    assert await store.reservation_remove(4) is True and await store.reservation_remove(4) is False
    with pytest.raises(StoreError, match="reservation_put: needs an integer 'id'"):
        await store.reservation_put({"id": "11"})
    assert await store.reservations_all() == [r]


async def test_state_survives_a_restart(tmp_path):
    s = await Store.open(tmp_path / "s.db", SimClock(start=NOW))
    await s.kv_set("k", [1])
    await s.setting_put("S", "v")
    await s.profile_put({"id": 1, "connector_id": 1})
    await s.reservation_put({"id": 2})
    await s.close()
    s = await Store.open(tmp_path / "s.db", SimClock(start=NOW))
    try:
        assert (await s.kv_get("k"), await s.settings_all(), await s.profiles_all(), await s.reservations_all()) == (
            [1], {"S": "v"}, [{"id": 1, "connector_id": 1}], [{"id": 2}])
    finally:
        await s.close()
