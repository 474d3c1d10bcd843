"""Escapes a deployer could try, each written as an attacker would, next to the legitimate use
it must not break. Run with the default isolation (``auto``: bubblewrap on these hosts).

Build time: a local package's ``setup.py``, a PEP 517 backend and a source distribution
from an index run as the function's uid in its sandbox, without the server's files, the
shared uv cache, other environments or the host's loopback; what one function's build made
is never loaded by another's. Zips cannot place files outside their code directory.
Run time: no loopback service of the host, no private or link-local address, no address of
the host's own, while the function's ``client`` and allowed destinations work; no server
file, other function's code, environment or secrets; no server in ``/proc``; no signal or
ptrace reaches another function; no write to the function's own code or environment; a full
``/tmp``, a fork bomb and a call that will not exit end with the call.

The main server keeps its data *and* environment directories under /tmp, so a call that
imports a module its zygote had not (``client.assets.list()``) proves a call's private
/tmp does not hide its environment. Every attack sends traffic to loopback only: addresses
that are not loopback are asked of the egress proxy, which refuses them before connecting.
"""

from __future__ import annotations

import json
import os
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cognite.client import CogniteClient
from cognite.client.exceptions import CogniteAPIError

from fnhost.run.network import own_addresses
from tests.live import (
    DEFAULT_UID_BASE,
    UID_BASE,
    LiveServer,
    deploy_folder,
    upload,
    wait_deployed,
    wait_for,
    zip_of,
)
from tests.pkgindex import PackageIndex
from tests.test_isolation import SNOOP, snoop_data

# UID_BASE: the first uid of this test worker's servers (tests/live.py); a Ray node's host
# keeps the default (DEFAULT_UID_BASE), as the test below leaves its settings alone

# What an attacker's build step looks for; ``probe(targets)`` returns what it found, as JSON
# (each value "OK…" only where it succeeded). Shared by setup.py, the PEP 517 backend and
# the source distribution below.
PROBE = r'''
import json, os, socket

def _try(fn):
    try:
        return "OK:" + str(fn())[:80]
    except Exception as exc:
        return type(exc).__name__

def _read(path):
    with open(path, "rb") as f:
        return f.read(64).decode("latin-1")

def _write(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("planted by a build")
    return path

def _connect(host, port):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        return "open"
    finally:
        s.close()

def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    return ""

def probe(targets):
    found = {"uid": os.getuid(), "CapEff": _status("CapEff"), "NoNewPrivs": _status("NoNewPrivs")}
    found["read"] = {p: _try(lambda p=p: _read(p)) for p in targets["read"]}
    found["list"] = {p: _try(lambda p=p: sorted(os.listdir(p))[:5]) for p in targets["list"]}
    found["write"] = {p: _try(lambda p=p: _write(p)) for p in targets["write"]}
    found["connect"] = {f"{h}:{p}": _try(lambda h=h, p=p: _connect(h, p)) for h, p in targets["connect"]}
    return found
'''

SETUP_PY = PROBE + '''
import json
from setuptools import setup

report = probe(json.load(open("targets.json")))
with open("evil_report.py", "w") as f:
    f.write("REPORT = " + repr(json.dumps(report)) + "\\n")
setup(name="evilpkg", version="1.0", py_modules=["evil_report"])
'''

BACKEND = PROBE + r'''
import base64, hashlib, zipfile

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    report = json.dumps(probe(json.load(open("targets.json"))))
    files = {
        "evil_report.py": "REPORT = " + repr(report) + "\n",
        "evilbackend-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: evilbackend\nVersion: 1.0\n",
        "evilbackend-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: x\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    name = "evilbackend-1.0-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(text)}")
        record.append("evilbackend-1.0.dist-info/RECORD,,")
        zf.writestr("evilbackend-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return name
'''

# a source distribution on an index: its build records who built it, so a function can tell
# whether the package it imports was built for it or for another function
SDIST_SETUP = PROBE + '''
import json, os
from setuptools import setup

with open("built_by.py", "w") as f:
    f.write(f"UID = {os.getuid()}\\n")
setup(name="fnhost-built-by", version="1.0", py_modules=["built_by"])
'''

REPORT_HANDLER = """\
import json
import evil_report

def handle(data):
    return json.loads(evil_report.REPORT)
"""

