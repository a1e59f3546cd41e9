"""Step outputs in stored form: codecs, content hashes, and frames as DuckDB tables.

Layer: values. It may import ``nbflow.errors``, ``nbflow.arguments`` and
``nbflow.json_text``; never the store or anything above (the value records it shares
with the store, ``ValueRef`` and ``Codec``, live here).
"""

from nbflow.values.codecs import EncodedValue, content_hash, decode, encode, type_name
from nbflow.values.duckdb_tables import copy_table, duckdb_can_hold, read_table, write_table
from nbflow.values.hashing import HASH_HEX_LENGTH

__all__ = [
    "HASH_HEX_LENGTH",
    "EncodedValue",
    "content_hash",
    "copy_table",
    "decode",
    "duckdb_can_hold",
    "encode",
    "read_table",
    "type_name",
    "write_table",
]
