"""Errors of human gates: decisions that cannot be recorded, and tokens that are refused."""

from __future__ import annotations

from nbflow.errors.running import RunError


class GateError(RunError):
    """A decision on a human gate cannot be recorded as asked: the run is not waiting,
    there is no such gate, or it was already decided. Nothing was recorded."""


class InvalidTokenError(GateError):
    """The token is malformed, or its signature does not match (it was changed), or it
    is for another run than the one asked."""


class TokenExpiredError(GateError):
    """The token's expiry has passed: ask for a new one with ``run.gate_token(gate)``."""


class TokenUsedError(GateError):
    """The token was already used: a decision was recorded for that opening of the gate."""


class TokenStoreMismatchError(GateError):
    """The token was issued by another store."""


class TokenSupersededError(GateError):
    """The gate opened again since the token was issued (the run was resumed or forked
    and reached it again, or its value changed): the message says "token superseded by
    newer version"."""
