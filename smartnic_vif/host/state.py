"""Durable per-port state: VF claims and the journal of applied plans.

One SQLite database (WAL) under ``state_path``. A row is written *before* the
host is touched (phase ``plugging``, with the whole plan) and its progress
(``steps_started``) is advanced before steps start, so a crash at any point
leaves enough to finish or undo the work (``smartnic-vif reconcile``).
``vf_address`` is UNIQUE: two processes can never claim one VF.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from smartnic_vif.decisions.plan import Plan
from smartnic_vif.model.errors import SmartNICError

SCHEMA = """
CREATE TABLE IF NOT EXISTS ports (
    port_id     TEXT PRIMARY KEY,
    vf_address  TEXT UNIQUE,
    mode        TEXT NOT NULL,
    phase       TEXT NOT NULL,
    request     TEXT NOT NULL,
    plan        TEXT,
    steps_started INTEGER NOT NULL DEFAULT 0,
    pid         INTEGER,
    updated     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS unrestored (
    vf_address  TEXT,
    port_id     TEXT NOT NULL,
    what        TEXT NOT NULL,
    noted       REAL NOT NULL
);
"""

PHASES = ("claimed", "plugging", "plugged", "unplugging")


class VfAlreadyClaimed(SmartNICError):
    def __init__(self, vf_address: str, port_id: str) -> None:
        self.vf_address = vf_address
        self.port_id = port_id
        super().__init__(f"VF {vf_address} is already claimed by port {port_id}")


@dataclass(frozen=True)
class PortRecord:
    port_id: str
    vf_address: str | None
    mode: str
    phase: str
    request: dict[str, Any]
    plan: Plan | None
    steps_started: int
    pid: int | None
    updated: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "port_id": self.port_id,
            "vf_address": self.vf_address,
            "mode": self.mode,
            "phase": self.phase,
            "request": self.request,
            "plan": self.plan.to_dict() if self.plan else None,
            "steps_started": self.steps_started,
            "pid": self.pid,
            "updated": self.updated,
        }


class StateError(SmartNICError):
    """The state database cannot be used; names the path and what to do."""


def _state_error(state_path: str, db_path: str, error: BaseException) -> StateError:
    """One line for an error opening or using the database at ``db_path``."""
    if os.path.exists(state_path) and not os.path.isdir(state_path):
        return StateError(
            f"state_path {state_path} is not a directory: remove the file or set "
            "state_path in [os_vif_smartnic] to a directory"
        )
    if os.path.isdir(db_path):
        return StateError(
            f"state database {db_path} is a directory: remove it or set state_path in "
            "[os_vif_smartnic] to another directory"
        )
    detail = str(error) or type(error).__name__
    if isinstance(error, OSError) or "readonly" in detail or "unable to open" in detail:
        where = state_path if os.path.isdir(state_path) else os.path.dirname(state_path)
        if not os.access(where, os.W_OK | os.X_OK) or (
            os.path.exists(db_path) and not os.access(db_path, os.R_OK | os.W_OK)
        ):
            return StateError(
                f"state_path {state_path} is not writable ({detail}): make it and "
                f"{os.path.basename(db_path)} writable by this user or set state_path in "
                "[os_vif_smartnic]"
            )
    if isinstance(error, sqlite3.DatabaseError) and (
        "not a database" in detail or "malformed" in detail or "corrupt" in detail
        or "no such table" in detail or "no such column" in detail
    ):
        return StateError(
            f"state database {db_path} is corrupt ({detail}): move it aside (its claims are "
            "lost), then check the host with 'smartnic-vif status' and 'smartnic-vif doctor'"
        )
    return StateError(f"state database {db_path}: {detail}")


class StateStore:
    def __init__(self, state_path: str) -> None:
        self.path = os.path.join(state_path, "state.db")
        self.state_path = state_path
        self._local = threading.local()
        try:
            os.makedirs(state_path, mode=0o700, exist_ok=True)
        except OSError as e:
            raise _state_error(state_path, self.path, e) from e
        with self._db() as db:
            db.executescript(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(ports)")}
            if "done_steps" in columns:
                # Progress used to be written after each step ("done"), so
                # an interrupted row may have run one step more than it
                # says; it is now written before steps start. Count that
                # step as started (undoing a step that did not run is safe).
                db.execute("BEGIN IMMEDIATE")
                db.execute("ALTER TABLE ports RENAME COLUMN done_steps TO steps_started")
                db.execute("UPDATE ports SET steps_started = steps_started + 1"
                           " WHERE phase IN ('plugging', 'unplugging')")
                db.execute("COMMIT")

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection (one per thread and process: sqlite
        connections must not cross threads or forks). Opening one and setting
        its pragmas costs more than the writes, so it is kept."""
        key = (os.getpid(), threading.get_ident())
        try:
            db = self._local.__dict__.get("db")
            if db is None or self._local.__dict__.get("key") != key:
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                # WAL + NORMAL survives a process crash (what reconcile is for);
                # only a power loss may drop the last commits.
                db.execute("PRAGMA synchronous=NORMAL")
                self._local.db, self._local.key = db, key
            yield db
        except sqlite3.Error as e:
            # Raw sqlite errors name neither the file nor the remedy.
            raise _state_error(self.state_path, self.path, e) from e

    @staticmethod
    def _record(row: tuple[Any, ...]) -> PortRecord:
        port_id, vf, mode, phase, request, plan, done, pid, updated = row
        return PortRecord(
            port_id=port_id,
            vf_address=vf,
            mode=mode,
            phase=phase,
            request=json.loads(request),
            plan=Plan.from_dict(json.loads(plan)) if plan else None,
            steps_started=done,
            pid=pid,
            updated=updated,
        )

    _COLUMNS = "port_id, vf_address, mode, phase, request, plan, steps_started, pid, updated"

    def get(self, port_id: str) -> PortRecord | None:
        with self._db() as db:
            row = db.execute(
                f"SELECT {self._COLUMNS} FROM ports WHERE port_id = ?", (port_id,)
            ).fetchone()
        return self._record(row) if row else None

    def by_vf(self, vf_address: str) -> PortRecord | None:
        with self._db() as db:
            row = db.execute(
                f"SELECT {self._COLUMNS} FROM ports WHERE vf_address = ?", (vf_address,)
            ).fetchone()
        return self._record(row) if row else None

    def all(self) -> list[PortRecord]:
        with self._db() as db:
            rows = db.execute(f"SELECT {self._COLUMNS} FROM ports ORDER BY port_id").fetchall()
        return [self._record(r) for r in rows]

    def forwarder_vfs(self) -> list[str]:
        """The VFs of forwarder ports whose plug has started: each owns a
        relay slot of the daemon, also while a restarted daemon has yet to get
        its relay back. A claim whose plug has not started (phase ``claimed``:
        an attach on its way, or one that died before plugging) has no relay."""
        with self._db() as db:
            rows = db.execute(
                "SELECT vf_address FROM ports WHERE mode = 'forwarder'"
                " AND vf_address IS NOT NULL AND phase != 'claimed'"
            ).fetchall()
        return [r[0] for r in rows]

    def port_ids(self, phase: str, mode: str) -> set[str]:
        """The ports in ``phase`` and ``mode`` (no plan or request is read:
        the watch asks this every poll)."""
        with self._db() as db:
            rows = db.execute("SELECT port_id FROM ports WHERE phase = ? AND mode = ?",
                              (phase, mode)).fetchall()
        return {r[0] for r in rows}

    def claims(self) -> dict[str, str]:
        """VF address -> port id, for VF selection."""
        with self._db() as db:
            rows = db.execute(
                "SELECT vf_address, port_id FROM ports WHERE vf_address IS NOT NULL"
            ).fetchall()
        return dict(rows)

    def claim(
        self,
        port_id: str,
        vf_address: str | None,
        mode: str,
        request: dict[str, Any],
        plan: Plan | None = None,
        steps_started: int = 0,
    ) -> None:
        """Claim ``vf_address`` for ``port_id`` (idempotent for the same pair).
        With ``plan``, also journal it (phase ``plugging``, ``steps_started``
        of its steps about to start) in the same transaction."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT port_id FROM ports WHERE vf_address = ?", (vf_address,)
                ).fetchone() if vf_address else None
                if row and row[0] != port_id:
                    raise VfAlreadyClaimed(vf_address or "", row[0])
                existing = db.execute(
                    "SELECT vf_address FROM ports WHERE port_id = ?", (port_id,)
                ).fetchone()
                if existing is not None and existing[0] != vf_address:
                    raise SmartNICError(
                        f"port {port_id} already holds VF {existing[0]}; detach it first"
                    )
                if existing is None:
                    db.execute(
                        "INSERT INTO ports (port_id, vf_address, mode, phase, request, pid,"
                        " updated) VALUES (?, ?, ?, 'claimed', ?, ?, ?)",
                        (port_id, vf_address, mode, json.dumps(request), os.getpid(),
                         time.time()),
                    )
                if plan is not None:
                    db.execute(
                        "UPDATE ports SET plan = ?, phase = 'plugging', steps_started = ?,"
                        " pid = ?, updated = ? WHERE port_id = ?",
                        (json.dumps(plan.to_dict()), steps_started, os.getpid(), time.time(),
                         port_id),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def set_phase(self, port_id: str, phase: str, steps_started: int | None = None) -> None:
        if phase not in PHASES:
            raise ValueError(phase)
        if steps_started is None:
            self._update(port_id, phase=phase)
        else:
            self._update(port_id, phase=phase, steps_started=steps_started)

    def set_progress(self, port_id: str, steps_started: int) -> None:
        self._update(port_id, steps_started=steps_started)

    def _update(self, port_id: str, **columns: Any) -> None:
        columns["updated"] = time.time()
        columns["pid"] = os.getpid()
        sets = ", ".join(f"{k} = ?" for k in columns)
        with self._db() as db:
            db.execute(f"UPDATE ports SET {sets} WHERE port_id = ?",  # noqa: S608 - fixed names
                       (*columns.values(), port_id))

    def release(self, port_id: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM ports WHERE port_id = ?", (port_id,))

    # -- what an unplug could not put back ------------------------------------
    def note_unrestored(self, port_id: str, vf_address: str | None, what: list[str]) -> None:
        """Record what an unplug of ``port_id`` could not restore (its undo
        found the thing gone), for ``status``. A note lives until the VF is
        plugged again (:meth:`clear_unrestored`) or ``reconcile``
        acknowledges it."""
        now = time.time()
        with self._db() as db:
            # The same note again (an unplug repeated) is kept once.
            db.executemany(
                "INSERT INTO unrestored (vf_address, port_id, what, noted)"
                " SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM unrestored"
                " WHERE vf_address IS ? AND port_id = ? AND what = ?)",
                [(vf_address, port_id, w, now, vf_address, port_id, w) for w in what])

    def unrestored(self) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute("SELECT port_id, vf_address, what, noted FROM unrestored"
                              " ORDER BY noted, rowid").fetchall()
        return [{"port_id": p, "vf": vf, "what": w, "noted": t} for p, vf, w, t in rows]

    def clear_unrestored(self, vf_address: str | None = None) -> None:
        """Forget the notes about ``vf_address`` (all notes if None)."""
        with self._db() as db:
            if vf_address is None:
                db.execute("DELETE FROM unrestored")
            else:
                db.execute("DELETE FROM unrestored WHERE vf_address = ?", (vf_address,))
