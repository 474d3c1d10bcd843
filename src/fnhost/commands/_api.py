"""The CDF API over the standard library: a token, then JSON requests. For fast commands.

``fnhost functions ls`` must answer within 0.4 s (``bench/cli.py``). Importing cognite-sdk
takes about a second on a small host and httpx about 0.2 s (it imports its own command
line, with Rich and Pygments), while ``urllib.request`` takes a few milliseconds. So the
commands that only list read the API with this; the others keep the official SDK.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from fnhost.commands._profiles import Profile

USER_AGENT = "fnhost-cli"


class ApiError(Exception):
    """The server refused (``status``), or could not be reached (``status`` is None)."""

    def __init__(self, status: int | None, message: str, missing: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.missing = missing

    def text(self) -> str:
        if self.status is None:
            return f"Cannot reach the server: {self.message}"
        return f"{self.message} (HTTP {self.status})"


class Api:
    def __init__(self, profile: Profile, timeout: float = 60) -> None:
        self.profile = profile
        self.timeout = timeout
        self.base = profile.base_url.rstrip("/")
        self._token: str | None = profile.token

    @property
    def project_url(self) -> str:
        return f"{self.base}/api/v1/projects/{urllib.parse.quote(self.profile.project)}"

    def token(self) -> str:
        """The profile's token, or one fetched with its client credentials (as the SDK does)."""
        if self._token is None:
            p = self.profile
            form = {
                "grant_type": "client_credentials",
                "client_id": p.client_id or "",
                "client_secret": p.client_secret or "",
                "scope": " ".join(p.scopes or [f"{self.base}/.default"]),
            }
            body = self._send(
                _request(
                    p.token_url or f"{self.base}/oauth2/token",
                    data=urllib.parse.urlencode(form).encode(),
                    headers={"Accept": "application/json", "User-Agent": USER_AGENT},
                )
            )
            self._token = str(body["access_token"])
        return self._token

    def post(self, path: str, body: Any) -> Any:
        return self._send(
            _request(
                self.project_url + path,
                data=json.dumps(body).encode(),
                headers={**self._headers(), "Content-Type": "application/json"},
            )
        )

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        query = "?" + urllib.parse.urlencode(params) if params else ""
        return self._send(_request(self.project_url + path + query, headers=self._headers()))

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token()}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "x-cdp-app": USER_AGENT,
        }

    def _send(self, request: urllib.request.Request) -> Any:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) only, see _request
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _refusal(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(None, str(getattr(exc, "reason", exc))) from None


def _request(
    url: str, *, headers: dict[str, str], data: bytes | None = None
) -> urllib.request.Request:
    """A request to an http(s) URL: urllib would also open ``file:`` and other schemes."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ApiError(None, f"{url!r} is not an http(s) URL; check the profile (fnhost login).")
    return urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=data, headers=headers, method="POST" if data is not None else "GET"
    )


def _refusal(exc: urllib.error.HTTPError) -> ApiError:
    """The CDF error envelope (or the token endpoint's OAuth error) as one message."""
    raw = exc.read()
    try:
        body = json.loads(raw)
    except ValueError:
        return ApiError(exc.code, raw.decode(errors="replace")[:500] or exc.reason)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return ApiError(exc.code, str(error.get("message", "")), error.get("missing"))
    if isinstance(error, str):  # OAuth: {"error": "invalid_client", "error_description": …}
        return ApiError(exc.code, str(body.get("error_description") or error))
    return ApiError(exc.code, raw.decode(errors="replace")[:500])
