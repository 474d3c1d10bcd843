"""What every user command shares: the connection, output (Rich or JSON), argument parsing.

Nothing heavy is imported here at module level: every command module imports this one, and
all of them are imported to build ``fnhost --help``. httpx, Rich and cognite-sdk are
imported by the commands that use them, when they run (``tests/test_cli.py`` checks it).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, cast

import typer

from fnhost.commands import _profiles
from fnhost.commands._profiles import Profile, ProfileError

if TYPE_CHECKING:
    import httpx
    from cognite.client import CogniteClient
    from rich.console import Console

    from fnhost.commands._api import Api

# exit codes, named (as Dramatiq's CLI does)
OK = 0
FAILED = 1  # the thing asked for did not happen: a failed build, a failed or timed-out call
USAGE = 2  # bad arguments or no profile
NOT_FOUND = 3
SERVER_ERROR = 4



class _LazyConsole:
    """A Rich console made on first use (importing Rich is a good part of a fast command)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return getattr(self._console, name)


console = cast("Console", _LazyConsole(stderr=False))
err_console = cast("Console", _LazyConsole(stderr=True))

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (for scripts).")]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", "-p", help="Saved profile to use (default: the one `login` saved last)."),
]


def fail(message: str, code: int = FAILED, *, as_json: bool = False) -> NoReturn:
    if as_json:
        print(json.dumps({"error": message}))
    else:
        err_console.print(f"[red]Error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def ms_to_text(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_data(value: str | None) -> Any:
    """``--data '{"a": 1}'`` or ``--data @file.json`` (``@-`` reads stdin)."""
    if value is None:
        return {}
    if value.startswith("@"):
        source = value[1:]
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    else:
        text = value
    try:
        return json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"--data is not valid JSON: {exc}") from None


def parse_pairs(values: list[str] | None, what: str) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} must look like KEY=VALUE, got {value!r}.")
        out[key] = val
    return out


@dataclass
class Connection:
    """One profile's server: the official SDK for the CDF API, httpx for fnhost's extensions."""

    profile_name: str
    profile: Profile

    @classmethod
    def open(cls, profile: str | None, *, as_json: bool = False) -> Connection:
        try:
            name, prof = _profiles.load(profile)
        except ProfileError as exc:
            fail(str(exc), USAGE, as_json=as_json)
        return cls(name, prof)

    @cached_property
    def client(self) -> CogniteClient:
        return make_client(self.profile)

    @cached_property
    def api(self) -> Api:
        """The CDF API over the standard library: for commands that must start fast."""
        from fnhost.commands._api import Api

        return Api(self.profile)

    @property
    def project_url(self) -> str:
        return f"{self.profile.base_url.rstrip('/')}/api/v1/projects/{self.profile.project}"

    def headers(self) -> dict[str, str]:
        name, value = self.client.config.credentials.authorization_header()
        return {name: value, "x-cdp-app": "fnhost-cli"}

    def http(self, timeout: float | None = 60) -> httpx.Client:
        import httpx

        return httpx.Client(base_url=self.project_url, headers=self.headers(), timeout=timeout)

    def resolve_function(self, ident: str, *, as_json: bool = False) -> Any:
        """A function by id (digits), external id, or name."""
        fns = self.client.functions
        fn = fns.retrieve(id=int(ident)) if ident.isdigit() else fns.retrieve(external_id=ident)
        if fn is None and not ident.isdigit():
            matches = fns.list(name=ident, limit=2)
            if len(matches) == 1:
                fn = matches[0]
            elif len(matches) > 1:
                fail(f"Several functions are named {ident!r}; use the id or external id.", USAGE, as_json=as_json)
        if fn is None:
            fail(f"No function {ident!r} (tried id, external id and name).", NOT_FOUND, as_json=as_json)
        return fn

    def find_call(self, call_id: int, function: str | None, *, as_json: bool = False) -> Any:
        """A call by id; without ``function``, look through the project's functions."""
        if function is not None:
            fn = self.resolve_function(function, as_json=as_json)
            call = self.client.functions.calls.retrieve(call_id=call_id, function_id=fn.id)
        else:
            call = None
            for fn in self.client.functions.list(limit=None):
                call = self.client.functions.calls.retrieve(call_id=call_id, function_id=fn.id)
                if call is not None:
                    break
        if call is None:
            fail(f"No call {call_id}.", NOT_FOUND, as_json=as_json)
        return call