ATTACKS = r'''
import ctypes, json, os, signal, socket, subprocess, sys, time

def _try(fn):
    try:
        return "OK:" + str(fn())[:200]
    except Exception as exc:
        return type(exc).__name__

def _connect(host, port):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(3)
    try:
        s.connect((host, port))
        return "open"
    finally:
        s.close()

def _via_proxy(target, plain=False):
    """Ask the sandbox's egress proxy (HTTPS_PROXY) for a destination; its first status line."""
    proxy = os.environ["HTTPS_PROXY"].rsplit(":", 1)
    s = socket.create_connection((proxy[0].split("//")[1], int(proxy[1])), timeout=10)
    try:
        if plain:
            s.sendall(f"GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
            body = head.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in head else b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                body += chunk
            return head.split(b"\r\n")[0].decode() + " " + body.decode(errors="replace")[:120]
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        return s.recv(4096).split(b"\r\n")[0].decode()
    finally:
        s.close()

def _write(path):
    with open(path, "w") as f:
        f.write("x")
    return "wrote"

def handle(client, data):
    case = data["case"]
    if case == "network":
        out = {"assets": _try(lambda: len(client.assets.list(limit=5)))}
        out["direct"] = {f"{h}:{p}": _try(lambda h=h, p=p: _connect(h, p)) for h, p in data["direct"]}
        out["proxy"] = {t: _try(lambda t=t: _via_proxy(t)) for t in data["proxied"]}
        out["plain"] = {t: _try(lambda t=t: _via_proxy(t, plain=True)) for t in data["plain"]}
        return out
    if case == "write-own":
        site = [p for p in sys.path if p.endswith("site-packages")]
        targets = ["/function/planted.py", os.path.join(sys.prefix, "planted.py"), *[os.path.join(p, "planted.py") for p in site]]
        return {"own": {p: _try(lambda p=p: _write(p)) for p in targets}, "tmp": _try(lambda: _write("/tmp/mine"))}
    if case == "ptrace":
        libc = ctypes.CDLL(None, use_errno=True)
        mine = os.getpid()
        out = {}
        for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
            if pid == mine:
                continue
            rc = libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH
            out[str(pid)] = "attached" if rc == 0 else os.strerror(ctypes.get_errno())
            if rc == 0:
                libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
        out["cmdlines"] = [open(f"/proc/{p}/cmdline").read().replace("\0", " ")[:120]
                           for p in os.listdir("/proc") if p.isdigit()]
        return out
    if case == "kill-everything":
        os.kill(-1, signal.SIGKILL)  # every process this call may signal, itself included
        time.sleep(5)
        return "still here"
    if case == "fill-tmp":
        written = 0
        try:
            with open("/tmp/fill", "wb") as f:
                while written < data["mb"]:
                    f.write(b"z" * (1 << 20))
                    written += 1
                    f.flush()
        except OSError as exc:
            return {"written": written, "error": exc.strerror}
        return {"written": written}
    if case == "fork-bomb":
        pids = 0
        try:
            while True:
                if os.fork() == 0:
                    while True:
                        try:
                            os.fork()
                        except OSError:
                            time.sleep(0.01)
                pids += 1
        except OSError as exc:
            return {"forked": pids, "error": type(exc).__name__}
    if case == "linger":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.fork() == 0:  # a daemon of its own session, meant to outlive the call
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", data["marker"]])
            os._exit(0)
        time.sleep(3600)
    if case == "sleep":
        time.sleep(data["seconds"])
        return "slept"
    if case == "ok":
        return "ok"
    return None
'''


@pytest.fixture(scope="module")
def index() -> Iterator[PackageIndex]:
    idx = PackageIndex()
    idx.add_setuptools()
    idx.add_sdist("fnhost-built-by", "1.0", {"setup.py": SDIST_SETUP})
    yield idx
    idx.close()


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from an allowed destination"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def listeners() -> Iterator[dict[str, int]]:
    """Something listening on 127.0.0.2 (never allowed) and 127.0.0.3 (allowed by the
    server's FNHOST_NETWORK_ALLOW), so a refused connection is the policy, not an empty port."""
    ports = {}
    servers = []
    for host in ("127.0.0.2", "127.0.0.3"):
        srv = ThreadingHTTPServer((host, 0), _Hello)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        ports[host] = int(srv.server_address[1])
    yield ports
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def escape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, CogniteClient]]:
    """The server under attack: default isolation, data and environments under /tmp."""
    home = tmp_path_factory.mktemp("escape-home")
    envs = tmp_path_factory.mktemp("escape-envs")
    assert str(home).startswith("/tmp/") and str(envs).startswith("/tmp/")
    live = LiveServer(
        home,
        env={
            "FNHOST_ENV_DIR": str(envs),
            "FNHOST_NETWORK_ALLOW": '["127.0.0.3/32"]',
            "FNHOST_CALL_TIMEOUT_SECONDS": "10",
        },
    ).start()
    yield live, live.client(live.create_client("escape"))
    live.stop()


