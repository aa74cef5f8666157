"""Who is looking at the console, and proof that a form came from it.

A signed cookie (itsdangerous, HttpOnly, SameSite=Lax, Secure over TLS) carries the session:
a random CSRF secret, and after sign-in the SHA-256 of the API token signed in with, never the
token. Each request looks the hash up among the configured tokens again, so removing a token
ends its sessions. Behind a trusted authenticating proxy (e.g. oauth2-proxy), the person it
names in a configured header is the viewer instead, believed only from the proxy's addresses.

Every form carries the session's CSRF secret; a POST without it is refused (403), and so is
one whose Origin is another site's.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from shared.config import ApiSettings

COOKIE = "healthscore_session"


@dataclass(frozen=True)
class Viewer:
    name: str
    scopes: frozenset[str]
    via: str  # "token" or "proxy": who vouches for the name

    @property
    def can_write(self) -> bool:
        return "write" in self.scopes

    @property
    def can_model(self) -> bool:
        return "model" in self.scopes


@dataclass
class Session:
    csrf: str
    token_sha256: str | None = None
    fresh: bool = False  # new in this request: the response must set it


class Sessions:
    def __init__(self, settings: ApiSettings) -> None:
        secret = settings.session_secret
        key = secret.get_secret_value() if secret is not None else secrets.token_urlsafe(32)
        self._signer = URLSafeTimedSerializer(key, salt="healthscore-console")
        self._max_age = int(settings.session_hours * 3600)
        self._settings = settings

    def load(self, request: Request) -> Session:
        raw = request.cookies.get(COOKIE)
        if raw:
            try:
                data = self._signer.loads(raw, max_age=self._max_age)
            except BadSignature:  # tampered, from another key, or expired
                data = None
            if isinstance(data, dict) and isinstance(data.get("c"), str):
                return Session(csrf=data["c"], token_sha256=data.get("t"))
        return Session(csrf=secrets.token_urlsafe(24), fresh=True)

    def save(self, request: Request, response: Response, session: Session) -> None:
        value = self._signer.dumps({"c": session.csrf, "t": session.token_sha256})
        response.set_cookie(
            COOKIE,
            value,
            max_age=self._max_age,
            path="/console",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )

    def clear(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/console")

    def viewer(self, request: Request, session: Session) -> Viewer | None:
        settings = self._settings
        header = settings.proxy_user_header
        if header and request.client and request.client.host in settings.proxy_addresses:
            name = request.headers.get(header, "").strip()
            if name:
                scopes = {"read"}
                if name in settings.proxy_writers:
                    scopes.add("write")
                if name in settings.proxy_modellers:
                    scopes.add("model")
                return Viewer(name, frozenset(scopes), "proxy")
        if session.token_sha256 is None:
            return None
        presented = session.token_sha256.encode()
        found: Viewer | None = None
        for entry in settings.tokens:  # no early exit: every hash is compared
            if hmac.compare_digest(presented, entry.sha256.encode()):
                found = Viewer(entry.name, frozenset(entry.scopes), "token")
        return found


def csrf_valid(request: Request, session: Session, presented: Any) -> bool:
    """The form's CSRF field matches the session's, and the browser, when it says where the
    form came from, says this site."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        own = f"{request.url.scheme}://{request.url.netloc}"
        if origin != own:
            return False
    if session.fresh or not isinstance(presented, str):
        return False
    return hmac.compare_digest(presented.encode(), session.csrf.encode())
