"""Tenants: which runs a store object may see and change (see ``docs/tenants.md``).

A store opened with a tenant stamps every run it creates with that tenant, sees the runs
of that tenant and the runs without one (from before tenants, readable by everyone), and
changes only its own. A run it may not see is reported exactly as a run that does not
exist (:class:`~nbflow.errors.TenantMismatchError`, the message of
:class:`~nbflow.errors.UnknownRunError`). A store opened without a tenant is the owner's
view: it sees and changes everything.

The rules live here, once; each backend applies them in its queries (and PostgreSQL
also in the database, with row-level security).
"""

from __future__ import annotations

import os
import unicodedata

from nbflow.errors import InvalidTenantError, TenantMismatchError, TenantReadOnlyError
from nbflow.store.records import RunRecord

#: The environment variable a store opened without ``tenant=`` takes its tenant from.
ENV_TENANT = "NBFLOW_TENANT"

#: The longest tenant name accepted, in characters.
MAX_LENGTH = 128


def check_tenant(tenant: object) -> str:
    """``tenant`` if it is a usable tenant name; InvalidTenantError saying why not.

    A tenant name is text of 1 to :data:`MAX_LENGTH` characters, not only spaces, with no
    control characters (newlines, tabs, NUL...) and no spaces at either end.
    """
    if not isinstance(tenant, str):
        raise InvalidTenantError(
            f"a tenant is a name (text such as 'team-a'), not {type(tenant).__name__} "
            f"{tenant!r:.60}"
        )
    if not tenant.strip():
        raise InvalidTenantError(
            f"a tenant name must not be empty or only spaces ({tenant!r}): give a name "
            "such as 'team-a', or no tenant at all for the owner's view of the store"
        )
    if len(tenant) > MAX_LENGTH:
        raise InvalidTenantError(
            f"a tenant name has at most {MAX_LENGTH} characters; {tenant[:20]!r}... has "
            f"{len(tenant)}"
        )
    bad = [c for c in tenant if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")]
    if bad:
        raise InvalidTenantError(
            f"a tenant name must not hold control or invisible characters; {tenant!r} "
            f"holds {', '.join(sorted({repr(c) for c in bad}))}"
        )
    if tenant != tenant.strip():
        raise InvalidTenantError(
            f"a tenant name must not start or end with spaces: {tenant!r} (did you mean "
            f"{tenant.strip()!r}?)"
        )
    return tenant


def optional_tenant(tenant: object) -> str | None:
    """None, or ``tenant`` checked by :func:`check_tenant`."""
    return None if tenant is None else check_tenant(tenant)


def env_tenant() -> str | None:
    """The tenant ``$NBFLOW_TENANT`` names, checked; None when it is unset."""
    raw = os.environ.get(ENV_TENANT)
    if raw is None:
        return None
    try:
        return check_tenant(raw)
    except InvalidTenantError as exc:
        raise InvalidTenantError(f"${ENV_TENANT}={raw!r} is not a tenant name: {exc}") from None


def resolve(tenant: object) -> str | None:
    """The tenant a store is opened with: ``tenant`` if given, else ``$NBFLOW_TENANT``."""
    return env_tenant() if tenant is None else check_tenant(tenant)


def visible(run_tenant: str | None, tenant: str | None) -> bool:
    """Whether a run of ``run_tenant`` is seen by a store opened with ``tenant``."""
    return tenant is None or run_tenant is None or run_tenant == tenant


def cache_source(run_tenant: str | None, tenant: str | None) -> bool:
    """Whether a run of ``run_tenant`` may lend its outputs to a new run of ``tenant``
    as cache hits: its own tenant's, or runs everyone may read (a run without a tenant
    never takes a tenant's value, which would make it readable by every tenant)."""
    return run_tenant is None or run_tenant == tenant


def mismatch(run_id: str, store: object) -> TenantMismatchError:
    """The error for a run the store may not see: that of an unknown run, word for word."""
    return TenantMismatchError(run_id, store)


def stamp(run: RunRecord, tenant: str | None) -> RunRecord:
    """``run`` as a store opened with ``tenant`` creates it: stamped with its tenant.

    The owner's view (no tenant) keeps the run's own stamp (copies and imports carry
    theirs); a tenant's store refuses a run stamped with another tenant.
    """
    import dataclasses

    if run.tenant is not None:
        check_tenant(run.tenant)
    if tenant is None or run.tenant == tenant:
        return run
    if run.tenant is not None:
        raise InvalidTenantError(
            f"run {run.run_id!r} is stamped with tenant {run.tenant!r}; a store opened for "
            f"tenant {tenant!r} creates runs of that tenant only. Open the store for "
            f"{run.tenant!r} (or without a tenant) to write it."
        )
    return dataclasses.replace(run, tenant=tenant)


def check_writable(run: RunRecord, tenant: str | None, store: object) -> None:
    """Refuse a change to ``run`` by a store opened with ``tenant`` unless it is its own."""
    if tenant is None or run.tenant == tenant:
        return
    if run.tenant is not None:  # (never reached through the store's reads, kept for safety)
        raise mismatch(run.run_id, store)
    raise TenantReadOnlyError(
        f"run {run.run_id!r} has no tenant (it is from before tenants, or the owner's): "
        f"every tenant may read it, but a store opened for tenant {tenant!r} does not "
        "change it. Fork it (the fork is yours), or open the store without a tenant."
    )


def imported_as(run: RunRecord, store: object, tenant: str | None) -> RunRecord:
    """An exported (or copied) ``run`` as ``store`` imports it: as ``tenant``'s if given,
    else with its own tenant (the store's, for a run without one); TransferError for
    another tenant's run, which only an explicit ``tenant`` imports."""
    import dataclasses

    from nbflow.errors import TransferError

    if tenant is not None:
        return dataclasses.replace(run, tenant=check_tenant(tenant))
    mine = getattr(store, "tenant", None)
    if mine is None or run.tenant in (None, mine):
        return run
    raise TransferError(
        f"run {run.run_id} belongs to tenant {run.tenant!r}, and {store} is opened for "
        f"tenant {mine!r}: nothing imported. To import it as {mine!r}'s, say so "
        f"(--tenant {mine}, or tenant={mine!r})."
    )
