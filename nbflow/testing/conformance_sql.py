"""The store contract: ``store.sql`` reads the store's tables and nothing else.

Each query below is written for one backend's SQL dialect (DuckDB's or PostgreSQL's);
on every backend each one must be refused with a StoreError, by the sandbox or because
the backend has no such function, and never return what it reaches for.
"""

from __future__ import annotations

import pytest

from nbflow.errors import ParameterError, StoreError
from nbflow.store.base import Store

#: Queries reaching for a file of the machine (or the server's).
FILE_QUERIES = (
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_read_binary_file('/etc/passwd')",
    "SELECT pg_read_file('postgresql.conf')",
    "SELECT * FROM pg_ls_dir('.')",
    "SELECT pg_stat_file('postgresql.conf')",
    "SELECT lo_import('/etc/passwd')",
)

#: Queries reaching for the network, another database or an extension.
REMOTE_QUERIES = (
    "SELECT * FROM read_parquet('http://127.0.0.1:9/x.parquet')",
    "SELECT * FROM read_csv('s3://nbflow-test/x.csv')",
    "SELECT * FROM read_json('https://127.0.0.1:9/x.json')",
    "SELECT dblink('host=127.0.0.1 port=9', 'SELECT 1')",
)

#: Queries that take a lock, change a setting or run SQL given as text.
SESSION_QUERIES = (
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_advisory_lock_shared(1)",
    "SELECT pg_try_advisory_lock(1)",
    "SELECT pg_advisory_xact_lock(1)",
    "SELECT pg_try_advisory_xact_lock_shared(1)",
    'SELECT "pg_advisory_lock"(1)',
    "SELECT pg_catalog.pg_advisory_lock /* a comment */ (1)",
    "SELECT set_config('statement_timeout', '0', false)",
    "SELECT query_to_xml('SELECT pg_advisory_lock(1)', true, true, '')",
)

# What a refusal says: the sandbox's words, or the backend's "no such function" (or
# "no such syntax": a query in the other backend's dialect).
_REFUSED = r"nothing else|refuses|does not exist|read-only|syntax error"


class SqlConformance:
    """The store contract: ``store.sql`` reads the store's tables and nothing else."""

    @pytest.mark.parametrize("query", FILE_QUERIES)
    def test_sql_reads_no_file(self, store: Store, query: str) -> None:
        """A query cannot read or list a local file, or one of the database server's."""
        with pytest.raises(StoreError, match=_REFUSED) as caught:
            store.sql(query)
        assert "root:" not in str(caught.value)

    @pytest.mark.parametrize("query", REMOTE_QUERIES)
    def test_sql_reaches_no_url_and_loads_no_extension(self, store: Store, query: str) -> None:
        """A query cannot fetch a URL, reach another database, or make the store
        download or load an extension to do so."""
        with pytest.raises(StoreError, match=_REFUSED):
            store.sql(query)

    @pytest.mark.parametrize("query", SESSION_QUERIES)
    def test_sql_takes_no_lock_and_changes_no_setting(self, store: Store, query: str) -> None:
        """A query cannot take a lock (that would outlive it), change a setting, or run
        SQL given as text."""
        with pytest.raises(StoreError, match=_REFUSED):
            store.sql(query)
        assert store.sql("SELECT count(*) AS n FROM runs")["n"].iloc[0] == 0

    @pytest.mark.parametrize(
        "query",
        ["SET threads = 64", "SET statement_timeout = 0", "RESET statement_timeout", "LOAD httpfs"],
    )
    def test_sql_refuses_statements_that_change_the_session(self, store: Store, query: str) -> None:
        """SET, RESET and LOAD are not SELECTs."""
        with pytest.raises(StoreError, match="read-only"):
            store.sql(query)

    @pytest.mark.parametrize(
        ("query", "params"),
        [(123, None), (None, None), (b"SELECT 1", None), ("SELECT ?", 5), ("SELECT ?", "a")],
    )
    def test_sql_refuses_arguments_of_the_wrong_type(
        self, store: Store, query: object, params: object
    ) -> None:
        """The query is a string and the parameters a sequence or a mapping."""
        with pytest.raises(ParameterError, match=r"store\.sql"):
            store.sql(query, params)  # type: ignore[arg-type]
