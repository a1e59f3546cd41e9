"""The per-store key that signs gate tokens: a store id and a secret.

The secret never leaves the machine or database that keeps the store, and never appears
in a token. Where it is kept depends on the backend (each overrides
:meth:`GateKeying._load_gate_keys`): beside a DuckDB file, in a file of mode 0600; in
PostgreSQL, in a table only the store's owner (the role that created it) may read; in
memory, in the store object. ``$NBFLOW_GATE_SECRET`` replaces the stored secret (for
a team whose deciders work on other machines); the store id still comes from the store,
so a token signed for one store is refused by another that shares the secret.
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from nbflow.errors import StoreError

#: The environment variable that gives the secret instead of the store.
SECRET_ENV = "NBFLOW_GATE_SECRET"


@dataclass(frozen=True, repr=False)
class GateKeys:
    """The store id tokens name, and the secret they are signed with (never shown)."""

    store_id: str
    secret: bytes

    def __repr__(self) -> str:
        return f"GateKeys(store_id={self.store_id!r}, secret=<hidden>)"


def new_store_id() -> str:
    """A random store id (128 bits, hex)."""
    return secrets.token_hex(16)


def new_secret() -> str:
    """A random secret (256 bits, hex)."""
    return secrets.token_hex(32)


class GateKeying:
    """The part of a store that provides its :class:`GateKeys`."""

    _gate_keys_cache: GateKeys | None = None
    _gate_keys_lock = threading.Lock()

    def gate_keys(self) -> GateKeys:
        """The store's id and gate secret, created on first use."""
        with self._gate_keys_lock:
            if self._gate_keys_cache is None:
                self._gate_keys_cache = self._load_gate_keys()
            keys = self._gate_keys_cache
        given = os.environ.get(SECRET_ENV)
        if given:
            return GateKeys(keys.store_id, given.encode("utf-8"))
        return keys

    def _load_gate_keys(self) -> GateKeys:
        """The backend's stored keys, created if there are none yet. This default keeps
        them in the object (a store that lives in memory)."""
        return GateKeys(new_store_id(), new_secret().encode())


def secret_file(path: str | os.PathLike[str]) -> bytes:
    """The secret kept in the file ``path`` (created, mode 0600, if missing).

    A file others may read or write is refused: whoever reads the secret can approve any
    gate of the store."""
    target = Path(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(
            f"cannot create the gate secret file {target}: {exc.strerror}. Set "
            f"${SECRET_ENV} instead, or open the store where it can be written."
        ) from None
    else:
        with os.fdopen(fd, "w") as out:
            out.write(new_secret())
    try:
        mode = target.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StoreError(
                f"the gate secret file {target} may be read or changed by other users (mode "
                f"{stat.S_IMODE(mode):o}): anyone who reads it can approve this store's gates. "
                f"Make it private with `chmod 600 {target}`."
            )
        text = target.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read the gate secret file {target}: {exc}") from None
    if len(text) < 32:
        raise StoreError(
            f"the gate secret file {target} is damaged (too short to be a secret). Remove it "
            "to make a new one (tokens issued before then stop working)."
        )
    return text.encode("ascii")