def _targets(live: LiveServer, other_code: Path | None = None) -> dict[str, Any]:
    home = live.home.resolve()
    envs = Path(live.env["FNHOST_ENV_DIR"])
    base_env = sorted(envs.glob("base-*"))[0]
    site = sorted(base_env.glob("lib/python3*/site-packages"))[0]
    uv_cache = Path(os.environ.get("UV_CACHE_DIR") or Path.home() / ".cache" / "uv")
    read = [str(home / "keys" / "jwt-signing.pem"), str(home / "keys" / "secrets.key"),
            str(home / "admin-client.json"), str(home / "fnhost.db")]
    if other_code is not None:
        read.append(str(other_code / "handler.py"))
    return {
        "read": read,
        "list": [str(home), str(home / "blobs"), str(home / "code"), str(envs), str(uv_cache)],
        "write": [str(site / "planted_by_build.py"), str(envs / "planted_by_build"),
                  str(uv_cache / "planted_by_build"), str(Path.home() / "planted_by_build")],
        "connect": [["127.0.0.1", 5432], ["127.0.0.1", 6379], ["127.0.0.1", 3306], ["127.0.0.1", 5672],
                    ["127.0.0.1", live.port]],
    }


def _assert_nothing_reached(report: dict[str, Any], function_id: int, targets: dict[str, Any]) -> None:
    assert report["uid"] == UID_BASE + function_id, report["uid"]
    assert int(report["CapEff"], 16) == 0 and report["NoNewPrivs"] == "1", report
    for kind in ("read", "connect"):
        reached = {k: v for k, v in report[kind].items() if v.startswith("OK")}
        assert not reached, (kind, reached)
    # the environment directory shows only the baseline the build runs on (its mount point)
    listed = {k: v for k, v in report["list"].items() if v.startswith("OK") and v != f"OK:{_baselines(targets)}"}
    assert not listed, listed
    # a write may land in the sandbox's own throwaway /tmp; none reaches the host
    for path in targets["write"]:
        assert not Path(path).exists(), path


def _baselines(targets: dict[str, Any]) -> list[str]:
    return sorted(p.name for p in Path(targets["list"][3]).glob("base-*"))


def _deploy_with_targets(
    client: CogniteClient, folder: Path, name: str, files: dict[str, str], targets: dict[str, Any], **kw: Any
) -> Any:
    files = {**files, **{str(Path(d) / "targets.json"): json.dumps(targets) for d in kw.pop("target_dirs", [])}}
    return deploy_folder(client, folder, name, files, **kw)


# -- build time ------------------------------------------------------------------------------------

def test_setup_py_of_a_local_package_cannot_reach_the_servers_files(
    escape: tuple[LiveServer, CogniteClient], index: PackageIndex, tmp_path: Path
) -> None:
    live, client = escape
    other = deploy_folder(client, tmp_path / "other", "bystander", {"handler.py": ATTACKS})
    targets = _targets(live, other_code=live.home / "code" / str(other.id))
    fn = _deploy_with_targets(
        client, tmp_path / "setup-py", "setup-py",
        {"handler.py": REPORT_HANDLER, "requirements.txt": "./evilpkg\n", "evilpkg/setup.py": SETUP_PY},
        targets, target_dirs=["evilpkg"], index_url=index.url, skip_folder_validation=True,
    )
    # the legitimate path: the local package was built, installed and imports
    report = fn.call({}).get_response()
    _assert_nothing_reached(report, fn.id, targets)
    assert any("/files/setuptools-" in p for p in index.requested)  # the build's own index served it


