"""Opening the store: new and empty files are migrated, every pragma the design asks for
is set, and files the store must not touch (not SQLite, corrupt, someone else's, from a
newer evsite) are refused with a StoreError naming the path and left byte-for-byte as
they were."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

import aiosqlite
import pytest

from agent.clock import SimClock
from agent.sessions.events import ConnectorStatus, StatusChanged, TransactionStarted
from agent.store import SCHEMA_VERSION, Store, StoreError
from agent.store import schema
from agent.store.store import TABLES

AT = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)


def tables(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def pragma(path, name):
    with sqlite3.connect(path) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


@pytest.mark.parametrize("start", ["missing", "empty file"])
async def test_new_or_empty_file_gets_the_whole_schema(tmp_path, start):
    path = tmp_path / "evsite.db"
    if start == "empty file":
        path.write_bytes(b"")
    store = await Store.open(path, SimClock())
    await store.close()
    assert pragma(path, "user_version") == SCHEMA_VERSION
    assert pragma(path, "application_id") == schema.APPLICATION_ID
    assert pragma(path, "journal_mode") == "wal"
    assert set(TABLES) <= tables(path)


def test_migrations_are_numbered_in_order():
    assert [m.version for m in schema.MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
    with pytest.raises(RuntimeError, match="out of order"):
        schema._check_order((schema.Migration(1, "a", ""), schema.Migration(3, "b", "")))


async def test_an_older_schema_is_upgraded_and_keeps_its_data(tmp_path):
    path = str(tmp_path / "old.db")
    async with aiosqlite.connect(path, isolation_level=None) as conn:  # a version-1 store
        assert await schema.migrate(conn, path, 0, upto=1) == 1
        body = TransactionStarted(1, AT, "tx-old", "TAG", 5).to_json()
        await conn.execute("INSERT INTO events (kind, connector_id, tx_id, at, body, created_at) "
                           "VALUES ('tx_started', 1, 'tx-old', 'x', ?, 'x')", (json.dumps(body),))
        await conn.execute("INSERT INTO transactions (tx_id, connector_id, id_tag, meter_start_wh, started_at, "
                           "next_tx_seq) VALUES ('tx-old', 1, 'TAG', 5, '2026-03-01T08:00:00.000000Z', 1)")
    assert pragma(path, "user_version") == 1
    store = await Store.open(path, SimClock())
    try:
        assert (await store.transaction("tx-old")).id_tag == "TAG"
        await store.kv_set("after-upgrade", [1, 2])                 # a version-2 table works
        assert await store.kv_get("after-upgrade") == [1, 2]
    finally:
        await store.close()
    assert pragma(path, "user_version") == SCHEMA_VERSION


async def test_a_newer_schema_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "newer.db"
    store = await Store.open(path, SimClock())
    await store.record(StatusChanged(1, AT, ConnectorStatus.AVAILABLE))
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    with pytest.raises(StoreError) as err:
        await Store.open(path, SimClock())
    msg = str(err.value)
    assert str(path) in msg and f"schema version {SCHEMA_VERSION + 1}" in msg and "newer evsite" in msg
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", [b"this is not a database, it is a note\n" * 200, b"SQLite format 3\x00" + b"\xff" * 5000])
async def test_a_file_that_is_not_sqlite_is_refused_unchanged(tmp_path, content):
    path = tmp_path / "evsite.db"
    path.write_bytes(content)
    with pytest.raises(StoreError, match="not a readable SQLite database") as err:
        await Store.open(path, SimClock())
    assert str(path) in str(err.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evsite.db"]


async def test_a_damaged_store_is_refused_unchanged(tmp_path):
    path = tmp_path / "evsite.db"
    store = await Store.open(path, SimClock())
    for i in range(200):
        await store.record(StatusChanged(1, AT, ConnectorStatus.CHARGING, info=f"row {i} " + "x" * 200))
    await store.close()
    data = bytearray(path.read_bytes())
    page = pragma(path, "page_size")
    assert len(data) > 6 * page
    data[3 * page:5 * page] = b"\x5a" * (2 * page)             # two pages of events overwritten
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt|not a readable") as err:
        await Store.open(path, SimClock())
    assert str(path) in str(err.value)
    assert path.read_bytes() == bytes(data)


async def test_another_programs_database_is_refused_unchanged(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="something else.*photos"):
        await Store.open(path, SimClock())
    assert path.read_bytes() == before
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 2")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not an evsite store"):
        await Store.open(path, SimClock())
    assert path.read_bytes() == before


@pytest.mark.parametrize("sync, code", [("FULL", 2), ("NORMAL", 1), ("full", 2)])
async def test_connection_pragmas(tmp_path, sync, code):
    store = await Store.open(tmp_path / "s.db", SimClock(), synchronous=sync, busy_timeout=1.5)
    try:
        async with store._db.read("test") as conn:               # the connection the store writes with
            got = {}
            for name in ("synchronous", "journal_mode", "foreign_keys", "busy_timeout"):
                async with conn.execute(f"PRAGMA {name}") as cur:
                    got[name] = (await cur.fetchone())[0]
        assert got == {"synchronous": code, "journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 1500}
    finally:
        await store.close()


@pytest.mark.parametrize("kwargs, words", [
    ({"synchronous": "OFF"}, "synchronous must be one of"),
    ({"outbox_max": 0}, "outbox_max must be an integer >= 1"),
    ({"busy_timeout": -1}, "busy_timeout must be >= 0"),
])
async def test_bad_options_are_named(tmp_path, kwargs, words):
    with pytest.raises(StoreError, match=words):
        await Store.open(tmp_path / "s.db", SimClock(), **kwargs)
    assert not (tmp_path / "s.db").exists()


async def test_unopenable_paths_are_named(tmp_path):
    with pytest.raises(StoreError, match="is a directory") as err:
        await Store.open(tmp_path, SimClock())
    assert str(tmp_path) in str(err.value)
    missing = tmp_path / "no" / "such" / "dir" / "s.db"
    with pytest.raises(StoreError, match="cannot open .directory .* does not exist") as err:
        await Store.open(missing, SimClock())
    assert str(missing) in str(err.value)


async def test_close_is_idempotent_and_later_calls_fail_clearly(tmp_path):
    store = await Store.open(tmp_path / "s.db", SimClock())
    await store.close()
    await store.close()
    assert store.closed
    with pytest.raises(StoreError, match="record status: the store is closed"):
        await store.record(StatusChanged(1, AT, ConnectorStatus.AVAILABLE))
    with pytest.raises(StoreError, match="closed"):
        await store.outbox_head()


async def test_stats_count_rows_and_size(tmp_path):
    store = await Store.open(tmp_path / "s.db", SimClock())
    try:
        await store.record(StatusChanged(1, AT, ConnectorStatus.AVAILABLE))
        await store.record(StatusChanged(2, AT, ConnectorStatus.AVAILABLE), outbox=False)
        await store.setting_put("HeartbeatInterval", "300")
        stats = await store.stats()
    finally:
        await store.close()
    assert stats["schema_version"] == SCHEMA_VERSION
    assert stats["rows"]["events"] == 2 and stats["rows"]["outbox"] == 1 and stats["rows"]["settings"] == 1
    assert stats["rows"]["transactions"] == 0
    assert stats["file_bytes"] + stats["wal_bytes"] > 0 and stats["path"] == str(tmp_path / "s.db")
