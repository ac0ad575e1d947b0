"""The dashboard's request guards: a browser session cookie, CSRF tokens and the login token.

- Every browser gets a random session id in an HttpOnly, SameSite=Strict cookie.
- Every form carries ``csrf = HMAC(secret, "csrf:" + session)``; a POST whose field does not
  match its cookie is refused (403), as is a POST whose ``Origin`` is another site.
- With an access token configured, signing in (``POST /login`` with the token) stores
  ``HMAC(secret, "auth:" + session)`` in a second cookie; a request may instead send
  ``Authorization: Bearer <token>``. Tokens are compared in constant time.

The secret is random per process unless given, so restarting the dashboard signs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = ["Guard"]

SESSION_COOKIE = "rt_dashboard_session"
AUTH_COOKIE = "rt_dashboard_auth"


class Guard:
    """Signs and checks session-bound values.

    Args:
        secret: the HMAC key (random when None).
        token: the access token; None means no sign-in.
    """

    def __init__(self, *, secret: bytes | None, token: str | None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._token = token

    @property
    def needs_sign_in(self) -> bool:
        """Whether an access token is configured."""
        return self._token is not None

    @staticmethod
    def new_session() -> str:
        """A fresh random session id."""
        return secrets.token_urlsafe(24)

    @staticmethod
    def session_of(request: Request) -> str | None:
        """The request's session id, if it sent a well-formed one."""
        value = request.cookies.get(SESSION_COOKIE)
        if value is None or not 16 <= len(value) <= 64 or not value.isascii():
            return None
        return value

    def _sign(self, purpose: str, session: str) -> str:
        message = f"{purpose}:{session}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def csrf_token(self, session: str) -> str:
        """The CSRF token forms of ``session`` carry."""
        return self._sign("csrf", session)

    def csrf_ok(self, request: Request, submitted: object) -> bool:
        """Whether a POST's ``csrf`` field matches its session, and it comes from this site."""
        origin = request.headers.get("origin")
        if origin is not None and (
            origin == "null" or urlsplit(origin).netloc != request.headers.get("host", "")
        ):
            return False
        session = self.session_of(request)
        if session is None or not isinstance(submitted, str):
            return False
        return hmac.compare_digest(submitted.encode(), self.csrf_token(session).encode())

    def token_ok(self, submitted: object) -> bool:
        """Whether ``submitted`` is the access token (constant time)."""
        if self._token is None or not isinstance(submitted, str):
            return False
        return hmac.compare_digest(submitted.encode(), self._token.encode())

    def auth_cookie(self, session: str) -> str:
        """The signed-in cookie value for ``session``."""
        return self._sign("auth", session)

    def signed_in(self, request: Request) -> bool:
        """Whether the request may act: no token configured, a bearer token, or signed in."""
        if self._token is None:
            return True
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer ") and self.token_ok(header[len("Bearer ") :]):
            return True
        session = self.session_of(request)
        cookie = request.cookies.get(AUTH_COOKIE)
        if session is None or cookie is None:
            return False
        return hmac.compare_digest(cookie.encode(), self.auth_cookie(session).encode())
