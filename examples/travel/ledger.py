"""The trip's one service: a booking ledger in SQLite.

It stands in for the airline's, the hotels' and the car rentals' booking APIs and
keeps their promise: a booking is made once per idempotency key, and asked again
with that key it answers with the first booking and books nothing. Given a file,
every process of a deployment -- the ``coordinator run``, each worker -- shares the
bookings; without one they live in this process's memory.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

from agent_coordinator import InvalidArguments

SCHEMA = """
CREATE TABLE IF NOT EXISTS trip_bookings (
    idempotency_key TEXT PRIMARY KEY,
    booking_id TEXT NOT NULL UNIQUE,
    trip_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    details TEXT NOT NULL,
    status TEXT NOT NULL
)
"""


class Ledger:
    """Bookings by idempotency key, in the SQLite file ``path`` (None: in memory)."""

    def __init__(self, path: str | None = None) -> None:
        # Autocommit: each statement is its own transaction, so other processes see it at once.
        self._db = sqlite3.connect(path or ":memory:", timeout=30.0, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        if path:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)

    def book(self, key: str, *, trip_id: str, kind: str, **details: Any) -> dict[str, Any]:
        """Book ``kind`` for the trip once per idempotency ``key``; the booking, as first made."""
        # The id is the key's digest: the same booking gets the same id in every process and mode.
        booking_id = f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
        self._db.execute(
            "INSERT OR IGNORE INTO trip_bookings VALUES (?, ?, ?, ?, ?, 'booked')",
            (key, booking_id, trip_id, kind, json.dumps(details, sort_keys=True)),
        )
        row = self._db.execute("SELECT * FROM trip_bookings WHERE idempotency_key = ?", (key,)).fetchone()
        return _booking(row)

    def cancel(self, booking_id: str) -> dict[str, Any]:
        """Cancel a booking; cancelling it again changes nothing."""
        if self._db.execute(
            "UPDATE trip_bookings SET status = 'cancelled' WHERE booking_id = ?", (booking_id,)
        ).rowcount:
            return {"booking_id": booking_id, "status": "cancelled"}
        raise InvalidArguments(f"no booking {booking_id!r}; pass a booking_id that a booking returned")

    def held(self, trip_id: str) -> list[dict[str, Any]]:
        """The trip's bookings that are not cancelled."""
        rows = self._db.execute("SELECT * FROM trip_bookings WHERE trip_id = ? AND status = 'booked'", (trip_id,))
        return [_booking(row) for row in rows]

    def close(self) -> None:
        self._db.close()


def _booking(row: sqlite3.Row) -> dict[str, Any]:
    return {"booking_id": row["booking_id"], "kind": row["kind"], "status": row["status"], **json.loads(row["details"])}
