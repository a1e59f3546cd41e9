"""The filters of a runs query (``flow=``, ``status=``, ``thread_id=``, ``limit=``), checked
once for every backend."""

from __future__ import annotations

from collections.abc import Collection

from nbflow.store.records import RunStatus


def status_set(status: str | Collection[str] | None) -> set[str] | None:
    """Normalize a status filter (one status or several) to a set of values, or None."""
    from nbflow.errors import ParameterError

    if status is None:
        return None
    known = ", ".join(s.value for s in RunStatus)
    if isinstance(status, str):
        values = [status]
    elif isinstance(status, Collection) and not isinstance(status, bytes):
        values = list(status)
    else:
        raise ParameterError(
            f"status must be a run status or a list of them ({known}), not "
            f"{type(status).__name__} {status!r}"
        )
    unknown = [v for v in values if not isinstance(v, str) or v not in known.split(", ")]
    if unknown:
        raise ParameterError(f"unknown run status {unknown}; use one of: {known}")
    return set(values)


def run_filters(
    flow: object, status: object, thread_id: object, limit: object
) -> tuple[str | None, set[str] | None, str | None, int | None]:
    """The filters of a runs query, checked: (flow, statuses, thread_id, limit)."""
    from nbflow import arguments

    return (
        arguments.optional_text(flow, "flow (a flow's name)"),
        status_set(status),  # type: ignore[arg-type]
        arguments.optional_text(thread_id, "thread_id"),
        arguments.optional_count(limit, "limit"),
    )