def test_pep517_backend_cannot_reach_the_servers_files(
    escape: tuple[LiveServer, CogniteClient], tmp_path: Path
) -> None:
    live, client = escape
    targets = _targets(live)
    pyproject = textwrap.dedent("""\
        [build-system]
        requires = []
        build-backend = "backend"
        backend-path = ["."]

        [project]
        name = "evilbackend"
        version = "1.0"
    """)
    fn = _deploy_with_targets(
        client, tmp_path / "pep517", "pep517",
        {"handler.py": REPORT_HANDLER, "requirements.txt": "./evilbackend\n",
         "evilbackend/pyproject.toml": pyproject, "evilbackend/backend.py": BACKEND},
        targets, target_dirs=["evilbackend"], skip_folder_validation=True,
    )
    _assert_nothing_reached(fn.call({}).get_response(), fn.id, targets)


def test_a_source_distribution_is_built_for_each_function_alone(
    escape: tuple[LiveServer, CogniteClient], index: PackageIndex, tmp_path: Path
) -> None:
    """Two functions with the same requirements: an sdist's build runs in each one's own
    sandbox, and each imports what was built for it, never what another function's build made."""
    _, client = escape
    handler = "import built_by\n\ndef handle(data):\n    return built_by.UID\n"
    files = {"handler.py": handler, "requirements.txt": "fnhost-built-by==1.0\n"}
    one = deploy_folder(client, tmp_path / "one", "sdist-one", files, index_url=index.url, skip_folder_validation=True)
    two = deploy_folder(client, tmp_path / "two", "sdist-two", files, index_url=index.url, skip_folder_validation=True)
    assert one.call({}).get_response() == UID_BASE + one.id
    assert two.call({}).get_response() == UID_BASE + two.id


def test_zip_entries_cannot_point_out_of_the_code_directory(
    escape: tuple[LiveServer, CogniteClient], tmp_path: Path
) -> None:
    live, client = escape
    good = {"handler.py": "from pkg.mod import VALUE\n\ndef handle(data):\n    return VALUE\n",
            "pkg/__init__.py": "", "pkg/mod.py": "VALUE = 'nested ok'\n"}
    fn = client.functions.create(name="zip-good", file_id=upload(client, zip_of(good)))
    wait_deployed(fn)
    assert fn.status == "Ready", fn.error
    assert fn.call({}).get_response() == "nested ok"

    outside = live.home.resolve() / "zip-escaped.py"
    link = zip_of({**good}, symlinks={"pkg/link.py": str(outside)})
    for name, content, words in [
        ("zip-dotdot", zip_of({**good, "../zip-escaped.py": "x = 1\n"}), ".."),
        ("zip-absolute", zip_of({**good, str(outside): "x = 1\n"}), "absolute"),
        ("zip-symlink", link, "symbolic link"),
    ]:
        with pytest.raises(CogniteAPIError) as refused:  # checked before anything is written
            client.functions.create(name=name, file_id=upload(client, content))
        assert refused.value.code == 400 and words in refused.value.message, refused.value.message
    assert not outside.exists() and not (live.home.resolve().parent / "zip-escaped.py").exists()


# -- run time ------------------------------------------------------------------------------------

# the same backend, building an ordinary package (it probes nothing)
MINIMAL_BACKEND = BACKEND.replace("report = json.dumps(probe(json.load(open(\"targets.json\"))))", "report = '{}'")
assert MINIMAL_BACKEND != BACKEND


