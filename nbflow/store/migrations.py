"""What every SQL backend's schema setup shares: the format marker, the refusal of a
schema newer than this nbflow, and the rows that record an applied migration."""

from __future__ import annotations

from typing import Any

from nbflow.errors import SchemaVersionError

#: What the ``nbflow_meta`` table says a store is.
FORMAT = "nbflow"


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
