"""``store.sql`` on PostgreSQL: one read-only statement, with DuckDB-style parameters.

A small lexer (quotes, quoted identifiers, dollar quoting, comments) splits the query
into statements, names the first one's kind, and rewrites DuckDB's placeholders (``?``,
``$1``, ``$name``) into psycopg's, so a query written for the DuckDB store runs here
unchanged. The statement then runs in a ``READ ONLY`` transaction that is rolled back,
with a statement timeout, so PostgreSQL itself refuses any write this check let through.

A read-only transaction still lets a query lock, wait, read the server's files or run
other SQL through a function: those functions (:data:`REFUSED_FUNCTIONS`) are refused
by name before the query is sent, wherever they are called (quoted, schema-qualified,
behind a comment).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from nbflow.errors import StoreError

#: Statements store.sql runs (EXPLAIN is not one: EXPLAIN ANALYZE executes its statement).
READ_ONLY_KINDS = {"SELECT", "WITH", "VALUES", "TABLE"}

#: Functions store.sql refuses, as patterns of their names, and why. Advisory locks
#: outlive the query (a session lock stays on the store's connection, and nbflow itself
#: takes one to open a store); the others read or list the server's files, run SQL
#: given as text (past this check), change settings (the timeout), wait, or act on
#: other sessions and the server.
REFUSED_FUNCTIONS: dict[str, str] = {
    r"pg_(try_)?advisory_\w*": "takes an advisory lock",
    r"pg_read_(binary_)?file|pg_ls_\w*|pg_stat_file|pg_file_\w*|pg_logdir_ls"
    r"|pg_current_logfile": "reads the server's files",
    r"lo_\w*|loread|lowrite": "reads or writes large objects, and files with them",
    r"dblink\w*": "connects to another database",
    r"(query|cursor|table|schema|database)_to_xml\w*|ts_stat": "runs SQL given as text",
    r"set_config": "changes a setting (such as the statement timeout)",
    r"pg_sleep\w*": "waits",
    r"pg_(terminate|cancel|signal)_backend|pg_reload_conf|pg_rotate_logfile|pg_promote"
    r"|pg_switch_wal|pg_(create|drop)_\w+|pg_replication_origin_\w+|pg_logical_\w+"
    r"|pg_(start|stop)_backup|pg_backup_(start|stop)|pg_log_backend_memory_contexts"
    r"|pg_notify|pg_export_snapshot|pg_wal_replay_\w+": "acts on the server or other sessions",
}
_REFUSED = [(re.compile(f"(?:{p})", re.IGNORECASE), why) for p, why in REFUSED_FUNCTIONS.items()]
_NAME_OR_MARK = re.compile(r"[A-Za-z_][A-Za-z_0-9$]*|\S")


def transaction_start() -> str:
    """The statements that open store.sql's transaction: read-only, and cancelled after
    ``$NBFLOW_SQL_TIMEOUT`` seconds (default 60) of running or of waiting for a lock."""
    from nbflow.store.sql_guard import sql_timeout

    ms = max(1, round(sql_timeout() * 1000))
    return (
        f"BEGIN TRANSACTION READ ONLY; SET LOCAL statement_timeout = {ms:d}; "
        f"SET LOCAL lock_timeout = {ms:d}"
    )


_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")
_NAMED = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*|\d+)")
_WORD = re.compile(r"[A-Za-z_]+")


def _tokens(query: str) -> list[tuple[str, str]]:
    """(kind, text) pieces: 'code', 'string', 'ident', 'comment', 'semicolon', 'param'."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(query)
    code_start = 0

    def flush(end: int) -> None:
        if end > code_start:
            out.append(("code", query[code_start:end]))

    while i < n:
        c = query[i]
        nxt = query[i + 1] if i + 1 < n else ""
        end = -1
        kind = ""
        if c == "'":
            # E'...' strings take backslash escapes; '' doubles a quote in every string.
            escaped = i > 0 and query[i - 1] in "eE" and (i < 2 or not query[i - 2].isalnum())
            j = i + 1
            while j < n:
                if escaped and query[j] == "\\":
                    j += 2
                    continue
                if query[j] == "'":
                    if j + 1 < n and query[j + 1] == "'":
                        j += 2
                        continue
                    break
                j += 1
            end, kind = min(j + 1, n), "string"
        elif c == '"':
            j = query.find('"', i + 1)
            while j != -1 and j + 1 < n and query[j + 1] == '"':
                j = query.find('"', j + 2)
            end, kind = (n if j == -1 else j + 1), "ident"
        elif c == "-" and nxt == "-":
            j = query.find("\n", i)
            end, kind = (n if j == -1 else j + 1), "comment"
        elif c == "/" and nxt == "*":
            depth, j = 1, i + 2
            while j < n and depth:
                if query.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif query.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            end, kind = j, "comment"
        elif c == "$":
            tag = _DOLLAR_TAG.match(query, i)
            preceded = i > 0 and (query[i - 1].isalnum() or query[i - 1] == "_")
            if tag and not preceded:
                j = query.find(tag.group(0), tag.end())
                end, kind = (n if j == -1 else j + len(tag.group(0))), "string"
            else:
                named = _NAMED.match(query, i)
                if named and not preceded:
                    end, kind = named.end(), "param"
        elif c == "?":
            end, kind = i + 1, "param"
        elif c == ";":
            end, kind = i + 1, "semicolon"
        if end == -1:
            i += 1
            continue
        flush(i)
        out.append((kind, query[i:end]))
        i = code_start = end
    flush(n)
    return out


