"""The DuckDB store: one file holds flows, runs, events, step executions and values."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from nbflow.arguments import env_seconds
from nbflow.errors import (
    CorruptStoreError,
    NbflowError,
    NotAStoreError,
    StoreBusyError,
    StoreError,
)
from nbflow.store.base import Store
from nbflow.store.duckdb import schema
from nbflow.store.duckdb.compaction import LOG_SUFFIXES, remove_leftovers
from nbflow.store.duckdb.connection import (
    DEFAULT_BUSY_TIMEOUT,
    DEFAULT_IDLE_RELEASE,
    ENV_BUSY_TIMEOUT,
    ENV_IDLE_RELEASE,
    IDLE_CLOSER,
    YIELD_S,
    connect_waiting,
    disk_full_error,
    is_disk_full,
    is_lock_error,
    raise_if_corrupt,
    someone_waits,
)
from nbflow.store.duckdb.disk_reserve import keep_reserve
from nbflow.store.duckdb.events import DuckDBEvents
from nbflow.store.duckdb.exit import close_at_exit
from nbflow.store.duckdb.file_guard import guard_for
from nbflow.store.duckdb.gate_keys import DuckDBGateKeys
from nbflow.store.duckdb.maintenance import DuckDBMaintenance
from nbflow.store.duckdb.read_only import raise_if_read_only, write_refusal
from nbflow.store.duckdb.runs import DuckDBRuns
from nbflow.store.duckdb.sql import DuckDBFrames
from nbflow.store.duckdb.trust import DuckDBTrust
from nbflow.store.duckdb.values import DuckDBValues
from nbflow.store.records import EventType, NewEvent, RunStatus
from nbflow.store.sql_guard import sandbox

_DUCKDB_MAGIC = b"DUCK"  # bytes 8..12 of every DuckDB database file

# Values at least this big are read and written with every DuckDB thread.
_PARALLEL_BYTES = 4 * 1024 * 1024

# How long a check for a waiting process waits for the operation in progress to end.
_HAND_OVER_WAIT_S = 0.05


class DuckDBStore(
    DuckDBRuns,
    DuckDBEvents,
    DuckDBValues,
    DuckDBMaintenance,
    DuckDBFrames,
    DuckDBTrust,
    DuckDBGateKeys,
    Store,
):
    """A store in one DuckDB file (or ``:memory:``), the embedded default.

    The connection stays open while the store is in use (opening one costs ~20 ms) and
    is given back after ``idle_release`` seconds without use (default 0.5 s,
    ``$NBFLOW_IDLE_RELEASE``), so other processes (a second notebook, the CLI) can take
    their turn: DuckDB allows one process at a time on a file. A store that finds the
    file busy waits, with backoff, up to ``busy_timeout`` seconds (default 60,
    ``$NBFLOW_BUSY_TIMEOUT``), then raises StoreBusyError naming the holder's PID.
    DataFrame outputs are kept as native tables in the ``nbflow_values`` schema (those
    under 256 KB in their blob row, shown as tables while a query runs), so ``store.sql``
    can query checkpoints directly; see :meth:`table_name`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "nbflow.duckdb",
        *,
        trust: bool = True,
        busy_timeout: float | None = None,
        idle_release: float | None = None,
        tenant: str | None = None,
    ):
        from nbflow.store.tenants import optional_tenant

        super().__init__()
        self.trust = trust
        self.tenant = optional_tenant(tenant)
        self.path = str(path)
        in_memory = self.path == ":memory:"
        self.uri = self.path if in_memory else str(Path(self.path).resolve())
        self._where = "the in-memory database" if in_memory else repr(self.uri)
        self.busy_timeout = (
            env_seconds(ENV_BUSY_TIMEOUT, DEFAULT_BUSY_TIMEOUT)
            if busy_timeout is None
            else busy_timeout
        )
        # An in-memory database lives only as long as its connection: never released.
        self.idle_release: float | None = (
            None
            if in_memory
            else env_seconds(ENV_IDLE_RELEASE, DEFAULT_IDLE_RELEASE)
            if idle_release is None
            else idle_release
        )
        # Shared by this process's stores of the file; None in memory (nothing to share).
        self._guard = None if in_memory else guard_for(self.uri)
        if self._guard is not None:
            with self._guard.unopened_here() as unopened:
                _check_file(Path(self.path), read_header=unopened)
        self._known_blobs: dict[str, int] = {}  # hash -> stored size
        self._filed: set[str] = set()  # runs known to have no pending rows (events.py)
        self._known_generation = 0  # the guard's generation _known_blobs was filled at
        self._threads = 1  # DuckDB's own thread count, read when connecting
        self._sandboxed = False  # whether store.sql's database reaches only the store
        self._yield_until = 0.0  # monotonic time before which not to take the file back
        self._closed = False
        self._last_used = time.monotonic()
        self._conn: duckdb.DuckDBPyConnection | None = None
        close_at_exit(self)
        if self._guard is not None:
            self._guard.watch(self)
        self._conn = self._open()

    def _open(self) -> duckdb.DuckDBPyConnection:
        pause = self._yield_until - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        con = connect_waiting(self._connect_shared, self.uri, self.busy_timeout)
        # Another process may have changed the file while we did not hold it (gc may
        # have deleted blobs, for one): what we remember of it must be checked again.
        self._forget_values()
        self._known_flows = set()
        if self.idle_release is not None:
            IDLE_CLOSER.watch(self)
        if self._guard is not None:
            remove_leftovers(self.path)
            keep_reserve(self.path)
        return con

    def _forget_values(self) -> None:
        self._known_blobs = {}
        if self._guard is not None:
            self._known_generation = self._guard.generation

    def _connect_shared(self) -> duckdb.DuckDBPyConnection:
        """Connect while holding the file shared (see :mod:`nbflow.store.duckdb.file_guard`):
        no gc can replace it under us, here or in another process, until we close."""
        guard = self._guard
        if guard is None:
            return self._connect()
        if not guard.acquire_shared(time.monotonic() + self.busy_timeout):
            raise StoreBusyError(
                f"the store {self.uri!r} was being compacted by gc (in this or another "
                f"process) for the {self.busy_timeout:g} s this process waited; try again "
                f"when it has finished, or wait longer with {ENV_BUSY_TIMEOUT}=SECONDS.",
                path=self.uri,
            )
        try:
            return self._connect()
        except BaseException:
            guard.release_shared()
            raise

    @property
    def _con(self) -> duckdb.DuckDBPyConnection:
        """The open connection, opened (waiting for the file if busy) when released.

        Callers hold ``self._lock`` while they use it, so it is never released mid-use.
        """
        if self._closed:
            raise StoreError(f"{self} is closed; open it again with nf.open_store().")
        if self._conn is None:
            self._conn = self._open()
        self._last_used = time.monotonic()
        return self._conn

    def _connect(self) -> duckdb.DuckDBPyConnection:
        where = self._where
        try:
            con = duckdb.connect(self.path)
            self.read_only_reason = None
        except duckdb.IOException as exc:
            if is_lock_error(exc):
                raise
            con = self._connect_read_only(exc)
        except duckdb.Error as exc:
            raise_if_corrupt(exc, self.uri)
            raise CorruptStoreError(
                f"{where} could not be opened as a DuckDB database: {exc}"
            ) from None
        try:
            con.execute("SET TimeZone = 'UTC'")
            # DuckDB draws a progress bar on the terminal for long statements (a big
            # checkpoint, compaction): not nbflow's output, and it garbles the user's.
            con.execute("SET enable_progress_bar = false")
            # One thread for the many tiny statements of the write path: waking DuckDB's
            # worker threads costs more than such a statement does (~0.1-0.2 ms each
            # here); big reads and writes switch to every core (see _all_threads).
            self._threads = int(con.execute("SELECT current_setting('threads')").fetchall()[0][0])
            con.execute("SET threads = 1")
            # store.sql may reach nothing outside the store (see sql_guard).
            self._sandboxed = sandbox(con, self.path)
            schema.setup(con, where)
        except (NotAStoreError, StoreError):
            con.close()
            raise
        except duckdb.Error as exc:
            con.close()
            raise CorruptStoreError(f"{where} is damaged and cannot be read: {exc}") from None
        return con

    def _connect_read_only(self, refused: duckdb.IOException) -> duckdb.DuckDBPyConnection:
        """The file cannot be opened for writing: open it for reading if that is why
        (see :mod:`nbflow.store.duckdb.read_only`), else it is damaged."""
        reason = write_refusal(refused)
        if reason is None:
            raise CorruptStoreError(
                f"{self.path!r} is damaged and cannot be opened as a store: {refused}"
            ) from None
        if not Path(self.path).exists():
            raise StoreError(
                f"cannot create the store {self.uri!r}: its folder cannot be written ({reason})."
            ) from None
        try:
            con = duckdb.connect(self.path, read_only=True)
        except duckdb.IOException as exc:
            if is_lock_error(exc):
                raise
            raise CorruptStoreError(
                f"{self.path!r} is damaged and cannot be opened as a store: {exc}"
            ) from None
        self.read_only_reason = reason
        return con

    # -- lifecycle --------------------------------------------------------------------

    def with_tenant(self, tenant: str | None) -> DuckDBStore:
        """A store object of its own (its own connection) on this file, for ``tenant``."""
        if self.path == ":memory:":
            raise StoreError(
                "a private in-memory DuckDB database (':memory:') has one connection and "
                "cannot be opened again for a tenant: use a file, or 'memory://'."
            )
        return DuckDBStore(
            self.path,
            trust=self.trust,
            busy_timeout=self.busy_timeout,
            idle_release=self.idle_release,
            tenant=tenant,
        )

    def close(self) -> None:
        """Close the DuckDB connection (checkpointing the file)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._disconnect()

    def _disconnect(self) -> None:
        """Close the connection, then let go of the file (the caller holds the lock)."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
                if self._guard is not None:
                    self._guard.release_shared()

    def _close_at_exit(self) -> None:
        """Called at interpreter exit with the lock held: the runs this object still
        executes are recorded as interrupted, then the connection is closed."""
        if self._closed:
            return
        if self._leases:
            # Not the usual minute of waiting for a file another process holds.
            self.busy_timeout = min(self.busy_timeout, 5.0)
            interrupted = NewEvent(
                EventType.RUN_INTERRUPTED,
                payload={"error": "the Python process running it exited before it finished"},
            )
            for run_id in list(self._leases):
                state = self._states.get(run_id)
                if state is None or state.run.status is not RunStatus.RUNNING:
                    continue
                with contextlib.suppress(NbflowError, duckdb.Error):
                    self.append(run_id, state.run.version, [interrupted])
        self._closed = True
        self._disconnect()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def connected(self) -> bool:
        """Whether the store holds its file now (it lets go after ``idle_release``)."""
        return self._conn is not None

    def release_connection(self) -> None:
        """Give the file back to other processes now; the next use opens it again."""
        with self._lock:
            self._disconnect()

    def _release_if_unused(self) -> bool:
        """Give the file back now unless it is in use at this instant; whether this
        object has it closed now (asked by a gc of this process that compacts it)."""
        if not self._lock.acquire(blocking=False):
            return self._conn is None
        try:
            self._disconnect()
            return True
        finally:
            self._lock.release()

    def release_if_idle(self) -> None:
        """Give the file back if unused for ``idle_release`` seconds, or at once if
        another process asks for it, unless it is in use right now."""
        if self._conn is None or self.idle_release is None:
            return
        idle = time.monotonic() - self._last_used >= self.idle_release
        if not idle and not someone_waits(self.uri):
            return
        # A store in use holds its lock most of the time (83% of a run of quick steps,
        # in gaps of ~1 ms), so a check that only tries would rarely find it free: for a
        # waiter, wait for the end of the operation in progress.
        if not self._lock.acquire(timeout=_HAND_OVER_WAIT_S if not idle else 0):
            return  # in use right now: looked at again at the next check
        try:
            if self._conn is not None:
                self.release_connection()
                if not idle:  # given to a waiter: let it take the file before we do
                    self._yield_until = time.monotonic() + YIELD_S
        finally:
            self._lock.release()

    def _execute(self, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._closed:
                raise StoreError(f"{self} is closed; open it again with nf.open_store().")
            try:
                return self._con.execute(query, params).fetchall()
            except duckdb.Error as exc:
                raise_if_corrupt(exc, self.uri)
                if is_disk_full(exc):
                    raise disk_full_error(self.uri) from None
                raise_if_read_only(exc, self.uri, self.read_only_reason)
                raise

    def change_token(self) -> object:
        """The size and modification time of the file and its write-ahead log: a commit
        here or in another process changes them, and reading them needs no connection
        (so it never takes the file from the process running a flow)."""
        if self.uri == ":memory:":
            with self._lock:
                return tuple(self._execute("SELECT count(*), coalesce(sum(version), 0) FROM runs"))
        token: list[tuple[int, int] | None] = []
        for suffix in ("", *LOG_SUFFIXES[:1]):
            try:
                info = os.stat(self.path + suffix)
            except OSError:
                token.append(None)
            else:
                token.append((info.st_size, info.st_mtime_ns))
        return tuple(token)

    @contextmanager
    def _all_threads(self, nbytes: int | None = None) -> Iterator[None]:
        """Let DuckDB use every core inside the block (for ``nbytes`` of data or more
        than :data:`_PARALLEL_BYTES`, or whatever a query may read when None).

        The caller holds ``self._lock`` so no small statement runs meanwhile.
        """
        if self._threads <= 1 or (nbytes is not None and nbytes < _PARALLEL_BYTES):
            yield
            return
        con = self._con
        con.execute(f"SET threads = {self._threads:d}")
        try:
            yield
        finally:
            if self._conn is not None:
                self._conn.execute("SET threads = 1")

    # -- storage ----------------------------------------------------------------------

    def storage_bytes(self) -> int | None:
        """The size of the store file (and its write-ahead log), or None in memory."""
        if self.path == ":memory:":
            return None
        wal = Path(self.path + ".wal")
        return Path(self.path).stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    def compact(self) -> str | None:
        """Give freed space back: copy the live data to a new file and swap it in, while
        no other process has the file open; None when done, else why it was skipped.

        DuckDB reuses freed blocks but never shrinks a file. See
        :mod:`nbflow.store.duckdb.compaction`.
        """
        from nbflow.store.duckdb.compaction import compact

        with self._lock:
            if self._closed:
                raise StoreError(f"{self} is closed; open it again with nf.open_store().")
            return compact(self)


# -- opening --------------------------------------------------------------------------------


def _check_file(path: Path, *, read_header: bool = True) -> None:
    """Refuse paths that cannot be a store before DuckDB touches them. The header is
    read only with ``read_header`` (never while this process has the file open in
    DuckDB: see :meth:`FileGuard.unopened_here`; it was checked when first opened)."""
    if path.is_dir():
        raise NotAStoreError(
            f"{str(path)!r} is a directory, not a store file. Give a file path such as "
            f"{str(path / 'nbflow.duckdb')!r}."
        )
    if not path.exists():
        if not path.parent.exists():
            raise StoreError(
                f"cannot create the store {str(path)!r}: the folder {str(path.parent)!r} "
                "does not exist."
            )
        return
    size = path.stat().st_size
    if size == 0:
        raise NotAStoreError(f"{str(path)!r} is an empty file, not a DuckDB store.")
    if not read_header:
        return
    with path.open("rb") as fh:
        header = fh.read(16)
    if header[8:12] != _DUCKDB_MAGIC:
        raise NotAStoreError(
            f"{str(path)!r} is not a DuckDB file, so it cannot be an nbflow store. "
            "Use another path for the store."
        )
