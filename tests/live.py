"""A real fnhost server on a free port, and official cognite-sdk clients for it.

Tests talk to the server exactly as a user would: over HTTP, with ``cognite-sdk``.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
from cognite.client import ClientConfig, CogniteClient, global_config
from cognite.client.credentials import OAuthClientCredentials, Token

global_config.disable_pypi_version_check = True

REPO = Path(__file__).resolve().parents[1]
# Function environments are cached by content hash; sharing them across test servers
# (and test runs) keeps the suite fast without changing what is tested.
SHARED_ENV_DIR = REPO / ".test-envs"

# A call's /tmp is its own, but an environment or code directory that lives under /tmp is
# bound into it at its own path (so the call can import from it), and the directory that
# leads to it shows in the call's /tmp listing. With this checkout under /tmp (a fresh
# clone there), that is its first folder: what a call may see in /tmp besides its own files.
TMP_MOUNT_POINTS = frozenset(REPO.relative_to("/tmp").parts[:1]) if REPO.is_relative_to("/tmp") else frozenset()


def own_tmp_entries(names: list[str]) -> list[str]:
    """A call's listing of /tmp (or /dev/shm) without the mount points above."""
    return [n for n in names if n not in TMP_MOUNT_POINTS]


# -- what each pytest-xdist worker has to itself ---------------------------------------------
# ``./scripts/test`` runs the suite in several worker processes at once (pytest-xdist), each
# starting servers of its own on this one host. What two servers must not share, each worker
# gets a range of: ports and the uids sandboxes run as. A serial run (``-n 0``, or pytest
# without xdist) is worker None and keeps the defaults.
def _worker_index() -> int | None:
    name = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", …
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else None


WORKER = _worker_index()

# The uids functions run as: ``base + function id`` (FNHOST_ISOLATION_UID_BASE). Servers of
# different workers hand out the same function ids, and tests look for a function's
# processes by uid, so each worker's servers get a block of a million uids of their own,
# above the default's (which a focused run elsewhere on the machine may be using).
DEFAULT_UID_BASE = 200_000
UID_BASE = DEFAULT_UID_BASE if WORKER is None else DEFAULT_UID_BASE + (WORKER + 1) * 1_000_000

# Ports: ``bind(("127.0.0.1", 0))`` hands out a port that is free now, but the server binds
# it only later, and meanwhile another worker's bind(0) or an outgoing connection may take it.
# A worker takes its ports in turn from a range of its own below the kernel's ephemeral
# range (32768-60999 here), where neither of those can land.
_PORTS_PER_WORKER = 1000
_PORT_FLOOR = 20_000
_port_turn = itertools.count()


def free_port() -> int:
    if WORKER is not None:
        low = _PORT_FLOOR + (WORKER % 12) * _PORTS_PER_WORKER
        for _ in range(_PORTS_PER_WORKER):
            port = low + next(_port_turn) % _PORTS_PER_WORKER
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue  # in use (or in TIME_WAIT): the next one
                return port
        raise RuntimeError(f"no free port in {low}-{low + _PORTS_PER_WORKER - 1}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fnhost_cmd() -> list[str]:
    return [sys.executable, "-m", "fnhost.cli"]


class LiveServer:
    def __init__(self, home: Path, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.home = home
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "FNHOST_HOME": str(home),
            "FNHOST_PORT": str(self.port),
            "FNHOST_HOST": "127.0.0.1",
            "FNHOST_ENV_DIR": str(SHARED_ENV_DIR),
            "FNHOST_ISOLATION_UID_BASE": str(UID_BASE),
            # the baselines these servers build (uv passes UV_* on) get their bytecode: a
            # function's uid cannot write it later, so each zygote would compile cognite-sdk
            "UV_COMPILE_BYTECODE": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home / "server.log"

    def start(self, timeout: float = 60) -> LiveServer:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [*fnhost_cmd(), "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*fnhost_cmd(), *args], env=self.env, capture_output=True, text=True, check=check, input=input, timeout=120
        )

    def create_client(self, name: str = "test", *extra: str) -> dict[str, Any]:
        out = self.cli("admin", "create-client", name, "--json", *extra)
        return json.loads(out.stdout)

    def client(self, creds: dict[str, Any]) -> CogniteClient:
        return sdk_client(creds)


def sdk_client(creds: dict[str, Any], client_name: str = "fnhost-tests") -> CogniteClient:
    credentials = OAuthClientCredentials(
        token_url=creds["token_url"],
        client_id=creds["client_id"],
        client_secret=creds["client_secret"],
        scopes=creds["scopes"],
    )
    return CogniteClient(
        ClientConfig(
            client_name=client_name,
            project=creds["project"],
            credentials=credentials,
            base_url=creds["base_url"],
        )
    )


def bearer_token(creds: dict[str, Any]) -> str:
    """An access token for a client's credentials, from the token endpoint they name (the
    client-credentials grant, as cognite-sdk's ``OAuthClientCredentials`` asks for it)."""
    res = httpx.post(
        creds["token_url"],
        data={"grant_type": "client_credentials", "client_id": creds["client_id"], "client_secret": creds["client_secret"]},
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["token_type"].lower() == "bearer" and body["expires_in"] > 30, body
    return str(body["access_token"])


def token_client(base_url: str, project: str, token: Any) -> CogniteClient:
    return CogniteClient(
        ClientConfig(client_name="fnhost-tests", project=project, credentials=Token(token), base_url=base_url)
    )


def wait_for(predicate: Any, timeout: float = 60, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# -- deploying, as a user would ------------------------------------------------------------------

def zip_of(files: dict[str, str | bytes], *, symlinks: dict[str, str] | None = None) -> bytes:
    """A function zip; names are kept as given ("/abs.py", "../up.py"), and ``symlinks``
    become symlink entries (name → target), for the tests of what a zip may hold."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)  # a symlink, as zip tools record one
            zf.writestr(info, target)
    return buf.getvalue()


def upload(client: CogniteClient, content: bytes, name: str = "code.zip") -> int:
    return int(client.files.upload_bytes(content, name=name).id)


def wait_deployed(fn: Any, timeout: float = 300) -> Any:
    """Wait for a function to leave Queued/Deploying; returns it, refreshed."""
    wait_for(lambda: fn.update() or fn.status not in ("Queued", "Deploying"), timeout=timeout,
             interval=0.1, what=f"function {fn.id} to deploy")
    return fn


def deploy_folder(client: CogniteClient, folder: Path, name: str, files: dict[str, str], **kw: Any) -> Any:
    """Write ``files`` into ``folder`` and deploy it with ``functions.create``; must become Ready."""
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    folder.mkdir(parents=True, exist_ok=True)
    fn = wait_deployed(client.functions.create(name=name, folder=str(folder), **kw))
    assert fn.status == "Ready", fn.error
    return fn