def _statements(tokens: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Tokens grouped by statement; statements of only blanks and comments are dropped."""
    groups: list[list[tuple[str, str]]] = [[]]
    for token in tokens:
        if token[0] == "semicolon":
            groups.append([])
        else:
            groups[-1].append(token)
    return [g for g in groups if any(k != "comment" and t.strip() for k, t in g)]


def _kind(statement: list[tuple[str, str]]) -> str:
    for kind, text in statement:
        if kind == "comment":
            continue
        if kind != "code":
            return text.strip()[:20].upper() or "?"
        stripped = text.lstrip(" \t\r\n(")
        if not stripped:
            continue
        word = _WORD.match(stripped)
        return word.group(0).upper() if word else stripped.split()[0][:20].upper()
    return "?"


def prepare(
    query: str, params: Sequence[Any] | Mapping[str, Any] | None
) -> tuple[str, Sequence[Any] | Mapping[str, Any] | None]:
    """Check that ``query`` is one read-only statement; return it and its parameters in
    psycopg's form. Raises StoreError naming what was refused."""
    tokens = _tokens(query)
    statements = _statements(tokens)
    if len(statements) != 1:
        raise StoreError(
            f"store.sql runs one statement at a time; this query has {len(statements)}."
        )
    (statement,) = statements
    kind = _kind(statement)
    if kind not in READ_ONLY_KINDS:
        raise StoreError(
            f"store.sql is read-only: a {kind} statement is not allowed. "
            "Only SELECT queries can be run."
        )
    refuse_functions(statement)
    pieces: list[tuple[bool, str]] = []  # (is a placeholder, text)
    positional = 0
    order: list[Any] = []
    named: dict[str, Any] = {}
    mapping = isinstance(params, Mapping)
    for kind_, text in statement:
        if kind_ != "param":
            pieces.append((False, text))
        elif text == "?":
            if mapping or params is None:
                raise StoreError("store.sql: '?' placeholders need a list of parameters.")
            assert not isinstance(params, Mapping)
            if positional >= len(params):
                raise StoreError(
                    "store.sql: the query has more '?' placeholders than the "
                    f"{len(params)} parameter(s) given."
                )
            order.append(params[positional])
            positional += 1
            pieces.append((True, "%s"))
        elif text[1:].isdigit():
            index = int(text[1:]) - 1
            if mapping or params is None or not 0 <= index < len(params):
                raise StoreError(f"store.sql: no parameter for {text}.")
            assert not isinstance(params, Mapping)
            order.append(params[index])
            pieces.append((True, "%s"))
        else:
            name = text[1:]
            if not mapping:
                raise StoreError(f"store.sql: {text} needs a mapping of parameters.")
            assert isinstance(params, Mapping)
            if name not in params:
                raise StoreError(f"store.sql: no parameter named {name!r}.")
            named[name] = params[name]
            pieces.append((True, f"%({name})s"))
    if not mapping and params and positional and positional != len(params):
        raise StoreError(
            f"store.sql: the query has {positional} '?' placeholder(s) but "
            f"{len(params)} parameter(s) were given."
        )
    bound: Sequence[Any] | Mapping[str, Any] | None = named if mapping else (order or None)
    if bound is None:
        # No parameters: psycopg sends the text as it is.
        return "".join(text for _, text in pieces), None
    # With parameters psycopg reads every '%' as a placeholder's: double the literal ones.
    return "".join(t if is_param else t.replace("%", "%%") for is_param, t in pieces), bound


def refuse_functions(statement: list[tuple[str, str]]) -> None:
    """Raise StoreError naming the first function of :data:`REFUSED_FUNCTIONS` that the
    statement calls: a name (plain or quoted, qualified or not) followed by '('."""
    words: list[tuple[str, str]] = []  # ('name' | 'mark', text), comments left out
    for kind, text in statement:
        if kind == "code":
            for match in _NAME_OR_MARK.finditer(text):
                piece = match.group(0)
                words.append(("name" if piece[0].isalpha() or piece[0] == "_" else "mark", piece))
        elif kind == "ident":
            if words[-2:] in ([("name", "U"), ("mark", "&")], [("name", "u"), ("mark", "&")]):
                raise StoreError(
                    'store.sql does not take Unicode-escaped identifiers (U&"..."): '
                    "write the name as it is."
                )
            words.append(("name", text[1:-1].replace('""', '"')))
        elif kind != "comment":
            words.append(("mark", text))
    for (kind, text), following in itertools.pairwise(words):
        if kind != "name" or following != ("mark", "("):
            continue
        for pattern, why in _REFUSED:
            if pattern.fullmatch(text):
                raise StoreError(
                    f"store.sql refuses {text}(): it {why}, and store.sql only reads the "
                    "store's tables. Query the tables instead."
                )
