"""The SQLite store (aiosqlite, WAL): events written before anything acts on them,
transactions, the uplink outbox, settings, the authorization list and cache, charging
profiles and reservations. The API is described in docs/architecture.md ("Store")."""

from agent.store.errors import StoreError
from agent.store.records import DroppedRow, OutboxRow, TxRecord
from agent.store.schema import SCHEMA_VERSION
from agent.store.store import Store

__all__ = ["DroppedRow", "OutboxRow", "SCHEMA_VERSION", "Store", "StoreError", "TxRecord"]
