"""Gate tokens: what ``run.gate_token(gate)`` hands a reviewer, signed with the store's
gate secret (HMAC-SHA256), and checked before a decision is recorded.

A token is ``nbflow-gate.v1.<claims>.<signature>``: ``claims`` is base64url (unpadded)
JSON naming the store id (``s``), run (``r``), gate (``g``), the run's version when the
gate opened (``v``), the digest of the gate's value (``d``), the expiry in epoch seconds
(``e``) and a random token id (``n``); ``signature`` is the base64url HMAC-SHA256 of
``nbflow-gate.v1.<claims>`` under the secret. The secret is never in it. See
docs/gates.md for what a token guarantees.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from nbflow.errors import InvalidTokenError, TokenExpiredError, TokenStoreMismatchError
from nbflow.store.gate_keys import GateKeys

PREFIX = "nbflow-gate.v1."

#: How long a token is valid unless said otherwise.
DEFAULT_EXPIRY = dt.timedelta(days=7)


@dataclass(frozen=True)
class TokenClaims:
    """What a token says (once its signature is checked, what the store said)."""

    store_id: str
    run_id: str
    gate: str
    version: int  # the run's version when the gate opened
    digest: str  # the content hash of the gate's value
    expires_at: dt.datetime
    token_id: str

    def to_json(self) -> dict[str, object]:
        """The claims as the token carries them."""
        return {
            "s": self.store_id,
            "r": self.run_id,
            "g": self.gate,
            "v": self.version,
            "d": self.digest,
            "e": int(self.expires_at.timestamp()),
            "n": self.token_id,
        }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, signed: str) -> bytes:
    return hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest()


def make_token(
    keys: GateKeys,
    *,
    run_id: str,
    gate: str,
    version: int,
    digest: str,
    expires_at: dt.datetime,
) -> str:
    """A new signed token for the opening of ``gate`` at ``version`` of ``run_id``."""
    claims = TokenClaims(
        keys.store_id, run_id, gate, version, digest, expires_at, secrets.token_hex(8)
    )
    body = json.dumps(claims.to_json(), separators=(",", ":"), sort_keys=True)
    signed = PREFIX + _b64(body.encode("utf-8"))
    return f"{signed}.{_b64(_sign(keys.secret, signed))}"


def read_claims(token: object) -> TokenClaims:
    """What ``token`` claims, unverified; InvalidTokenError when it is not a token."""
    if not isinstance(token, str):
        raise InvalidTokenError(f"a gate token is text, not {type(token).__name__}.")
    token = token.strip()
    if not token.startswith(PREFIX) or token.count(".") != 3:
        raise InvalidTokenError(
            f"{token[:40]!r} is not an nbflow gate token (they start with {PREFIX!r}): copy "
            "the whole token that run.gate_token() printed."
        )
    body = token[len(PREFIX) :].split(".", 1)[0]
    try:
        data = json.loads(_unb64(body))
        return TokenClaims(
            store_id=str(data["s"]),
            run_id=str(data["r"]),
            gate=str(data["g"]),
            version=int(data["v"]),
            digest=str(data["d"]),
            expires_at=dt.datetime.fromtimestamp(int(data["e"]), dt.UTC),
            token_id=str(data["n"]),
        )
    except (ValueError, KeyError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise InvalidTokenError(
            "the gate token is damaged (its claims cannot be read): copy the whole token "
            "that run.gate_token() printed."
        ) from None


def verify_token(keys: GateKeys, token: object, *, now: dt.datetime) -> TokenClaims:
    """The claims of ``token`` once checked against this store's keys: its store, its
    signature (compared in constant time), its expiry. Whether the gate still waits for
    this token is for :mod:`nbflow.store.gates` to say."""
    claims = read_claims(token)
    assert isinstance(token, str)
    token = token.strip()
    if not hmac.compare_digest(claims.store_id, keys.store_id):
        raise TokenStoreMismatchError(
            f"this gate token was issued by another store (store id {claims.store_id[:8]}..., "
            f"this one is {keys.store_id[:8]}...): approve it against the store that holds "
            f"run {claims.run_id}."
        )
    signed, _, signature = token.rpartition(".")
    # Compared as text, not as decoded bytes: base64 leaves the last character's low bits
    # unused, so two texts decode alike, and one changed character must still be refused.
    expected = _b64(_sign(keys.secret, signed))
    if not hmac.compare_digest(signature.encode("ascii", "replace"), expected.encode("ascii")):
        raise InvalidTokenError(
            "the gate token's signature does not match: it was changed, or signed with "
            "another secret. Nothing was recorded. Ask for a new token with "
            "run.gate_token(gate)."
        )
    if now >= claims.expires_at:
        raise TokenExpiredError(
            f"the gate token for gate {claims.gate!r} of run {claims.run_id} expired at "
            f"{claims.expires_at:%Y-%m-%d %H:%M:%S} UTC. Ask for a new one with "
            f"run.gate_token({claims.gate!r})."
        )
    return claims
