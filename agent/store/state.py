"""Agent state that must survive a restart: key/values, CSMS-set settings, charging
profiles and reservations. Each is a small table written one row per call."""

from __future__ import annotations

import json
from typing import Any

from agent.store.codec import json_text
from agent.store.db import Database, one, rows, run
from agent.store.errors import StoreError


def _int_field(obj: Any, key: str, what: str) -> int:
    if not isinstance(obj, dict):
        raise StoreError(f"{what}: expected a dict, got {type(obj).__name__}")
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise StoreError(f"{what}: needs an integer {key!r}, got {value!r}")
    return value


class StateMixin:
    _db: Database

    # ---- key/values (JSON) -------------------------------------------------------------

    async def kv_get(self, key: str, default: Any = None) -> Any:
        async with self._db.read("kv_get") as conn:
            row = await one(conn, "SELECT value FROM kv WHERE key = ?", (key,))
        return default if row is None else json.loads(row[0])

    async def kv_set(self, key: str, value: Any) -> None:
        if not isinstance(key, str) or not key:
            raise StoreError(f"kv_set: key must be a non-empty string, got {key!r}")
        text = json_text(value, f"kv_set {key!r}")
        async with self._db.write(f"kv_set {key!r}") as conn:
            await run(conn, "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, text))

    async def kv_delete(self, key: str) -> bool:
        async with self._db.write(f"kv_delete {key!r}") as conn:
            _, n = await run(conn, "DELETE FROM kv WHERE key = ?", (key,))
        return n > 0

    # ---- settings (text, as the settings registry formats them) ------------------------

    async def settings_all(self) -> dict[str, str]:
        async with self._db.read("settings_all") as conn:
            found = await rows(conn, "SELECT name, value FROM settings ORDER BY name")
        return dict(found)

    async def setting_put(self, name: str, value_text: str) -> None:
        if not isinstance(name, str) or not name:
            raise StoreError(f"setting_put: name must be a non-empty string, got {name!r}")
        if not isinstance(value_text, str):
            raise StoreError(f"setting_put {name!r}: value must be text, got {type(value_text).__name__}")
        async with self._db.write(f"setting_put {name!r}") as conn:
            await run(conn, "INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)", (name, value_text))

    # ---- charging profiles (JSON with "id" = chargingProfileId and "connector_id") -----

    async def profiles_all(self) -> list[dict]:
        async with self._db.read("profiles_all") as conn:
            found = await rows(conn, "SELECT body FROM charging_profiles ORDER BY id")
        return [json.loads(b) for (b,) in found]

    async def profile_put(self, profile_json: dict) -> None:
        """Insert, or replace the profile with the same id."""
        pid = _int_field(profile_json, "id", "profile_put")
        cid = _int_field(profile_json, "connector_id", f"profile_put {pid}")
        body = json_text(profile_json, f"profile_put {pid}")
        async with self._db.write(f"profile_put {pid}") as conn:
            await run(conn, "INSERT OR REPLACE INTO charging_profiles (id, connector_id, body) VALUES (?, ?, ?)",
                      (pid, cid, body))

    async def profile_remove(self, profile_id: int) -> bool:
        async with self._db.write(f"profile_remove {profile_id}") as conn:
            _, n = await run(conn, "DELETE FROM charging_profiles WHERE id = ?", (profile_id,))
        return n > 0

    # ---- reservations (JSON with "id" = reservationId) ----------------------------------

    async def reservations_all(self) -> list[dict]:
        async with self._db.read("reservations_all") as conn:
            found = await rows(conn, "SELECT body FROM reservations ORDER BY id")
        return [json.loads(b) for (b,) in found]

    async def reservation_put(self, reservation: dict) -> None:
        """Insert, or replace the reservation with the same id."""
        rid = _int_field(reservation, "id", "reservation_put")
        body = json_text(reservation, f"reservation_put {rid}")
        async with self._db.write(f"reservation_put {rid}") as conn:
            await run(conn, "INSERT OR REPLACE INTO reservations (id, body) VALUES (?, ?)", (rid, body))

    async def reservation_remove(self, reservation_id: int) -> bool:
        async with self._db.write(f"reservation_remove {reservation_id}") as conn:
            _, n = await run(conn, "DELETE FROM reservations WHERE id = ?", (reservation_id,))
        return n > 0