def test_a_function_cannot_read_the_server_or_another_function(
    escape: tuple[LiveServer, CogniteClient], tmp_path: Path
) -> None:
    """The server's database, keys, blobs and credentials; another function's code, its own
    environment (built for it alone) and its secrets, while it runs; the server's /proc."""
    live, client = escape
    pyproject = '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n' \
        '[project]\nname = "evilbackend"\nversion = "1.0"\n'
    victim = deploy_folder(
        client, tmp_path / "victim", "read-victim",
        {"handler.py": SNOOP, "victim-marker.txt": "victim's code", "requirements.txt": "./pkg\n",
         "pkg/pyproject.toml": pyproject, "pkg/backend.py": MINIMAL_BACKEND},
        secrets={"token": "victim-secret-value"}, skip_folder_validation=True,
    )
    envs = Path(live.env["FNHOST_ENV_DIR"])
    victim_env = sorted(envs.glob(f"req-*-f{victim.id}"))
    assert victim_env, "the victim's requirements were built for it alone"
    snoop = deploy_folder(client, tmp_path / "snoop", "read-snoop", {"handler.py": SNOOP}, secrets={"mine": "snoop"})
    running = victim.call({"case": "sleep", "seconds": 6}, wait=False)  # its process and secrets are live
    time.sleep(1)
    data = snoop_data(live, victim.id)
    data["files"] += [str(p) for p in victim_env[0].rglob("*.py")][:3]
    data["dirs"] += [str(envs), str(victim_env[0])]
    call = snoop.call(data)
    assert call.status == "Completed", call.error
    seen = call.get_response()
    text = json.dumps(seen)
    assert all(not v.startswith("OK") for v in seen["files"].values()), seen["files"]
    listed = {k: v for k, v in seen["dirs"].items() if v.startswith("OK")}
    # of the environment directory, a function sees at most the baseline it runs on
    assert all(k == str(envs) and "req-" not in v for k, v in listed.items()), listed
    assert all(not v.startswith("OK") for v in seen["serverProc"].values()), seen["serverProc"]
    assert seen["signalServer"] == "ProcessLookupError"  # not even there: a PID namespace
    assert seen["found"] == []  # no server file, nor the victim's code, anywhere it can see
    assert "victim-secret-value" not in text and "victim's code" not in text
    commands = [c for c in seen["processes"].values() if c.startswith("OK")]
    assert commands and all("bootstrap.py" in c or "bwrap" in c for c in commands), commands
    assert not any("fnhost.cli" in c or "serve" in c for c in commands)
    assert seen["writeCode"] != "OK" and seen["writeEtc"] != "OK"
    running.wait()
    assert running.status == "Completed"

@pytest.fixture(scope="module")
def attacker(escape: tuple[LiveServer, CogniteClient], tmp_path_factory: pytest.TempPathFactory) -> Any:
    _, client = escape
    return deploy_folder(client, tmp_path_factory.mktemp("attacker"), "attacker", {"handler.py": ATTACKS},
                         secrets={"mine": "attacker-secret"}, memory=0.25)


def test_no_loopback_service_private_or_host_address_while_the_api_works(
    attacker: Any, listeners: dict[str, int]
) -> None:
    services = [5432, 6379, 3306, 5672]
    own = sorted(str(a) for a in own_addresses() if not a.is_loopback)
    seen = attacker.call({
        "case": "network",
        # (127.0.0.1 at the server's own port is the API, forwarded: the client uses it)
        "direct": [["127.0.0.1", p] for p in services] + [["127.0.0.2", listeners["127.0.0.2"]]],
        # asked of the proxy, which refuses them before it connects anywhere
        "proxied": [f"127.0.0.1:{p}" for p in services]
        + [f"localhost:{services[0]}", f"127.0.0.2:{listeners['127.0.0.2']}", "169.254.169.254:80",
           "10.0.0.1:80", "192.168.0.1:80", "172.16.0.1:80", "[fd00::1]:80", "[::1]:5432",
           f"[::ffff:127.0.0.1]:{services[0]}"]
        + [f"{a}:22" if ":" not in a else f"[{a}]:22" for a in own],
        "plain": [f"127.0.0.2:{listeners['127.0.0.2']}", f"127.0.0.3:{listeners['127.0.0.3']}"],
    })
    assert seen.status == "Completed", seen.error
    out = seen.get_response()
    assert out["assets"] == "OK:0"  # the function's client reaches this server's API
    assert all(v == "ConnectionRefusedError" for v in out["direct"].values()), out["direct"]
    assert all(v.startswith("OK:HTTP/1.1 403") for v in out["proxy"].values()), out["proxy"]
    assert out["plain"][f"127.0.0.2:{listeners['127.0.0.2']}"].startswith("OK:HTTP/1.1 403")
    # and where the operator allows a destination, the proxy goes there
    allowed = out["plain"][f"127.0.0.3:{listeners['127.0.0.3']}"]
    assert allowed.startswith("OK:HTTP/1.0 200") and "allowed destination" in allowed, allowed


