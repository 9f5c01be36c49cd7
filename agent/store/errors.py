"""The one exception the store raises.

Callers (sessions, the uplink, the supervisor) log a ``StoreError`` and keep charging:
the message always says which operation failed and why (``record tx_started: disk full``),
and a failed write has been rolled back, so the store stays usable afterwards.
"""

from __future__ import annotations

import sqlite3


class StoreError(Exception):
    """A store operation failed or was refused; the message names the operation."""


def describe(exc: BaseException) -> str:
    """SQLite's error in words, with its code name when there is one
    (``SQLITE_FULL: database or disk is full``)."""
    name = getattr(exc, "sqlite_errorname", None)
    return f"{name}: {exc}" if name else str(exc) or type(exc).__name__


def wrap(operation: str, exc: sqlite3.Error) -> StoreError:
    return StoreError(f"{operation}: {describe(exc)}")
