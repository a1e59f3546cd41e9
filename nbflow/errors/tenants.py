"""Errors of tenants (see ``docs/tenants.md``): a refused tenant name, a run the tenant
may not see, and a run it may read but not change."""

from __future__ import annotations

from nbflow.errors.definition import ParameterError
from nbflow.errors.store import StoreError, UnknownRunError


class InvalidTenantError(ParameterError):
    """A tenant name nbflow refuses (empty, too long, control characters, not text), or a
    run stamped with another tenant than the store it is written to."""


class TenantMismatchError(UnknownRunError):
    """A store opened with a tenant was asked for a run it may not see: another tenant's,
    or one that does not exist. The message is that of :class:`UnknownRunError`, word for
    word, so it tells nothing about the run (not even that it exists)."""


class TenantReadOnlyError(StoreError):
    """A store opened with a tenant was asked to change a run without a tenant (a run
    from before tenants): everyone may read such a run, only the owner's view changes it."""
