"""Connecting to PostgreSQL: store URIs (password kept out of sight) and text adapters
that let any Python string, NUL characters included, round-trip."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any, cast

import psycopg

from nbflow.errors import StoreError
from nbflow.store.postgres.rows import T

SCHEMES = ("postgresql://", "postgres://")


# -- text with NUL characters ----------------------------------------------------------------

# PostgreSQL text cannot hold NUL characters, which Python strings (an error message, a
# run parameter's name) may. Text holding one, or starting with the marker, is stored as
# the marker followed by its JSON (NUL escaped); every other string is stored as it is,
# so the tables read as on DuckDB. The connection's adapters do this both ways, for every
# statement (store.sql included).
_MARK = "\ufdd0"  # a Unicode noncharacter


def _encode_text(value: str) -> str:
    if "\x00" in value or value.startswith(_MARK):
        return _MARK + json.dumps(value)
    return value


def _decode_text(value: T) -> T:
    if isinstance(value, str) and value.startswith(_MARK):  # (bytes: a SQL_ASCII database)
        try:
            decoded = json.loads(value[1:])
        except ValueError:
            return value  # not written by nbflow: shown as it is
        if isinstance(decoded, str):
            return cast(T, decoded)
    return value


def register_text_adapters(con: psycopg.Connection[Any]) -> None:
    """Make ``con`` store and read back strings with NUL characters (see above)."""
    from psycopg.types import string

    class TextDumper(string.StrDumperUnknown):
        def dump(self, obj: str) -> Any:
            return super().dump(_encode_text(obj))

    class TextBinaryDumper(string.StrBinaryDumper):
        def dump(self, obj: str) -> Any:
            return super().dump(_encode_text(obj))

    class TextLoader(string.TextLoader):
        def load(self, data: Any) -> Any:
            return _decode_text(super().load(data))

    class TextBinaryLoader(string.TextBinaryLoader):
        def load(self, data: Any) -> Any:
            return _decode_text(super().load(data))

    # In psycopg's order: the last one registered (text, of unknown type, which the
    # server casts to whatever the column is) is used for %s.
    con.adapters.register_dumper(str, TextBinaryDumper)
    con.adapters.register_dumper(str, TextDumper)
    for name in ("text", "varchar", "bpchar", "name"):
        con.adapters.register_loader(name, TextLoader)
        con.adapters.register_loader(name, TextBinaryLoader)


# -- URIs -------------------------------------------------------------------------------------


def parse_uri(uri: str) -> tuple[str, str | None, str, str]:
    """Split a store URI into (libpq URI, schema or None, URI without password, "host:port/db")."""
    if not uri.startswith(SCHEMES):
        raise StoreError(f"{uri!r} is not a PostgreSQL URI (postgresql://...).")
    parts = urllib.parse.urlsplit(uri)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    kept: list[tuple[str, str]] = []
    for key, value in query:
        if key == "schema":
            if not value:
                raise StoreError("the store URI's '?schema=' is empty: give a schema name.")
            schema = value
        else:
            kept.append((key, value))
    conninfo = urllib.parse.urlunsplit(
        (parts.scheme, parts.netloc, parts.path, urllib.parse.urlencode(kept), parts.fragment)
    )
    try:
        info = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        safe = _redact(parts, [(k, v) for k, v in query if k != "password"])
        raise StoreError(f"{safe!r} is not a valid PostgreSQL URI: {first_line(exc)}") from None
    host = str(info.get("host") or info.get("hostaddr") or "localhost")
    port = str(info.get("port") or "5432")
    database = str(info.get("dbname") or info.get("user") or "")
    where = f"{host}:{port}/{database}" + (f" (schema {schema})" if schema else "")
    shown = _redact(parts, [(k, v) for k, v in query if k != "password"])
    return conninfo, schema, shown, where


def _redact(parts: urllib.parse.SplitResult, query: list[tuple[str, str]]) -> str:
    """The URI with its password left out."""
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path, urllib.parse.urlencode(query), parts.fragment)
    )


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (or its type's name)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
