"""A real fnhost server on a free port, and official cognite-sdk clients for it.

Tests talk to the server exactly as a user would: over HTTP, with ``cognite-sdk``.
"""

from __future__ import annotations

import io
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


def free_port() -> int:
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
