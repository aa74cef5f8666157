"""Bearer-token authentication with `read` / `write` scopes.

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
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.api.problems import Problem
from shared.config import ApiToken

_bearer = HTTPBearer(auto_error=False, description="a token issued with `healthscore token`")


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


def require(scope: str):  # type: ignore[no-untyped-def]
    """A dependency: the caller, who must hold `scope`."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        challenge = {"WWW-Authenticate": 'Bearer realm="account-health"'}
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Problem(401, "a bearer token is required", headers=challenge)
        caller = identify(credentials.credentials, request.app.state.settings.api.tokens)
        if caller is None:
            raise Problem(401, "the bearer token is not valid", headers=challenge)
        if scope not in caller.scopes:
            raise Problem(403, f"the token '{caller.name}' lacks the '{scope}' scope")
        return caller

    return dependency


Reader = Annotated[Caller, Depends(require("read"))]
Writer = Annotated[Caller, Depends(require("write"))]
