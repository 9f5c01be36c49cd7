"""The authorization policy matrix: online/offline x list/cache/unknown x each setting."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from agent.auth import (
    AuthEntry, AuthPolicy, AuthResult, AuthSource, AuthStatus, Authorizer, ListItem, MemoryAuthStore, OfflineError,
)
from agent.clock import SimClock

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
A, B, X, E, U = AuthStatus.ACCEPTED, AuthStatus.BLOCKED, AuthStatus.INVALID, AuthStatus.EXPIRED, AuthStatus.UNKNOWN
LIST, CACHE, ONLINE = AuthSource.LOCAL_LIST, AuthSource.CACHE, AuthSource.ONLINE
OFF_OK, OFF_NO = AuthSource.OFFLINE_UNKNOWN, AuthSource.OFFLINE_REFUSED


class Csms:
    """The online Authorize callable: answers from a table, counts calls, or is down."""

    def __init__(self, answers: dict[str, AuthResult] | None = None, fails: Exception | None = None) -> None:
        self.answers = answers or {}
        self.fails = fails
        self.asked: list[str] = []

    async def __call__(self, tag: str) -> AuthResult:
        self.asked.append(tag)
        if self.fails is not None:
            raise self.fails
        return self.answers.get(tag, AuthResult(AuthStatus.INVALID))


async def setup(
    *, online: bool, listed: dict[str, AuthStatus] | None = None, cached: dict[str, AuthStatus] | None = None,
    csms: Csms | None = None, expiry: datetime | None = None, **policy,
):
    clock = SimClock(start=NOW)
    store = MemoryAuthStore()
    csms = csms or Csms()
    conflicts = []
    auth = Authorizer(
        store, online=csms, is_online=lambda: online, policy=AuthPolicy(**policy), clock=clock,
        on_list_conflict=lambda *a: conflicts.append(a),
    )
    if listed:
        await store.list_replace(1, [AuthEntry(t, s, expiry) for t, s in listed.items()])
    for tag, status in (cached or {}).items():
        await store.cache_put(AuthEntry(tag, status, expiry, stored_at=NOW, last_used=NOW))
    return auth, csms, clock, conflicts


# (where the tag is, its status there, settings) -> (status, source)
OFFLINE = [
    ("list", A, dict(local_authorize_offline=True), A, LIST),
    ("list", A, dict(local_authorize_offline=False), U, OFF_NO),
    ("list", A, dict(local_authorize_offline=False, allow_offline_tx_for_unknown_id=True), A, OFF_OK),
    ("list", B, dict(local_authorize_offline=True, allow_offline_tx_for_unknown_id=True), B, LIST),
    ("list", B, dict(local_authorize_offline=False, allow_offline_tx_for_unknown_id=True), B, LIST),
    ("list", X, dict(local_authorize_offline=True), X, LIST),
    ("list", A, dict(local_auth_list_enabled=False), U, OFF_NO),
    ("list", B, dict(local_auth_list_enabled=False, allow_offline_tx_for_unknown_id=True), A, OFF_OK),
    ("cache", A, dict(local_authorize_offline=True), A, CACHE),
    ("cache", A, dict(local_authorize_offline=False), U, OFF_NO),
    ("cache", A, dict(authorization_cache_enabled=False), U, OFF_NO),
    ("cache", X, dict(allow_offline_tx_for_unknown_id=True), X, CACHE),
    ("cache", E, dict(allow_offline_tx_for_unknown_id=True), E, CACHE),
    ("none", None, dict(allow_offline_tx_for_unknown_id=True), A, OFF_OK),
    ("none", None, dict(allow_offline_tx_for_unknown_id=False), U, OFF_NO),
    ("none", None, dict(local_authorize_offline=True, allow_offline_tx_for_unknown_id=False), U, OFF_NO),
]


@pytest.mark.parametrize("where, status, settings, want, source", OFFLINE)
async def test_offline_matrix(where, status, settings, want, source):
    auth, csms, _, _ = await setup(
        online=False,
        listed={"TAG": status} if where == "list" else None,
        cached={"TAG": status} if where == "cache" else None,
        **settings,
    )
    result = await auth.authorize("TAG")
    assert (result.status, result.source) == (want, source)
    assert csms.asked == []


ONLINE_CASES = [
    # where, status there, settings, CSMS answer, -> status, source, asked the CSMS?
    ("list", A, dict(local_pre_authorize=True), X, A, LIST, False),
    ("list", A, dict(local_pre_authorize=False), B, B, ONLINE, True),
    ("list", B, dict(local_pre_authorize=True), A, A, ONLINE, True),   # only valid entries skip the CSMS
    ("cache", A, dict(local_pre_authorize=True), X, A, CACHE, False),
    ("cache", A, dict(local_pre_authorize=True, authorization_cache_enabled=False), X, X, ONLINE, True),
    ("cache", A, dict(local_pre_authorize=False), A, A, ONLINE, True),
    ("none", None, dict(local_pre_authorize=True), A, A, ONLINE, True),
    ("none", None, dict(allow_offline_tx_for_unknown_id=True), X, X, ONLINE, True),  # online, the CSMS decides
]


@pytest.mark.parametrize("where, status, settings, answer, want, source, asked", ONLINE_CASES)
async def test_online_matrix(where, status, settings, answer, want, source, asked):
    auth, csms, _, _ = await setup(
        online=True,
        listed={"TAG": status} if where == "list" else None,
        cached={"TAG": status} if where == "cache" else None,
        csms=Csms({"TAG": AuthResult(answer)}),
        **settings,
    )
    result = await auth.authorize("TAG")
    assert (result.status, result.source) == (want, source)
    assert csms.asked == (["TAG"] if asked else [])


async def test_csms_answers_fill_the_cache_used_offline():
    online = {"up": True}
    csms = Csms({"NEW": AuthResult(A, parent_id_tag="FLEET"), "BAD": AuthResult(B)})
    store = MemoryAuthStore()
    auth = Authorizer(store, online=csms, is_online=lambda: online["up"], clock=SimClock(start=NOW))
    assert (await auth.authorize("NEW")).accepted
    assert (await auth.authorize("BAD")).status is B
    online["up"] = False
    offline = await auth.authorize("new")        # case-insensitive
    assert (offline.status, offline.source, offline.parent) == (A, CACHE, "FLEET")
    assert (await auth.authorize("BAD")).status is B
    assert csms.asked == ["NEW", "BAD"]


@pytest.mark.parametrize("error", [TimeoutError("30 s"), OfflineError("no uplink"), ConnectionError("reset")])
async def test_csms_not_answering_falls_back_to_the_offline_policy(error):
    auth, csms, _, _ = await setup(online=True, cached={"TAG": A}, csms=Csms(fails=error))
    result = await auth.authorize("TAG")
    assert (result.status, result.source) == (A, CACHE)
    unknown = await auth.authorize("OTHER")
    assert (unknown.status, unknown.source) == (U, OFF_NO)
    assert csms.asked == ["TAG", "OTHER"]


async def test_a_bug_in_the_online_call_is_not_mistaken_for_offline():
    auth, _, _, _ = await setup(online=True, cached={"TAG": A}, csms=Csms(fails=KeyError("oops")))
    with pytest.raises(KeyError):
        await auth.authorize("TAG")


async def test_listed_tags_are_not_cached_and_conflicts_are_reported():
    auth, _, _, conflicts = await setup(online=True, listed={"TAG": A}, csms=Csms({"TAG": AuthResult(B)}))
    assert (await auth.authorize("TAG")).status is B
    assert await auth.cache.store.cache_count() == 0
    assert len(conflicts) == 1 and conflicts[0][0] == "TAG" and conflicts[0][1].status is A and conflicts[0][2].status is B


async def test_expiry_turns_accepted_into_expired():
    expiry = NOW + timedelta(hours=1)
    auth, _, clock, _ = await setup(online=False, listed={"L": A}, cached={"C": A}, expiry=expiry)
    assert (await auth.authorize("L")).accepted and (await auth.authorize("C")).accepted
    clock.jump_wall(timedelta(hours=2))
    assert (await auth.authorize("L")).status is E
    assert (await auth.authorize("C")).status is E
    stored = await auth.cache.store.cache_get("c")
    assert stored.status is E     # the cache entry itself was marked Expired


async def test_expired_local_entry_is_not_pre_authorized():
    csms = Csms({"L": AuthResult(A)})
    auth, _, clock, _ = await setup(online=True, listed={"L": A}, csms=csms, expiry=NOW, local_pre_authorize=True)
    assert (await auth.authorize("L")).source is ONLINE
    assert csms.asked == ["L"]


async def test_policy_changes_apply_to_the_next_decision():
    current = {"p": AuthPolicy(allow_offline_tx_for_unknown_id=False)}
    auth = Authorizer(MemoryAuthStore(), policy=lambda: current["p"], clock=SimClock(start=NOW))
    assert (await auth.authorize("X")).status is U
    current["p"] = replace(current["p"], allow_offline_tx_for_unknown_id=True)
    assert (await auth.authorize("X")).accepted


async def test_record_passes_start_and_stop_answers_to_the_cache():
    auth, _, _, _ = await setup(online=False)
    await auth.record("CARD", AuthResult(B))
    assert (await auth.authorize("CARD")).status is B


# ---- stopping with another card -------------------------------------------------------------


async def test_same_tag_may_always_stop():
    auth, csms, _, _ = await setup(online=False)
    result = await auth.authorize_stop("abc", started_by="ABC", started_parent=None)
    assert result.accepted and result.source is AuthSource.SAME_TAG
    assert csms.asked == []


async def test_another_card_of_the_same_parent_may_stop():
    csms = Csms({"CHILD2": AuthResult(A, parent_id_tag="fleet"), "STRANGER": AuthResult(A, parent_id_tag="OTHER"),
                 "ORPHAN": AuthResult(A), "BLOCKED": AuthResult(B, parent_id_tag="FLEET")})
    auth, _, _, _ = await setup(online=True, csms=csms)
    assert (await auth.authorize_stop("CHILD2", started_by="CHILD1", started_parent="FLEET")).accepted
    assert (await auth.authorize_stop("STRANGER", started_by="CHILD1", started_parent="FLEET")).status is X
    assert (await auth.authorize_stop("ORPHAN", started_by="CHILD1", started_parent="FLEET")).status is X
    assert (await auth.authorize_stop("BLOCKED", started_by="CHILD1", started_parent="FLEET")).status is B
    # a session started without a parent can only be stopped by its own tag
    assert not (await auth.authorize_stop("CHILD2", started_by="CHILD1", started_parent=None)).accepted


async def test_group_ids_of_201_count_as_parents_offline():
    store = MemoryAuthStore()
    auth = Authorizer(store, clock=SimClock(start=NOW))
    await auth.local_list.send_local_list(1, "Full", [ListItem("T2", A, parent="GROUP-1")])
    result = await auth.authorize_stop("T2", started_by="T1", started_parent="group-1")
    assert result.accepted and result.group == "GROUP-1" and result.source is LIST


async def test_a_connection_closing_under_the_authorize_call_is_decided_offline():
    """websockets raises ConnectionClosed (not a ConnectionError) when the link closes
    under a call; that is the CSMS not answering, decided by the offline rules."""
    from websockets.exceptions import ConnectionClosedError

    from agent.auth import AuthEntry, AuthPolicy, Authorizer, AuthStatus, MemoryAuthStore

    store = MemoryAuthStore()
    await store.list_replace(1, [AuthEntry("LISTED", AuthStatus.ACCEPTED)])

    async def closing(tag):
        raise ConnectionClosedError(None, None)

    auth = Authorizer(store, online=closing, is_online=lambda: True, policy=AuthPolicy())
    result = await auth.authorize("LISTED")
    assert result.accepted and result.source.value == "local_list"