def test_the_seed_example_runs_with_data_and_environments_under_tmp(
    escape: tuple[LiveServer, CogniteClient], tmp_path: Path
) -> None:
    """The seed's first example: ``client.assets.list()`` imports modules the zygote never did."""
    _, client = escape

    def handle(client: Any, data: Any) -> Any:
        assets = client.assets.list(limit=5)
        return {"assetsCount": len(assets)}

    fn = client.functions.create(name="seed-under-tmp", function_handle=handle)
    wait_deployed(fn)
    assert fn.status == "Ready", fn.error
    call = fn.call({})
    assert call.status == "Completed", call.error
    assert call.get_response() == {"assetsCount": 0}


def test_a_function_cannot_write_its_own_code_or_environment(attacker: Any) -> None:
    out = attacker.call({"case": "write-own"}).get_response()
    assert out["own"] and all(not v.startswith("OK") for v in out["own"].values()), out
    assert out["tmp"] == "OK:wrote"


def test_no_ptrace_or_signal_reaches_another_function_or_the_server(
    escape: tuple[LiveServer, CogniteClient], attacker: Any, tmp_path: Path
) -> None:
    live, client = escape
    victim = deploy_folder(client, tmp_path / "victim", "signal-victim", {"handler.py": ATTACKS})
    running = victim.call({"case": "sleep", "seconds": 6}, wait=False)
    time.sleep(1)
    traced = attacker.call({"case": "ptrace"}).get_response()
    cmdlines = traced.pop("cmdlines")
    assert traced and all(v != "attached" for k, v in traced.items() if k.isdigit()), traced
    assert not any("fnhost.cli" in c or "signal-victim" in c for c in cmdlines), cmdlines
    # every process it may signal: its own sandbox's (its spare, its loopback forwarder), not
    # its function zygote (the init of its PID namespace ignores signals from inside)
    killed = attacker.call({"case": "kill-everything"})
    assert killed.status == "Completed" and killed.get_response() == "still here", killed.error
    running.wait()
    assert running.status == "Completed" and running.get_response() == "slept"
    assert live.proc is not None and live.proc.poll() is None
    # its own function goes on, network included (the forwarder it killed serves again)
    after = attacker.call({"case": "network", "direct": [], "proxied": [], "plain": []})
    assert after.status == "Completed" and after.get_response()["assets"] == "OK:0", after.error


def test_filling_tmp_ends_at_the_calls_memory(attacker: Any) -> None:
    call = attacker.call({"case": "fill-tmp", "mb": 2048})  # 8x the function's 0.25 GB
    if call.status == "Completed":
        out = call.get_response()
        assert out["error"] == "No space left on device" and out["written"] <= 256, out
    else:
        assert "out of memory" in call.error["message"], call.error
    assert attacker.call({"case": "ok"}).status == "Completed"


def test_a_fork_bomb_stays_in_its_call(attacker: Any) -> None:
    uid = UID_BASE + attacker.id
    assert attacker.call({"case": "ok"}).status == "Completed"
    before = _settled_count(uid)  # its sandbox at rest: zygotes, forwarder, a spare
    call = attacker.call({"case": "fork-bomb"})
    assert call.status == "Completed" and call.get_response()["error"] == "BlockingIOError", call.error
    assert attacker.call({"case": "ok"}).status == "Completed"
    try:
        wait_for(lambda: len(_processes_of(uid)) <= before, timeout=10, what="the bomb's processes to go")
    except AssertionError as exc:  # the count at the end of the wait, not at its start
        raise AssertionError(f"{exc} (at rest {before}, left {len(_processes_of(uid))})") from None


def _settled_count(uid: int, quiet: float = 0.5, timeout: float = 10) -> int:
    """How many live processes ``uid`` has once that number has held for ``quiet`` seconds.

    Counted at once after a call, it may be one short: the function's next spare is forked
    as the call ends, and the client can see the call Completed before the spare exists."""
    deadline = time.monotonic() + timeout
    count, since = len(_processes_of(uid)), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = len(_processes_of(uid))
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return count
    raise AssertionError(f"the processes of uid {uid} did not settle in {timeout}s (last {count})")


def test_a_call_that_will_not_exit_is_ended_with_everything_it_started(attacker: Any) -> None:
    marker = "31337.5"
    call = attacker.call({"case": "linger", "marker": marker})
    call.wait()
    assert call.status == "Timeout", call.error
    wait_for(lambda: not [p for p in _commands() if p == f"sleep {marker}"], timeout=10, what="the daemon to go")
    assert attacker.call({"case": "ok"}).status == "Completed"


