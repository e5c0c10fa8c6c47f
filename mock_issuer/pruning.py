"""Retention pruning in the background, never inside a request.

Every process (gunicorn worker) runs one daemon thread that wakes every `interval_seconds`
and tries to take the `prune` lease in the database: the process that gets it prunes
(retention.prune, in short batches, pausing between them so request writers go first) and
renews the lease after each batch; the others skip that round. The thread starts with the
first request its process serves (so a server that forks after create_app still gets one),
never under Flask's test client unless a test calls `start()`, and stops at process exit
after the batch in progress.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import socket
import threading
import uuid

from flask import Flask

from . import db, retention

log = logging.getLogger("mock_issuer")

LEASE_NAME = "prune"


class Pruner:
    """One process's background pruning thread, and the lease that lets one process prune."""

    def __init__(
        self,
        db_path: str,
        retention_ms: int,
        *,
        interval_seconds: float = 60.0,
        pause_seconds: float = 0.01,
    ) -> None:
        self.db_path = db_path
        self.retention_ms = retention_ms
        self.interval_seconds = interval_seconds
        self.pause_seconds = pause_seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._start_lock = threading.Lock()

    # ---- the lease ----

    def take_lease(self, now: int | None = None) -> bool:
        """Hold the lease for one interval if it is free, expired or already ours."""
        now = db.now_ms() if now is None else now
        conn = db.connect(self.db_path)
        with db.write(conn):
            row = conn.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                " expires_at = excluded.expires_at"
                " WHERE leases.expires_at <= ? OR leases.holder = excluded.holder"
                " RETURNING holder",
                (LEASE_NAME, self.holder, now + self._interval_ms(), now),
            ).fetchone()
        return row is not None

    def _renew_lease(self) -> bool:
        conn = db.connect(self.db_path)
        with db.write(conn):
            renewed = conn.execute(
                "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?",
                (db.now_ms() + self._interval_ms(), LEASE_NAME, self.holder),
            ).rowcount
        return renewed == 1

    def _interval_ms(self) -> int:
        return round(self.interval_seconds * 1000)

    # ---- one round ----

    def run_once(self) -> dict[str, int] | None:
        """Prune if this process gets the lease: rows deleted per table, or None if another
        process holds it (or the work was stopped half-way)."""
        if not self.take_lease():
            return None
        try:
            return retention.prune(
                db.connect(self.db_path),
                retention_ms=self.retention_ms,
                between_batches=self._between_batches,
            )
        except retention.Stopped:
            return None

    def _between_batches(self) -> bool:
        """Let waiting writers in, then carry on unless stopping or the lease was lost."""
        if self._stop.wait(self.pause_seconds):
            return False
        return self._renew_lease()

    # ---- the thread ----

    def start(self) -> None:
        """Start this process's thread (once per process; a no-op if it runs already)."""
        if self._pid == os.getpid():  # the per-request fast path
            return
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, name="mock-issuer-pruner")
            self._thread.daemon = True  # never keeps a process alive; stop() ends it cleanly
            self._thread.start()
            atexit.register(self.stop)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop after the batch in progress, and wait for it."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread, self._pid = None, None

    def _loop(self) -> None:
        # Jittered waits, so workers started together do not all try at the same instant.
        while not self._stop.wait(self.interval_seconds * random.uniform(0.5, 1.0)):  # noqa: S311
            try:
                deleted = self.run_once()
            except Exception:  # a failed round is logged; the next one tries again
                log.exception("pruning failed; retrying in %s s", self.interval_seconds)
                continue
            if deleted and any(deleted.values()):
                log.info("pruned %s", ", ".join(f"{n} {t}" for t, n in deleted.items() if n))
        db.close_thread_connections()


def init_app(app: Flask) -> Pruner:
    """Attach a Pruner; outside tests, start it with the first request of each process."""
    settings = app.extensions["settings"]
    pruner = Pruner(settings.mock_issuer_db, settings.retention_ms)
    app.extensions["pruner"] = pruner

    @app.before_request
    def _start_pruner() -> None:
        if not app.testing:
            pruner.start()

    return pruner
