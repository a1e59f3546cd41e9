"""Stores: the interface, the in-memory and DuckDB backends, and opening them."""
