"""The DuckDB store's values: blob rows, and DataFrames as native tables."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from typing import TYPE_CHECKING, Any

import duckdb

from nbflow import arguments
from nbflow.errors import StoreError
from nbflow.store import schema
from nbflow.store.duckdb_connection import disk_full_error, is_disk_full, rollback
from nbflow.store.duckdb_digest import DIGEST_KEY, check_table, table_digest, without_digest
from nbflow.store.duckdb_part import DuckDBPart
from nbflow.store.records import BlobRecord, Codec, ValueRef
from nbflow.store.sql_rows import dumps

if TYPE_CHECKING:
    from nbflow.values import EncodedValue

_HEX = re.compile(r"[0-9a-f]+")


class DuckDBValues(DuckDBPart):
    """Values in a DuckDB store (mixed into :class:`~nbflow.store.duckdb_store.DuckDBStore`)."""

    # -- values -----------------------------------------------------------------------

    def put_value(self, encoded: EncodedValue) -> ValueRef:
        """Store the value once under its hash; a DataFrame becomes a native table."""
        ref = encoded.ref
        if ref.is_inline:
            return ref
        table_name = self._table_for(ref) if ref.codec is Codec.ARROW else None
        with self._lock:  # check and write under one hold: two writers of one hash
            stored = self._stored_size(ref.hash)
            if stored is not None:
                # Equal content may be laid out in memory differently (a frame read back
                # from the store, say): the stored record's size is the value's size.
                return ref.with_size(stored)
            con = self._con
            # Every core for a big value, its commit included (that writes the table).
            nbytes = encoded.table.nbytes if encoded.table is not None else len(encoded.data or b"")
            with self._all_threads(nbytes):
                con.execute("BEGIN TRANSACTION")
                try:
                    meta = dict(encoded.meta)
                    if table_name is not None:
                        assert encoded.table is not None
                        write_value_table(con, table_name, encoded.table)
                        meta[DIGEST_KEY] = table_digest(con, table_name)  # checked on load
                    con.execute(
                        "INSERT INTO blobs VALUES (?, ?, ?, now(), ?, ?, ?) ON CONFLICT DO NOTHING",
                        [
                            ref.hash,
                            ref.codec.value,
                            ref.size,
                            table_name,
                            dumps(meta),
                            encoded.data,
                        ],
                    )
                    con.execute("COMMIT")
                except BaseException as exc:
                    rollback(con)
                    if is_disk_full(exc):
                        raise disk_full_error(self.uri) from None
                    raise
            self._known_blobs[ref.hash] = ref.size
        return ref

    def read_encoded(self, ref: ValueRef) -> EncodedValue:
        """The blob row and, for a DataFrame, its native table as Arrow; not decoded."""
        from nbflow.values import EncodedValue

        if ref.is_inline:
            return EncodedValue(ref=ref)
        rows = self._execute(
            "SELECT codec, size, table_name, meta, data FROM blobs WHERE hash = ?", [ref.hash]
        )
        if not rows:
            raise StoreError(
                f"the value {ref.hash} is missing from {self}: it was deleted or never "
                "written. `nbflow check` reports such problems."
            )
        codec, size, table_name, meta_text, data = rows[0]
        meta = json.loads(meta_text or "{}")
        table = None
        if table_name is not None:
            # The name is derived from the hash, not read from the row: a store file from
            # elsewhere may hold any text there, and none of it reaches the SQL.
            from nbflow.values.duckdb_tables import wants_large_buffers

            large = wants_large_buffers(meta)
            with self._lock, self._all_threads(size):
                con = self._con
                if large:
                    con.execute("SET arrow_large_buffer_size = true")
                try:
                    table = con.sql(f"SELECT * FROM {self._table_for(ref)}").to_arrow_table()
                    check_table(con, self._table_for(ref), meta.get(DIGEST_KEY), table.num_rows)
                finally:
                    if large:  # (the lock keeps the connection open until here)
                        con.execute("RESET arrow_large_buffer_size")
        stored = ValueRef(Codec(codec), ref.hash, size, ref.type_name)
        return EncodedValue(
            ref=stored,
            table=table,
            data=None if data is None else bytes(data),
            meta=without_digest(meta),
        )

    def has_blob(self, hash: str) -> bool:
        """Whether a blob with this hash is stored."""
        arguments.text(hash, "a content hash")
        return self._stored_size(hash) is not None

    def _replace_blob_meta(self, hash: str, meta: Any) -> None:
        """Replace the meta stored with the blob ``hash`` (marking a value trusted)."""
        rows = self._execute(
            "UPDATE blobs SET meta = ? WHERE hash = ? RETURNING hash", [dumps(dict(meta)), hash]
        )
        if not rows:
            raise StoreError(f"the value {hash} is missing from {self}")

    def _stored_size(self, hash: str) -> int | None:
        """The size recorded for the blob ``hash``, or None if there is none."""
        guard = self._guard
        if guard is not None and guard.generation != self._known_generation:
            self._forget_values()  # another store object of this process deleted values
        if hash in self._known_blobs:
            return self._known_blobs[hash]
        rows = self._execute("SELECT size FROM blobs WHERE hash = ?", [hash])
        if not rows:
            return None
        self._known_blobs[hash] = rows[0][0]
        return int(rows[0][0])

    def list_blobs(self) -> list[BlobRecord]:
        """Every blob row."""
        rows = self._execute(
            "SELECT hash, codec, size, created_at, table_name FROM blobs ORDER BY created_at"
        )
        return [BlobRecord(r[0], Codec(r[1]), r[2], r[3], r[4]) for r in rows]

    def table_name(self, ref: ValueRef) -> str | None:
        """The qualified table name of a DataFrame value, to use in :meth:`sql`."""
        arguments.value_ref(ref)
        if ref.codec is not Codec.ARROW:
            return None
        return self._table_for(ref)

    @staticmethod
    def _table_for(ref: ValueRef) -> str:
        # Table names cannot be SQL parameters. A hash nbflow computed is hex, so the name
        # needs no quoting; a ref read from a store file is checked to be hex all the same.
        if not _HEX.fullmatch(ref.hash):
            raise StoreError(f"{ref.hash!r} is not a content hash: the store is damaged.")
        return f"{schema.VALUES_SCHEMA}.v_{ref.hash}"


def write_value_table(con: duckdb.DuckDBPyConnection, name: str, table: Any) -> None:
    """Create the table ``name`` (``nbflow_values.v_<hex>``) holding an Arrow table.

    Not ``duckdb_tables.write_table``: it quotes the whole name as one identifier, which
    would make a table called "nbflow_values.v_..." in the main schema.
    """
    view = f"__nbflow_value_{uuid.uuid4().hex}"
    con.register(view, table)
    try:
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM {view}")
    except BaseException:
        # The failed statement aborted the transaction, which refuses even this: the
        # caller's rollback drops the view with it. Keep the error that says why.
        with contextlib.suppress(duckdb.Error):
            con.unregister(view)
        raise
    con.unregister(view)
