"""Browser sign-in: server-side sessions behind an HttpOnly cookie, and CSRF tokens.

The cookie holds only a random id. What the id stands for (the signed-in principal, the
project, the CSRF token, the expiry) stays in this process's memory, so a stolen page
cannot read it and a restart signs everyone out. Several replicas behind a load balancer
need sticky sessions for the web page (the API itself is stateless).

A form that fails is answered with a redirect (post/redirect/get), so the page it lands on
can be reloaded without sending the form again. What the person typed and the errors wait
here, in memory, under a random key the redirect's URL carries (``?form=…``): nothing typed,
secrets least of all, goes into a URL.
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
SIGNIN_FORM_SECONDS = 600  # how long a failed sign-in form waits to be shown again
# browsers with a failed sign-in form waiting; anyone can make one, so the oldest go first
MAX_SIGNIN_BROWSERS = 1000


MAX_FORMS = 8  # failed forms kept per browser; the oldest is forgotten first


@dataclass(frozen=True)
class FailedForm:
    """A form sent back for fixes: which form, what was typed (no secrets), and the errors."""

    kind: str  # "upload", "schedule:<function id>", "signin"
    values: dict[str, str]
    errors: dict[str, str]


class FormStash:
    """Failed forms by random key, at most ``MAX_FORMS``. Thread-safe."""

    def __init__(self) -> None:
        self._items: dict[str, FailedForm] = {}
        self._lock = threading.Lock()

    def put(self, form: FailedForm) -> str:
        key = secrets.token_urlsafe(12)
        with self._lock:
            self._items[key] = form
            while len(self._items) > MAX_FORMS:
                del self._items[next(iter(self._items))]
        return key

    def get(self, key: str | None, kind: str) -> FailedForm | None:
        """The form under ``key`` if it is a ``kind`` form. Kept: a reload shows it again."""
        if not key:
            return None
        with self._lock:
            form = self._items.get(key)
        return form if form is not None and form.kind == kind else None

    def drop(self, kind: str) -> None:
        """Forget the failed ``kind`` forms (the form went through)."""
        with self._lock:
            for key in [k for k, f in self._items.items() if f.kind == kind]:
                del self._items[key]


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
    forms: FormStash = field(default_factory=FormStash)

    def csrf_ok(self, token: object) -> bool:
        # bytes: compare_digest refuses str with non-ASCII characters
        return isinstance(token, str) and hmac.compare_digest(self.csrf.encode(), token.encode())


class SessionStore:
    """Signed-in browsers, keyed by the random id in the cookie. Thread-safe."""

    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self._items: dict[str, UiSession] = {}
        self._lock = threading.Lock()
        # failed sign-in forms, before there is a session: keyed by the pre-sign-in cookie
        self._signin_forms: dict[str, tuple[float, FormStash]] = {}

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

    def signin_forms(self, pre: str) -> FormStash:
        """The failed sign-in forms of the browser holding the pre-sign-in cookie ``pre``."""
        with self._lock:
            self._purge()
            entry = self._signin_forms.get(pre)
            if entry is None:
                entry = self._signin_forms[pre] = (time.time() + SIGNIN_FORM_SECONDS, FormStash())
                while len(self._signin_forms) > MAX_SIGNIN_BROWSERS:
                    del self._signin_forms[next(iter(self._signin_forms))]
            return entry[1]

    def _purge(self) -> None:
        now = time.time()
        for sid in [k for k, v in self._items.items() if v.expires_at < now]:
            del self._items[sid]
        for pre in [k for k, (until, _) in self._signin_forms.items() if until < now]:
            del self._signin_forms[pre]


def cookie_args(secure: bool) -> dict[str, Any]:
    return {"key": COOKIE, "httponly": True, "samesite": "lax", "secure": secure, "path": "/"}
