"""The store's schema as an ordered list of migrations, and the checks made on opening.

``PRAGMA user_version`` is the number of the last migration applied; each migration
runs in its own transaction together with the version bump, so a crash mid-upgrade
leaves the previous version intact. Append new migrations; never edit an applied one.

A file is refused (``StoreError`` naming the path, the file left as it was) when it is
not SQLite, is corrupt, is some other program's database, or was written by a newer
evsite (its version is above ``SCHEMA_VERSION``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiosqlite

from agent.store.errors import StoreError, describe

log = logging.getLogger("evsite.store")

#: "EVST": marks the file as an evsite store (PRAGMA application_id)
APPLICATION_ID = 0x45565354


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "events, transactions and the uplink outbox", f"""
        PRAGMA application_id = {APPLICATION_ID};
        CREATE TABLE events (
            id           INTEGER PRIMARY KEY,
            kind         TEXT NOT NULL,
            connector_id INTEGER NOT NULL,
            tx_id        TEXT,
            at           TEXT NOT NULL,          -- the event's time (store time text)
            body         TEXT NOT NULL,          -- Event.to_json()
            created_at   TEXT NOT NULL
        );
        CREATE INDEX events_kind_connector ON events (kind, connector_id);
        CREATE INDEX events_kind_at ON events (kind, at);
        CREATE INDEX events_tx ON events (tx_id) WHERE tx_id IS NOT NULL;
        CREATE TABLE transactions (
            tx_id          TEXT PRIMARY KEY,
            connector_id   INTEGER NOT NULL,
            id_tag         TEXT NOT NULL,
            meter_start_wh INTEGER NOT NULL,
            started_at     TEXT NOT NULL,
            state          TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'ended')),
            meter_stop_wh  INTEGER,
            ended_at       TEXT,
            reason         TEXT,
            csms_tx_id     INTEGER,
            next_tx_seq    INTEGER NOT NULL DEFAULT 0,
            last_meter_wh  REAL
        );
        CREATE INDEX transactions_open ON transactions (state) WHERE state = 'open';
        CREATE TABLE outbox (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused
            event_id   INTEGER NOT NULL REFERENCES events (id),
            kind       TEXT NOT NULL,
            tx_id      TEXT REFERENCES transactions (tx_id),
            tx_seq     INTEGER,
            message_id TEXT,
            attempts   INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX outbox_kind ON outbox (kind, seq);
        CREATE INDEX outbox_event ON outbox (event_id);
        CREATE TABLE outbox_dropped (
            seq        INTEGER PRIMARY KEY,
            kind       TEXT NOT NULL,
            body       TEXT NOT NULL,                   -- a copy: pruning events keeps it
            tx_id      TEXT,
            tx_seq     INTEGER,
            message_id TEXT,
            attempts   INTEGER NOT NULL,
            last_error TEXT,
            created_at TEXT NOT NULL,
            reason     TEXT NOT NULL,
            dropped_at TEXT NOT NULL
        );
    """),
    Migration(2, "agent state: key/values, settings, charging profiles, reservations", """
        CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE charging_profiles (
            id           INTEGER PRIMARY KEY,            -- chargingProfileId
            connector_id INTEGER NOT NULL,
            body         TEXT NOT NULL
        );
        CREATE TABLE reservations (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
    """),
    Migration(3, "local authorization list and cache", """
        CREATE TABLE auth_list (
            key TEXT PRIMARY KEY, id_tag TEXT NOT NULL, status TEXT NOT NULL,
            expiry TEXT, parent TEXT, stored_at TEXT, last_used TEXT
        );
        CREATE TABLE auth_cache (
            key TEXT PRIMARY KEY, id_tag TEXT NOT NULL, status TEXT NOT NULL,
            expiry TEXT, parent TEXT, stored_at TEXT, last_used TEXT
        );
        CREATE TABLE auth_list_version (
            id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL
        );
    """),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


def _check_order(migrations: tuple[Migration, ...]) -> None:
    for i, m in enumerate(migrations, start=1):
        if m.version != i:
            raise RuntimeError(f"store migrations out of order: entry {i} has version {m.version}")


_check_order(MIGRATIONS)


async def _scalar(conn: aiosqlite.Connection, sql: str) -> object:
    async with conn.execute(sql) as cur:
        row = await cur.fetchone()
    return None if row is None else row[0]


async def inspect(conn: aiosqlite.Connection, path: str, *, check: bool = True) -> int:
    """The file's schema version, after making sure it is an evsite store this version
    can open. Reads only: a refused file is left untouched."""
    try:
        version = int(await _scalar(conn, "PRAGMA user_version"))  # type: ignore[arg-type]
        app_id = int(await _scalar(conn, "PRAGMA application_id"))  # type: ignore[arg-type]
        async with conn.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' LIMIT 5") as cur:
            names = [r[0] for r in await cur.fetchall()]
    except aiosqlite.Error as exc:
        raise StoreError(f"store {path}: not a readable SQLite database ({describe(exc)}); "
                         "left as it is: move it aside to start a new store") from None
    if version == 0 and names:
        raise StoreError(f"store {path}: an SQLite database of something else (tables {', '.join(names)}); "
                         "not an evsite store, left as it is")
    if version > 0 and app_id != APPLICATION_ID:
        raise StoreError(f"store {path}: not an evsite store (application_id {app_id:#x}), left as it is")
    if version > SCHEMA_VERSION:
        raise StoreError(f"store {path}: schema version {version} was written by a newer evsite; this one "
                         f"understands up to {SCHEMA_VERSION}. Upgrade evsite (the file is left as it is)")
    if check:
        try:
            async with conn.execute("PRAGMA quick_check") as cur:
                problems = [r[0] for r in await cur.fetchall()]
        except aiosqlite.Error as exc:
            problems = [describe(exc)]
        if problems != ["ok"]:
            raise StoreError(f"store {path}: database is corrupt ({'; '.join(problems[:3])}); "
                             "left as it is: move it aside to start a new store")
    return version


async def migrate(conn: aiosqlite.Connection, path: str, current: int, *, upto: int = SCHEMA_VERSION) -> int:
    """Apply every migration above ``current`` up to ``upto``, each in one transaction.
    Returns the version reached."""
    for m in MIGRATIONS:
        if m.version <= current or m.version > upto:
            continue
        script = f"BEGIN IMMEDIATE;\n{m.sql}\nPRAGMA user_version = {m.version};\nCOMMIT;"
        try:
            await conn.executescript(script)
        except aiosqlite.Error as exc:
            if conn.in_transaction:
                await conn.rollback()
            raise StoreError(f"store {path}: migration to schema version {m.version} ({m.description}) "
                             f"failed: {describe(exc)}") from None
        log.info("store %s: schema version %d (%s)", path, m.version, m.description)
        current = m.version
    return current
