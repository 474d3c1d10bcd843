"""Browser sign-in: server-side sessions behind an HttpOnly cookie, and CSRF tokens.

The cookie holds only a random id. What the id stands for (the signed-in principal, the
project, the CSRF token, the expiry) stays in this process's memory, so a stolen page
cannot read it and a restart signs everyone out. Several replicas behind a load balancer
need sticky sessions for the web page (the API itself is stateless).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fnhost.auth.capabilities import Principal

COOKIE = "fnhost_ui"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass
class UiSession:
    id: str
    principal: Principal
    project: str
    who: str
    csrf: str
    expires_at: float
    # one-shot messages shown on the next page (after a redirect)
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def csrf_ok(self, token: object) -> bool:
        # bytes: compare_digest refuses str with non-ASCII characters
        return isinstance(token, str) and hmac.compare_digest(self.csrf.encode(), token.encode())


class SessionStore:
    """Signed-in browsers, keyed by the random id in the cookie. Thread-safe."""

    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self._items: dict[str, UiSession] = {}
        self._lock = threading.Lock()

    def create(self, principal: Principal, project: str, who: str) -> UiSession:
        sess = UiSession(
            id=secrets.token_urlsafe(32),
            principal=principal,
            project=project,
            who=who,
            csrf=secrets.token_urlsafe(32),
            expires_at=time.time() + self.lifetime_s,
        )
        with self._lock:
            self._purge()
            self._items[sess.id] = sess
        return sess

    def lookup(self, sid: str | None) -> tuple[UiSession | None, bool]:
        """The live session for a cookie value, and whether an expired one was found."""
        if not sid:
            return None, False
        with self._lock:
            sess = self._items.get(sid)
            if sess is None:
                return None, False
            if sess.expires_at < time.time():
                del self._items[sid]
                return None, True
            return sess, False

    def delete(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._items.pop(sid, None)

    def _purge(self) -> None:
        now = time.time()
        for sid in [k for k, v in self._items.items() if v.expires_at < now]:
            del self._items[sid]


def cookie_args(secure: bool) -> dict[str, Any]:
    return {"key": COOKIE, "httponly": True, "samesite": "lax", "secure": secure, "path": "/"}
