"""The PostgreSQL store's values: blob rows with their bytes in chunks (DataFrames as
Arrow IPC)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

from nbflow import arguments
from nbflow.errors import StoreError
from nbflow.store.postgres import schema as postgres_schema
from nbflow.store.postgres.part import PostgresPart
from nbflow.store.postgres.rows import snapshot
from nbflow.store.records import BlobRecord, Codec, ValueRef
from nbflow.store.sql_rows import dumps

if TYPE_CHECKING:
    from nbflow.values import EncodedValue


class PostgresValues(PostgresPart):
    """Values in a PostgreSQL store (mixed into :class:`PostgresStore`)."""

    # -- values -----------------------------------------------------------------------

    def put_value(self, encoded: EncodedValue) -> ValueRef:
        """Store the value's bytes once under its hash (a DataFrame as Arrow IPC)."""
        ref = encoded.ref
        if ref.is_inline:
            return ref
        stored = self._stored_size(ref.hash)
        if stored is not None:
            # Equal content may be laid out in memory differently (a frame read back
            # from the store, say): the stored record's size is the value's size.
            return ref.with_size(stored)
        from nbflow.values.streams import ipc_pieces, pieces

        size = postgres_schema.CHUNK_BYTES
        if ref.codec is Codec.ARROW:
            assert encoded.table is not None
            # Serialized a batch at a time as the rows are sent: never whole in memory.
            nbytes, parts = ipc_pieces(encoded.table, size)
        else:
            nbytes, parts = encoded.nbytes, pieces(encoded.chunks, size)
        count = max(1, -(-nbytes // size))
        meta = dumps(dict(encoded.meta))

        def write(con: psycopg.Connection[Any]) -> int:
            with con.transaction():
                if self._row_security:
                    # Stored already, for another tenant's run (this session cannot see
                    # its row, and a conflict with a row it cannot see is an error): the
                    # same content, made again here, which this tenant's run now uses too.
                    found = con.execute("SELECT nbflow_value_stored(%s)", [ref.hash]).fetchone()
                    if found and found[0]:
                        return ref.size
                # A second writer of the same hash waits here for the first to commit,
                # then inserts nothing: the row and its chunks appear together or not at all.
                inserted = con.execute(
                    "INSERT INTO blobs (hash, codec, size, created_at, table_name, meta, "
                    "stored_bytes, chunks) VALUES (%s, %s, %s, now(), NULL, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING RETURNING size",
                    [ref.hash, ref.codec.value, ref.size, meta, nbytes, count],
                ).fetchall()
                if not inserted:
                    row = con.execute("SELECT size FROM blobs WHERE hash = %s", [ref.hash])
                    found = row.fetchall()
                    # (none seen: another tenant's runs use it; the same content, made
                    # again here, which this tenant's run will now use too)
                    return int(found[0][0]) if found else ref.size
                if self._row_security:
                    # COPY is refused where row-level security applies: rows one by one.
                    with con.cursor() as cur:
                        cur.executemany(
                            "INSERT INTO blob_chunks (hash, idx, data) VALUES (%s, %s, %s)",
                            [(ref.hash, i, c) for i, c in enumerate(parts)] or [(ref.hash, 0, b"")],
                        )
                    return ref.size
                with (
                    con.cursor() as cur,
                    cur.copy(
                        "COPY blob_chunks (hash, idx, data) FROM STDIN (FORMAT BINARY)"
                    ) as copy,
                ):
                    copy.set_types(["text", "int4", "bytea"])
                    written = 0
                    for idx, chunk in enumerate(parts):
                        copy.write_row((ref.hash, idx, chunk))
                        written += 1
                    if not written:  # an empty value still has its one (empty) chunk
                        copy.write_row((ref.hash, 0, b""))
                return ref.size

        size = self._run(write, retry=False)
        with self._lock:
            self._known_blobs[ref.hash] = size
        return ref.with_size(size)

    def read_encoded(self, ref: ValueRef) -> EncodedValue:
        """The blob row and its bytes (a DataFrame's Arrow table, read back from its IPC
        bytes); not decoded."""
        from nbflow.values import EncodedValue

        if ref.is_inline:
            return EncodedValue(ref=ref)
        self._check_value_seen(ref)
        found = self._read_blob(ref.hash)
        if found is None:
            raise StoreError(
                f"the value {ref.hash} is missing from {self}: it was deleted or never "
                "written. `nbflow check` reports such problems."
            )
        codec, size, meta, data = found
        stored = ValueRef(Codec(codec), ref.hash, size, ref.type_name)
        if stored.codec is Codec.ARROW:
            import pyarrow as pa

            table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
            return EncodedValue(ref=stored, table=table, meta=meta)
        return EncodedValue(ref=stored, data=data, meta=meta)

    def _read_blob(self, hash: str) -> tuple[str, int, dict[str, Any], bytearray] | None:
        """(codec, size, meta, bytes) of a stored blob, or None; StoreError when some of
        its chunks are missing."""

        def read(con: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
            with snapshot(con) as cur:
                cur.execute(
                    "SELECT codec, size, meta, chunks, stored_bytes FROM blobs WHERE hash = %s",
                    [hash],
                )
                row = cur.fetchone()
                if row is None:
                    return None
                # Row by row into one buffer: the chunks are never all in memory at once.
                data, parts = bytearray(row[4]), 0
                filled = 0
                for (part,) in cur.stream(
                    "SELECT data FROM blob_chunks WHERE hash = %s ORDER BY idx", [hash]
                ):
                    data[filled : filled + len(part)] = part
                    filled += len(part)
                    parts += 1
                del data[filled:]
                return (*row[:4], parts, data)

        found = self._run(read)
        if found is None:
            return None
        codec, size, meta, chunks, parts, data = found
        if parts != chunks:
            raise StoreError(
                f"the value {hash} in {self} is damaged: {parts} of its {chunks} "
                "chunks are stored. `nbflow check` reports such problems."
            )
        return codec, size, meta or {}, data

    def has_blob(self, hash: str) -> bool:
        """Whether a blob with this hash is stored."""
        arguments.text(hash, "a content hash")
        return self._stored_size(hash) is not None

    def _replace_blob_meta(self, hash: str, meta: Any) -> None:
        """Replace the meta stored with the blob ``hash`` (marking a value trusted)."""
        text = dumps(dict(meta))

        def write(con: psycopg.Connection[Any]) -> int:
            with con.transaction():
                cur = con.execute(
                    "UPDATE blobs SET meta = %s WHERE hash = %s RETURNING hash", [text, hash]
                )
                return len(cur.fetchall())

        if not self._run(write, retry=False):
            raise StoreError(f"the value {hash} is missing from {self}")

    def _stored_size(self, hash: str) -> int | None:
        """The size recorded for the blob ``hash``, or None if there is none."""
        if hash in self._known_blobs:
            return self._known_blobs[hash]
        rows = self._rows("SELECT size FROM blobs WHERE hash = %s", [hash])
        if not rows:
            return None
        with self._lock:
            self._known_blobs[hash] = int(rows[0][0])
        return int(rows[0][0])

    def list_blobs(self) -> list[BlobRecord]:
        """Every blob row."""
        rows = self._rows(
            "SELECT hash, codec, size, created_at, table_name FROM blobs ORDER BY created_at, hash"
        )
        return [BlobRecord(r[0], Codec(r[1]), r[2], r[3], r[4]) for r in rows]
