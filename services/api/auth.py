"""Bearer-token authentication with `read` / `write` / `admin` / `model` scopes.

Operators configure tokens as SHA-256 hashes (HEALTHSCORE_API__TOKENS), never the tokens
themselves; `healthscore token` issues one. A presented token is hashed and compared with every
configured hash in constant time, so neither a match nor its position leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from services.api.problems import Problem
from shared.config import ApiToken


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: frozenset[str]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token() -> tuple[str, str]:
    """A new random token and its hash."""
    token = "hs_" + secrets.token_urlsafe(32)
    return token, hash_token(token)


def identify(token: str, configured: list[ApiToken]) -> Caller | None:
    presented = hash_token(token).encode()
    found: Caller | None = None
    for entry in configured:  # no early exit: every hash is compared
        if hmac.compare_digest(presented, entry.sha256.encode()):
            found = Caller(entry.name, frozenset(entry.scopes))
    return found


class BearerScope(HTTPBearer):
    """One dependency that both documents the bearer scheme in OpenAPI and checks the token
    and its scope (a single dependency keeps the per-request overhead low)."""

    def __init__(self, scope: str) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="bearer",
            description="a token issued with `healthscore token`",
        )
        self.scope = scope

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        challenge = {"WWW-Authenticate": 'Bearer realm="account-health"'}
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Problem(401, "a bearer token is required", headers=challenge)
        caller = identify(token.strip(), request.app.state.settings.api.tokens)
        if caller is None:
            raise Problem(401, "the bearer token is not valid", headers=challenge)
        if self.scope not in caller.scopes:
            raise Problem(403, f"the token '{caller.name}' lacks the '{self.scope}' scope")
        return caller


Reader = Annotated[Caller, Depends(BearerScope("read"))]
Writer = Annotated[Caller, Depends(BearerScope("write"))]
Admin = Annotated[Caller, Depends(BearerScope("admin"))]
Modeller = Annotated[Caller, Depends(BearerScope("model"))]  # proposes and reviews models
