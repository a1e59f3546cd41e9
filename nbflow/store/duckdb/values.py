"""The DuckDB store's values: blob rows, DataFrames as native tables, and large bytes in
tables of words (see :mod:`nbflow.store.duckdb.blobs`)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import duckdb

from nbflow import arguments
from nbflow.errors import CorruptStoreError, StoreError
from nbflow.store.duckdb import schema
from nbflow.store.duckdb.blobs import COMPACT_FRAME_BYTES
from nbflow.store.duckdb.connection import disk_full_error, is_disk_full, rollback
from nbflow.store.duckdb.digest import DIGEST_KEY, check_table, table_digest, without_digest
from nbflow.store.duckdb.part import DuckDBPart
from nbflow.store.records import BlobRecord, Codec, ValueRef
from nbflow.store.sql_rows import dumps
from nbflow.values.refs import value_ref_argument

if TYPE_CHECKING:
    from nbflow.values import EncodedValue

_HEX = re.compile(r"[0-9a-f]+")
# A frame's table name in a query: v_ and its hash (DuckDB names ignore case).
_VALUE_NAME = re.compile(r"\bv_([0-9a-f]{32})\b", re.IGNORECASE)


class DuckDBValues(DuckDBPart):
    """Values in a DuckDB store (mixed into :class:`~nbflow.store.duckdb.store.DuckDBStore`)."""

    #: DataFrames whose Arrow table is smaller than this many bytes are kept in their blob
    #: row rather than in a table of their own (see :mod:`nbflow.store.duckdb.blobs`);
    #: 0 makes every frame a table.
    compact_frame_bytes: int = COMPACT_FRAME_BYTES

    # -- values -----------------------------------------------------------------------

    def put_value(self, encoded: EncodedValue) -> ValueRef:
        """Store the value once under its hash: a DataFrame as a native table (a small
        one in its blob row), other bytes in the row or, when large, in a table of words
        (see :mod:`nbflow.store.duckdb.blobs`)."""
        ref = encoded.ref
        if ref.is_inline:
            return ref
        with self._lock:  # check and write under one hold: two writers of one hash
            stored = self._stored_size(ref.hash)
            if stored is not None:
                # Equal content may be laid out in memory differently (a frame read back
                # from the store, say): the stored record's size is the value's size.
                return ref.with_size(stored)
            try:
                self._write_blob(encoded, bounded=True)
            except duckdb.OutOfMemoryException:
                # DuckDB needed more than its working memory for this one (a very wide
                # row group, many threads): written again, unbounded.
                self._write_blob(encoded, bounded=False)
            self._known_blobs[ref.hash] = ref.size
        return ref

    def _write_blob(self, encoded: EncodedValue, *, bounded: bool) -> None:
        """Write the blob row (and its table, if it has one) in one transaction."""
        from nbflow.store.duckdb import blobs

        ref = encoded.ref
        table_name = data = None
        if ref.codec is Codec.ARROW:
            if encoded.table is None:
                raise ValueError("an ARROW value needs its table")
            nbytes = encoded.table.nbytes
            if nbytes < self.compact_frame_bytes:
                data = blobs.compact_frame(encoded.table)
            else:
                table_name = self._table_for(ref)
        else:
            nbytes = encoded.nbytes
            if nbytes >= blobs.WORDS_BYTES:
                table_name = self._table_for(ref)
            elif encoded.has_bytes:
                data = b"".join(encoded.chunks)
        con = self._con
        # Every core for a big value, its commit included (that writes the table).
        with self._all_threads(nbytes):
            before = None
            if table_name is not None and bounded:
                # (Lowered outside the transaction: a refused SET would abort it.)
                extra = blobs.working_memory(_row_bytes(encoded), self._threads)
                before = blobs.lower_memory(con, extra)
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    meta = dict(encoded.meta)
                    if ref.codec is Codec.ARROW and table_name is not None:
                        write_value_table(con, table_name, encoded.table)
                        meta[DIGEST_KEY] = table_digest(con, table_name)  # checked on load
                    elif table_name is not None:
                        blobs.write_words(con, table_name, encoded.chunks, nbytes)
                    # Put back before the commit: it may checkpoint.
                    blobs.restore_memory(con, before)
                    before = None
                    row = [ref.hash, ref.codec.value, ref.size, table_name, dumps(meta)]
                    con.execute(
                        "INSERT INTO blobs VALUES (?, ?, ?, now(), ?, ?, ?) ON CONFLICT DO NOTHING",
                        [*row, data],
                    )
                    con.execute("COMMIT")
                except BaseException as exc:
                    rollback(con)
                    if is_disk_full(exc):
                        raise disk_full_error(self.uri) from None
                    raise
            finally:
                blobs.restore_memory(con, before)  # (a failed write: once it is rolled back)

    def _may_read_value(self, hash: str) -> bool:
        rows = self._execute(
            "SELECT EXISTS (SELECT 1 FROM step_executions x JOIN run_records r USING (run_id) "
            "WHERE x.output_hash = ? AND (r.tenant IS NULL OR r.tenant = ?)) "
            "OR NOT EXISTS (SELECT 1 FROM step_executions WHERE output_hash = ?)",
            [hash, self.tenant, hash],
        )
        return bool(rows[0][0])

    def read_encoded(self, ref: ValueRef) -> EncodedValue:
        """The blob row and, for a DataFrame, its table as Arrow; not decoded."""
        from nbflow.values import EncodedValue

        if ref.is_inline:
            return EncodedValue(ref=ref)
        self._check_value_seen(ref)
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
        stored = ValueRef(Codec(codec), ref.hash, size, ref.type_name)
        # Table names are derived from the hash, not read from the row: a store file from
        # elsewhere may hold any text there, and none of it reaches the SQL.
        if stored.codec is Codec.ARROW:
            if data is not None:  # a small frame, kept in its row
                from nbflow.store.duckdb.blobs import read_compact_frame

                return EncodedValue(ref=stored, table=read_compact_frame(data), meta=meta)
            table = self._read_frame_table(stored, meta) if table_name is not None else None
            return EncodedValue(ref=stored, table=table, meta=without_digest(meta))
        if data is None and table_name is not None:
            data = self._read_words(stored)
        return EncodedValue(ref=stored, data=data, meta=meta)

    def _read_frame_table(self, ref: ValueRef, meta: dict[str, Any]) -> Any:
        """A DataFrame value's native table, as Arrow."""
        from nbflow.values.duckdb_tables import wants_large_buffers

        large = wants_large_buffers(meta)
        with self._lock, self._all_threads(ref.size):
            con = self._con
            if large:
                con.execute("SET arrow_large_buffer_size = true")
            try:
                table = con.sql(f"SELECT * FROM {self._table_for(ref)}").to_arrow_table()
                # Changed behind nbflow's back? (a cheap digest, recorded when written)
                check_table(con, self._table_for(ref), meta.get(DIGEST_KEY), table.num_rows)
                return table
            finally:
                if large:  # (the lock keeps the connection open until here)
                    con.execute("RESET arrow_large_buffer_size")

    def _read_words(self, ref: ValueRef) -> bytearray:
        """The bytes of a value kept in a table of words, read in bounded memory."""
        from nbflow.store.duckdb.blobs import bounded_memory, read_words

        name = self._table_for(ref)
        with self._lock, self._all_threads(ref.size):
            con = self._con
            try:
                try:
                    with bounded_memory(con):
                        return read_words(con, name, ref.size)
                except duckdb.OutOfMemoryException:
                    return read_words(con, name, ref.size)
            except (ValueError, duckdb.CatalogException) as exc:  # a short or missing table
                raise CorruptStoreError(
                    f"the value {ref.hash} in {self} is damaged: {exc}. "
                    "`nbflow check` reports such problems."
                ) from None

    def _materialize_compact(self, query: str) -> None:
        """Make the small DataFrames that ``query`` names tables under their names, in the
        open transaction, so SQL sees every frame as a table; the caller rolls it back.

        Only the values named in the query (``v_<hash>``) are read, each in ~1 ms.
        """
        hashes = sorted({h.lower() for h in _VALUE_NAME.findall(query)})
        if not hashes:
            return
        from nbflow.store.duckdb.blobs import read_compact_frame

        con = self._con
        rows = con.execute(
            "SELECT hash, data FROM blobs WHERE codec = ? AND data IS NOT NULL "
            "AND hash IN (SELECT unnest(?::VARCHAR[]))",
            [Codec.ARROW.value, hashes],
        ).fetchall()
        for hash, data in rows:
            if not _HEX.fullmatch(hash):  # (a row from elsewhere may hold anything)
                continue
            try:
                table = read_compact_frame(data)
            except Exception as exc:  # damaged bytes fail in any of Arrow's ways
                raise CorruptStoreError(
                    f"the DataFrame value {hash} in {self} is damaged ({type(exc).__name__}: "
                    f"{exc}). `nbflow check` reports such problems."
                ) from None
            con.from_arrow(table).create(f"{schema.VALUES_SCHEMA}.v_{hash}")

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
        """The qualified table name of a DataFrame value, to use in :meth:`sql`.

        A small frame kept in its blob row has a name too: :meth:`sql` makes it a table
        for the length of a query that names it (other SQL clients of the file do not see
        it; ``SELECT data FROM blobs`` holds it as Arrow IPC).
        """
        value_ref_argument(ref)
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


def _row_bytes(encoded: EncodedValue) -> float:
    """Bytes per row of the table a value is written to (a frame's rows, or words)."""
    table = encoded.table
    if table is None or not table.num_rows:
        return 8.0
    return table.nbytes / table.num_rows


def write_value_table(con: duckdb.DuckDBPyConnection, name: str, table: Any) -> None:
    """Create the table ``name`` (``nbflow_values.v_<hex>``) holding an Arrow table.

    Not ``duckdb_tables.write_table``: it quotes the whole name as one identifier, which
    would make a table called "nbflow_values.v_..." in the main schema. A relation over
    the Arrow table rather than a registered view: nothing to unregister when the write
    fails (a failed transaction refuses every statement until it is rolled back).
    """
    con.from_arrow(table).create(name)
