"""Run leases: which process advances a running run, and whether it is still alive.

A runner claims its run's lease before the run starts and renews it while it runs (a
heartbeat); the lease goes when the run ends. A run left ``running`` by a process that
died (a kernel restart, ``kill -9``) holds a lease nobody renews: readers then see the
run as ``interrupted``, and it can be resumed.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import uuid
from collections.abc import Callable
from functools import cache

from nbflow.store.records import Lease, utcnow

ENV_LEASE_TTL = "NBFLOW_LEASE_TTL"
DEFAULT_TTL = 30.0  # seconds a lease lasts without a heartbeat


def lease_ttl() -> float:
    """Seconds a lease lasts without renewal (``$NBFLOW_LEASE_TTL``, default 30)."""
    raw = os.environ.get(ENV_LEASE_TTL)
    if not raw:
        return DEFAULT_TTL
    try:
        ttl = float(raw)
    except ValueError:
        from nbflow.errors import ParameterError

        raise ParameterError(f"{ENV_LEASE_TTL}={raw!r} is not a number of seconds") from None
    if ttl <= 0:
        from nbflow.errors import ParameterError

        raise ParameterError(f"{ENV_LEASE_TTL} must be positive, not {raw!r}")
    return ttl


@cache
def host_name() -> str:
    """This machine's name, as leases record it."""
    return socket.gethostname()


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot; Linux), or None if unknown.

    Together with the pid it names one process: a pid reused after a crash has another
    start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int, proc_start: int | None = None) -> bool:
    """Whether process ``pid`` (started at ``proc_start``, when known) is still running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    if proc_start is not None:
        now = process_start(pid)
        if now is not None and now != proc_start:
            return False  # the pid was reused by another process
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    # A killed child its parent has not reaped yet still answers kill(pid, 0).
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] in (b"Z", b"X")


def lease_alive(lease: Lease, now: dt.datetime | None = None) -> bool:
    """Whether the lease's holder may still be advancing its run.

    On this host the process itself is asked (a dead process never renews, and a live
    one that is slow to renew has not lost its run); from another host, the expiry
    decides.
    """
    if lease.host == host_name():
        return pid_alive(lease.pid, lease.proc_start)
    return lease.expires_at > (now or utcnow())


def new_token() -> str:
    """A token naming one store object as a lease holder."""
    return uuid.uuid4().hex


def make_lease(
    run_id: str, token: str, ttl: float, acquired_at: dt.datetime | None = None
) -> Lease:
    """A lease on ``run_id`` for this process, valid ``ttl`` seconds from now."""
    now = utcnow()
    pid = os.getpid()
    return Lease(
        run_id=run_id,
        token=token,
        pid=pid,
        host=host_name(),
        acquired_at=acquired_at or now,
        expires_at=now + dt.timedelta(seconds=ttl),
        proc_start=_own_start(pid),
    )


@cache
def _own_start(pid: int) -> int | None:
    return process_start(pid)


class Heartbeat:
    """Renews a run's lease every third of its TTL, on a daemon thread, until stopped."""

    def __init__(self, renew: Callable[[], bool], ttl: float, name: str) -> None:
        self._renew = renew
        self._interval = max(ttl / 3.0, 0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"nbflow-lease-{name}", daemon=True)

    def start(self) -> Heartbeat:
        """Start beating; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self._renew():
                    return  # taken over: the run's next write will find it stale
            except Exception:  # a busy store: try again at the next beat
                continue