def make_client(profile: Profile, client_name: str = "fnhost-cli") -> CogniteClient:
    try:
        from cognite.client import ClientConfig, CogniteClient, global_config
        from cognite.client.credentials import CredentialProvider, OAuthClientCredentials, Token
    except ImportError:  # pragma: no cover - the CLI extra installs it
        fail("The user commands need cognite-sdk: pip install cognite-sdk", USAGE)
    global_config.disable_pypi_version_check = True
    base = profile.base_url.rstrip("/")
    credentials: CredentialProvider
    if profile.token:
        credentials = Token(profile.token)
    else:
        credentials = OAuthClientCredentials(
            token_url=profile.token_url or f"{base}/oauth2/token",
            client_id=profile.client_id or "",
            client_secret=profile.client_secret or "",
            scopes=profile.scopes or [f"{base}/.default"],
        )
    return CogniteClient(
        ClientConfig(client_name=client_name, project=profile.project, credentials=credentials, base_url=base)
    )


class guard:
    """``with guard(as_json):`` turns SDK and HTTP errors into one clear line and an exit code."""

    def __init__(self, as_json: bool = False) -> None:
        self.as_json = as_json

    def __enter__(self) -> guard:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is None or isinstance(exc, typer.Exit | typer.Abort | KeyboardInterrupt):
            return False
        from fnhost.commands._api import ApiError

        if isinstance(exc, ApiError):
            code = SERVER_ERROR if exc.status is None else _exit_code(exc.status, exc.missing)
            fail(exc.text(), code, as_json=self.as_json)
        import httpx
        from cognite.client.exceptions import (
            CogniteAPIError,
            CogniteException,
            CogniteNotFoundError,
        )

        if isinstance(exc, CogniteNotFoundError):
            fail(f"Not found: {exc}", NOT_FOUND, as_json=self.as_json)
        if isinstance(exc, CogniteAPIError):
            code = SERVER_ERROR if exc.code >= 500 else FAILED
            fail(f"{exc.message} (HTTP {exc.code})", code, as_json=self.as_json)
        if isinstance(exc, CogniteException):
            fail(str(exc), FAILED, as_json=self.as_json)
        if isinstance(exc, httpx.HTTPStatusError):
            fail(_http_error_text(exc.response), _http_exit_code(exc.response), as_json=self.as_json)
        if isinstance(exc, httpx.HTTPError):
            fail(f"Cannot reach the server: {exc}", SERVER_ERROR, as_json=self.as_json)
        return False


def _exit_code(status: int, missing: Any) -> int:
    """As the SDK reads the wire: 404, or 400 naming ``missing`` items, is "not found"."""
    if status >= 500:
        return SERVER_ERROR
    if status == 404:
        return NOT_FOUND
    return NOT_FOUND if missing else FAILED


def _http_exit_code(response: httpx.Response) -> int:
    try:
        missing = response.json()["error"].get("missing")
    except (ValueError, KeyError, TypeError, AttributeError):
        missing = None
    return _exit_code(response.status_code, missing)


def _http_error_text(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:500]
    return f"{message} (HTTP {response.status_code})"


def check(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        import httpx

        response.read()
        raise httpx.HTTPStatusError(_http_error_text(response), request=response.request, response=response)
    return response


def sse_events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """Parse a ``text/event-stream`` body into (event, data) pairs as they arrive."""
    event = "message"
    data: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield event, "\n".join(data)
