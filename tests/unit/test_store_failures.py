"""Write failures (disk full, locked by another process, read-only file) are a
StoreError naming the operation, roll back completely, and leave the store usable."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime, timezone

import pytest

from agent.auth.types import AuthEntry, AuthStatus
from agent.clock import SimClock
from agent.sessions.events import ConnectorStatus, StatusChanged, StopReason, TransactionEnded, TransactionStarted
from agent.store import Store, StoreError

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
BIG = "x" * 20_000          # larger than a page: needs new pages whatever free space there is


async def counts(store: Store) -> dict[str, int]:
    return (await store.stats())["rows"]


async def test_disk_full_fails_the_write_rolls_back_and_the_store_recovers(tmp_path):
    store = await Store.open(tmp_path / "s.db", SimClock(start=T0))
    try:
        await store.record(TransactionStarted(1, T0, "tx-1", "TAG", 0))
        before = await counts(store)
        async with store._db.read("test: fill the disk") as conn:  # SQLite's own "disk full"
            await conn.execute("PRAGMA max_page_count = 1")        # = the current page count
        with pytest.raises(StoreError, match=r"record status: SQLITE_FULL"):
            await store.record(StatusChanged(1, T0, ConnectorStatus.FAULTED, info=BIG))
        with pytest.raises(StoreError, match=r"list_replace version 3: SQLITE_FULL"):
            await store.list_replace(3, [AuthEntry(f"T{i}{BIG[:500]}", AuthStatus.ACCEPTED) for i in range(50)])
        assert await counts(store) == before and await store.outbox_len() == 1
        assert await store.list_version() == 0
        async with store._db.read("test: free the disk") as conn:
            await conn.execute("PRAGMA max_page_count = 1000000")
        seq = await store.record(TransactionEnded(1, T0, "tx-1", 5, StopReason.LOCAL, id_tag=BIG))
        assert [r.seq for r in await store.outbox_head(limit=9)] == [1, seq]
        assert (await store.transaction("tx-1")).state == "ended"
    finally:
        await store.close()


async def test_a_lock_held_by_another_process_fails_the_write_then_clears(tmp_path):
    path = tmp_path / "s.db"
    store = await Store.open(path, SimClock(start=T0), busy_timeout=0.1)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")                           # another writer holds the lock
        with pytest.raises(StoreError, match="kv_set 'k': SQLITE_BUSY: database is locked"):
            await store.kv_set("k", 1)
        assert await store.kv_get("k") is None                     # reads still work (WAL)
        other.execute("ROLLBACK")
        await store.kv_set("k", 2)
        assert await store.kv_get("k") == 2
    finally:
        other.close()
        await store.close()


READ_ONLY_CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from datetime import datetime, timezone
    from agent.clock import SimClock
    from agent.sessions.events import ConnectorStatus, StatusChanged
    from agent.store import Store, StoreError

    async def main(path):
        out = {}
        store = await Store.open(path, SimClock())
        try:
            out["head"] = [r.event.kind for r in await store.outbox_head(limit=9)]
            out["tx"] = (await store.transaction("tx-1")).state
            out["kv"] = await store.kv_get("k")
            for name, call in [
                ("record", store.record(StatusChanged(1, datetime.now(timezone.utc), ConnectorStatus.AVAILABLE))),
                ("kv_set", store.kv_set("k", 2)),
                ("done", store.outbox_done(1)),
            ]:
                try:
                    await call
                    out[name] = "written"
                except StoreError as exc:
                    out[name] = str(exc)
            out["after"] = await store.outbox_len(), await store.kv_get("k")
        finally:
            await store.close()
        print(json.dumps(out))

    asyncio.run(main(sys.argv[1]))
""")


def unprivileged(cmd: list[str]) -> list[str]:
    """Root writes to read-only files anyway: run the child without that power."""
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file read-only for the child")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", *cmd]


async def test_read_only_file_reads_work_and_writes_fail_clearly(tmp_path):
    path = tmp_path / "s.db"
    store = await Store.open(path, SimClock(start=T0))
    await store.record(TransactionStarted(1, T0, "tx-1", "TAG", 0))
    await store.kv_set("k", 1)
    await store.close()
    before = path.read_bytes()
    path.chmod(0o444)
    try:
        proc = subprocess.run(unprivileged([sys.executable, "-c", READ_ONLY_CHILD, str(path)]),
                              capture_output=True, text=True, timeout=60)
    finally:
        path.chmod(0o644)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["head"] == ["tx_started"] and out["tx"] == "open" and out["kv"] == 1
    assert out["record"].startswith("record status: SQLITE_READONLY")
    assert out["kv_set"].startswith("kv_set 'k': SQLITE_READONLY")
    assert out["done"].startswith("outbox_done 1: SQLITE_READONLY")
    assert out["after"] == [1, 1]                                  # nothing changed, still readable
    assert path.read_bytes() == before
