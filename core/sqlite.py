"""Opening a SQLite file that several processes share.

Every SQLite store here (the event log, the participant store, the sandbox's and
the travel ledger's) is one file that workers on one machine open at the same
moment -- a batch of ``coordinator worker`` processes started together, a restart
after a crash. Switching a new file to WAL needs an exclusive lock, and SQLite does
not always wait for it through the busy timeout: a process that loses the race gets
"database is locked" at once and exited with it (seen when six workers started
together under load). :func:`connect_shared` opens the file, switches it to WAL
only when it is not already, and retries a lock conflict while opening until
``timeout``.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

__all__ = ["connect_shared"]

#: First pause between attempts to open a locked file; doubles up to _MAX_PAUSE_S.
_FIRST_PAUSE_S = 0.01
_MAX_PAUSE_S = 0.5


def connect_shared(
    path: str | Path, *, timeout: float = 30.0, check_same_thread: bool = False, wal: bool = True
) -> sqlite3.Connection:
    """An autocommit connection to ``path`` in WAL mode (``synchronous=NORMAL``).

    ``timeout`` bounds both SQLite's busy wait on each statement and the retries of
    a lock conflict while opening; after it the last ``sqlite3.OperationalError``
    is raised. ``wal=False`` leaves the journal mode alone (an in-memory database
    has no WAL).
    """
    deadline = time.monotonic() + timeout
    pause = _FIRST_PAUSE_S
    while True:
        db = sqlite3.connect(path, timeout=timeout, check_same_thread=check_same_thread, isolation_level=None)
        try:
            if wal:
                (mode,) = db.execute("PRAGMA journal_mode").fetchone()
                if str(mode).lower() != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            return db
        except sqlite3.OperationalError as exc:
            db.close()
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)  # another process holds the file for a moment: try again
            pause = min(pause * 2, _MAX_PAUSE_S)