def _commands() -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
            except OSError:
                continue
    return out


def _processes_of(uid: int) -> list[str]:
    """Commands of the live processes running as ``uid``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid and fields["State"].split()[0] != "Z":
            found.append(command)
    return found


# -- policies other than the default, on the executor itself ---------------------------------------

PYTHON = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python")


class _Env:
    hash = "escape-env"
    python = PYTHON
    site_dirs: list[str] = []


@pytest.mark.parametrize("mode", ["api-only", "none"])
def test_stricter_policies_leave_only_the_api_or_nothing(mode: str, tmp_path: Path) -> None:
    from fnhost.run.abc import CallJob
    from fnhost.run.local import LocalExecutor
    from fnhost.run.network import NetworkPolicy

    api = tmp_path / "api.sock"  # stands for the server's API socket: answers any request
    import socketserver

    class Api(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.rfile.readline()
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\napi")

    srv = socketserver.ThreadingUnixStreamServer(str(api), Api)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    os.chmod(api, 0o666)
    code = tmp_path / "code" / "61"
    code.mkdir(parents=True)
    (code / "handler.py").write_text(textwrap.dedent("""\
        import os, urllib.request
        def handle(data):
            out = {"proxy": os.environ.get("HTTPS_PROXY")}
            try:
                out["api"] = urllib.request.urlopen("http://127.0.0.1:8000/", timeout=5).read().decode()
            except Exception as exc:
                out["api"] = type(exc).__name__
            return out
    """))
    ex = LocalExecutor(isolation="bwrap", network=NetworkPolicy(mode), api_socket=str(api))  # type: ignore[arg-type]
    ex.start()
    try:
        assert ex.prepare(_Env(), code, "handler.py").ok
        out = ex.submit(CallJob(call_id=1, function_id=61, project="p", env=_Env(), code_dir=code,
                                function_path="handler.py", data={})).result(60)
    finally:
        ex.stop()
        srv.shutdown()
        srv.server_close()
    assert out.status == "Completed", out.error
    body = json.loads(out.response or "{}")
    assert body["proxy"] is None  # no egress at all under either
    assert body["api"] == ("api" if mode == "api-only" else "URLError")


# -- Ray nodes ---------------------------------------------------------------------------------------

def test_ray_nodes_isolate_calls_or_refuse_them(ray_cluster: Any, tmp_path: Path) -> None:
    from fnhost.run.abc import CallJob
    from fnhost.run.ray import NodeSettings, RayExecutor

    secret = tmp_path / "host-secret.txt"
    secret.write_text("the node's own file")
    code = tmp_path / "code" / "71"
    code.mkdir(parents=True)
    (code / "handler.py").write_text(textwrap.dedent("""\
        import os, socket
        def handle(data):
            out = {"uid": os.getuid()}
            try:
                out["read"] = open(data["path"]).read()
            except OSError as exc:
                out["read"] = type(exc).__name__
            s = socket.socket()
            s.settimeout(3)
            try:
                s.connect(("127.0.0.1", 5432))
                out["postgres"] = "open"
            except OSError as exc:
                out["postgres"] = type(exc).__name__
            return out
    """))

    def call(node: NodeSettings | None) -> Any:
        ex = RayExecutor(ray_cluster.address, node=node)
        ex.start()
        try:
            return ex.submit(CallJob(call_id=1, function_id=71, project="p", env=_Env(), code_dir=code,
                                     function_path="handler.py", data={"path": str(secret)})).result(120)
        finally:
            ex.stop()

    isolated = call(None)  # the default: the node isolates as a server would
    assert isolated.status == "Completed", isolated.error
    body = json.loads(isolated.response or "{}")
    assert body == {"uid": DEFAULT_UID_BASE + 71, "read": "FileNotFoundError", "postgres": "ConnectionRefusedError"}

    refused = call(NodeSettings(isolation="none"))
    assert refused.status == "Failed"
    assert "cannot isolate function code" in refused.error["message"], refused.error
    assert "FNHOST_RAY_ALLOW_UNISOLATED" in refused.error["message"]

    allowed = call(NodeSettings(isolation="none", allow_unisolated=True))  # the control
    assert json.loads(allowed.response or "{}")["read"] == "the node's own file"
