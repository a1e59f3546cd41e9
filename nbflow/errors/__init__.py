"""The one exception hierarchy of nbflow.

Every error nbflow raises on purpose derives from :class:`NbflowError`, so
``except nf.errors.NbflowError`` catches them all. Messages say what went wrong
and what to do about it.
"""

from __future__ import annotations

from nbflow.errors.base import NbflowError, suggest
from nbflow.errors.definition import (
    CellError,
    CycleError,
    DefinitionError,
    MissingDependencyError,
    ParameterError,
    UnknownStepError,
)
from nbflow.errors.gates import (
    GateError,
    InvalidTokenError,
    TokenExpiredError,
    TokenStoreMismatchError,
    TokenSupersededError,
    TokenUsedError,
)
from nbflow.errors.running import (
    DuplicateRunError,
    InputMutatedError,
    NotebookError,
    OutputNotAvailableError,
    ReproductionError,
    RunError,
    StepFailed,
    StepTimeout,
    TransferError,
    WaitTimeout,
)
from nbflow.errors.store import (
    CorruptStoreError,
    InvalidTransitionError,
    NotAStoreError,
    ReadOnlyStoreError,
    RunLockedError,
    SchemaVersionError,
    SerializationError,
    StaleVersionError,
    StoreBusyError,
    StoreError,
    StoreFullError,
    UnknownRunError,
    UntrustedImportError,
    UntrustedStoreError,
)
from nbflow.errors.tenants import InvalidTenantError, TenantMismatchError, TenantReadOnlyError
from nbflow.errors.warnings import (
    NbflowWarning,
    PickledOutputWarning,
    StoreMaintenanceWarning,
    UntrackedStepWarning,
    untracked_message,
)

__all__ = [
    "CellError",
    "CorruptStoreError",
    "CycleError",
    "DefinitionError",
    "DuplicateRunError",
    "GateError",
    "InputMutatedError",
    "InvalidTenantError",
    "InvalidTokenError",
    "InvalidTransitionError",
    "MissingDependencyError",
    "NbflowError",
    "NbflowWarning",
    "NotAStoreError",
    "NotebookError",
    "OutputNotAvailableError",
    "ParameterError",
    "PickledOutputWarning",
    "ReadOnlyStoreError",
    "ReproductionError",
    "RunError",
    "RunLockedError",
    "SchemaVersionError",
    "SerializationError",
    "StaleVersionError",
    "StepFailed",
    "StepTimeout",
    "StoreBusyError",
    "StoreError",
    "StoreFullError",
    "StoreMaintenanceWarning",
    "TenantMismatchError",
    "TenantReadOnlyError",
    "TokenExpiredError",
    "TokenStoreMismatchError",
    "TokenSupersededError",
    "TokenUsedError",
    "TransferError",
    "UnknownRunError",
    "UnknownStepError",
    "UntrackedStepWarning",
    "UntrustedImportError",
    "UntrustedStoreError",
    "WaitTimeout",
    "suggest",
    "untracked_message",
]

# Every class reads as nbflow.errors.X wherever it is defined: tracebacks and pickles name
# the one place users import them from.
for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type):
        _value.__module__ = __name__
del _name, _value
