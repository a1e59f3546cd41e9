"""What every SQL backend's schema setup shares: the format marker, the refusal of a
schema newer than this nbflow, and the rows that record an applied migration."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from nbflow.errors import CorruptStoreError, SchemaVersionError

#: What the ``nbflow_meta`` table says a store is.
FORMAT = "nbflow"


def parse_version(where: str, meta: Mapping[str, Any]) -> int:
    """The schema version ``nbflow_meta`` records (its rows as a mapping); CorruptStoreError
    when it is missing or not a schema number (a positive whole number)."""
    raw = meta.get("schema_version")
    if raw is None:
        raise CorruptStoreError(
            f"{where} is damaged: it is marked as an nbflow store but does not say which "
            f"schema it has (no schema_version in nbflow_meta). {RESTORE}"
        )
    text = str(raw).strip()
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise CorruptStoreError(
            f"{where} is damaged: its schema_version is {raw!r}, which is not a schema number "
            f"(1, 2, 3...). {RESTORE}"
        )
    return int(text)


def require_tables(where: str, tables: Collection[str], expected: Collection[str]) -> None:
    """Raise CorruptStoreError naming the ``expected`` tables missing from ``tables``."""
    missing = sorted(set(expected) - set(tables))
    if missing:
        raise CorruptStoreError(
            f"{where} is damaged: its table{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} {'are' if len(missing) > 1 else 'is'} missing (dropped by "
            f"another program, or an incomplete copy of the store). {RESTORE}"
        )


#: What to do about a damaged store, said by every message about one.
RESTORE = (
    "Nothing was changed. Restore the store from a backup, or open a copy that is whole; "
    "`nbflow check` lists what else is damaged."
)


def refuse_newer(where: str, version: int | None, supported: int) -> None:
    """Raise SchemaVersionError if ``version`` is newer than the ``supported`` one."""
    if version is not None and version > supported:
        raise SchemaVersionError(
            f"{where} was written by a newer nbflow (schema {version}; this version reads up "
            f"to {supported}). Upgrade nbflow to open it."
        )


def recording(number: int, name: str, mark: str) -> list[tuple[str, list[Any]]]:
    """The statements (with ``mark`` as parameter marker) that record migration
    ``number`` in ``nbflow_meta`` and ``schema_migrations``."""
    if number == 1:
        meta = (
            f"INSERT INTO nbflow_meta VALUES ('format', {mark}), ('schema_version', {mark})",
            [FORMAT, str(number)],
        )
    else:
        meta = (
            f"UPDATE nbflow_meta SET value = {mark} WHERE key = 'schema_version'",
            [str(number)],
        )
    return [meta, (f"INSERT INTO schema_migrations VALUES ({mark}, {mark}, now())", [number, name])]
