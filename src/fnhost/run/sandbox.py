"""Isolation of function code from the server and from other functions (local executor).

Three mechanisms, best first (``docs/isolation.md`` says what each protects)::

    bwrap   each function's zygote runs in its own bubblewrap sandbox: new mount, PID, IPC,
            UTS and cgroup namespaces; the file system holds only the system directories
            (read-only), the function's interpreter and environment (read-only), its code
            (read-only, at /function) and a private /tmp. The server's data directory is
            not there at all. Processes run as a per-function unprivileged uid.
    uid     no namespaces from bubblewrap: processes run as the per-function uid and the
            data directory is protected by file modes only.
    none    calls run as the server's user, with the server's files in reach.

With ``bwrap`` or ``uid``, each call also gets a private /tmp and /dev/shm (a tmpfs in a
mount namespace of its own, made through an unprivileged user namespace) when the host
allows user namespaces.

The per-function uid is ``uid_base + function_id % uid_count`` (the function id is the
name of its code directory), so two functions share a uid only when their ids are
``uid_count`` apart; namespaces keep them apart even then.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fnhost.run import BOOTSTRAP, PROTOCOL
from fnhost.run.network import (
    DEFAULT_API_PORT,
    SANDBOX_API_SOCKET,
    SANDBOX_EGRESS_SOCKET,
    SANDBOX_PROXY_PORT,
    SANDBOX_RUN_DIR,
    NetworkPolicy,
)

log = logging.getLogger("fnhost.run")

Mechanism = Literal["bwrap", "uid", "none"]
SANDBOX_CODE_DIR = "/function"
SANDBOX_BOOTSTRAP = "/fnhost/bootstrap.py"
SANDBOX_PROTOCOL = "/fnhost/protocol.py"
# system directories every sandbox sees read-only (symlinks, as on merged-/usr systems, are
# recreated as symlinks)
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
PROBE_TIMEOUT_S = 20.0


BUILD_DIR = "/build"
# a shared environment zygote's view of every function's code and sandbox sockets
SANDBOX_CODE_ROOT = "/fnhost/code"
SANDBOX_SOCKET_DIR = "/fnhost/sockets"
# what a shared environment zygote (root in its sandbox, running no function code) keeps
# to build each function's namespaces and mounts and then become its uid
SHARED_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SYS_ADMIN", "CAP_NET_ADMIN")


class IsolationUnavailable(Exception):
    """The isolation asked for cannot be had on this host."""


@dataclass(frozen=True)
class Sockets:
    """The host's Unix sockets a sandbox reaches out through (``run/network.py``)."""

    api: str | None = None
    egress: str | None = None


@dataclass
class Isolation:
    mechanism: Mechanism = "none"
    uid_base: int = 200_000
    uid_count: int = 65_536
    # a tmpfs per call over /tmp and /dev/shm (needs unprivileged user namespaces)
    private_tmp: bool = False
    # paths no sandbox may show, even where a system directory holds them (the data dir…)
    hidden: list[str] = field(default_factory=list)
    bwrap: str = "/usr/bin/bwrap"
    reason: str = ""  # why a lesser mechanism is in force (for the start-up log line)
    # a network namespace per sandbox (bwrap only), reaching out only through run/network.py
    network: bool = False
    policy: NetworkPolicy = field(default_factory=NetworkPolicy)
    # a shared environment zygote can build each function's sandbox after the fork (probed)
    shared_ok: bool = False
    # the loopback port a sandbox's ``client`` reaches the API on (its forwarder listens there)
    api_port: int = DEFAULT_API_PORT

    @property
    def dedicated(self) -> bool:
        """Whether each function needs zygotes of its own (they run as its uid)."""
        return self.mechanism != "none"

    @property
    def drops_uid(self) -> bool:
        return self.mechanism != "none" and os.geteuid() == 0

    def describe(self) -> str:
        if self.mechanism == "none":
            text = "none: calls run as the server's user and can read its files"
        elif self.mechanism == "bwrap":
            who = (
                f"per-function uids {self.uid_base}+" if self.drops_uid else "the server's uid"
            )
            text = (
                "bwrap: a bubblewrap sandbox per function (mount, pid, ipc, uts, cgroup "
                f"namespaces; code read-only at {SANDBOX_CODE_DIR}), running as {who}"
            )
        else:
            text = f"uid: per-function uids {self.uid_base}+, file modes only (no namespaces)"
        if self.shares:
            text += "; one zygote per environment, each function's sandbox built after the fork"
        text += "; private /tmp per call" if self.private_tmp else "; /tmp shared per function"
        if self.network:
            text += f"; a network namespace per sandbox reaching {self.policy.describe()}"
        else:
            text += "; no network isolation (functions reach what the host reaches)"
        if self.reason:
            text += f" ({self.reason})"
        return text

    def uid_for(self, code_dir: str) -> int:
        # the server names code dirs by function id; a Ray node by "<function id>-<digest>"
        name = os.path.basename(code_dir.rstrip("/")).split("-", 1)[0]
        n = int(name) if name.isdigit() else zlib.crc32(code_dir.encode())
        return self.uid_of(n)

    def uid_of(self, function_id: int) -> int:
        """The uid function ``function_id`` runs (and builds) as."""
        return self.uid_base + function_id % self.uid_count

    def code_dir_inside(self, code_dir: str) -> str:
        return SANDBOX_CODE_DIR if self.mechanism == "bwrap" else code_dir

    def bootstrap_inside(self) -> str:
        return SANDBOX_BOOTSTRAP if self.mechanism == "bwrap" else str(BOOTSTRAP)

    def environ(self, base: dict[str, str], policy: NetworkPolicy | None = None) -> dict[str, str]:
        env = dict(base)
        if self.dedicated:
            # the server's HOME is not the function's (and is not readable by its uid)
            env["HOME"] = "/tmp"
            env.pop("TMPDIR", None)
        for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
            env.pop(key, None)
            env.pop(key.lower(), None)
        if self.network and (policy or self.policy).egress:
            proxy = f"http://127.0.0.1:{SANDBOX_PROXY_PORT}"
            for key in ("HTTP_PROXY", "HTTPS_PROXY"):
                env[key] = env[key.lower()] = proxy
            env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
        return env

    def api_url_inside(self, public_url: str) -> str:
        """The URL a sandbox's ``client`` uses for the API (its own loopback, forwarded out)."""
        if not self.network:
            return public_url
        return f"http://127.0.0.1:{self.api_port}"

    def forwards(self, api_socket: bool, egress_socket: bool) -> list[str]:
        """The forwarder's ``PORT=SOCKET`` arguments for a sandbox with these sockets."""
        out = []
        if api_socket:
            out.append(f"{self.api_port}={SANDBOX_API_SOCKET}")
        if egress_socket:
            out.append(f"{SANDBOX_PROXY_PORT}={SANDBOX_EGRESS_SOCKET}")
        return out

    # -- commands ---------------------------------------------------------------------------
    def command(
        self,
        python: str,
        args: list[str],
        *,
        code_dir: str,
        read_only: Iterable[str] = (),
        sockets: Sockets | None = None,
        uid: int | None = None,
    ) -> list[str]:
        """The argv that runs ``python -I bootstrap.py *args`` for the function at ``code_dir``.

        ``read_only`` are the function's interpreter and environment directories; ``sockets``
        the host's API and egress sockets its network namespace reaches out through.
        """
        tail = [python, "-I", self.bootstrap_inside(), *args]
        if self.drops_uid:
            uid = self.uid_for(code_dir) if uid is None else uid
            tail += ["--drop-uid", str(uid), "--drop-gid", str(uid)]
        if self.mechanism != "bwrap":
            return tail
        sockets = sockets or Sockets()
        if self.network:
            for forward in self.forwards(sockets.api is not None, sockets.egress is not None):
                tail += ["--forward", forward]
        return [*self.bwrap_args(code_dir, read_only, sockets=sockets), "--", *tail]

    @property
    def shares(self) -> bool:
        """Whether functions of one environment share one zygote, each sandboxed after the
        fork: bubblewrap as root, where the probe showed it works."""
        return self.mechanism == "bwrap" and self.drops_uid and self.shared_ok

    def shared_command(
        self,
        python: str,
        args: list[str],
        *,
        read_only: Iterable[str],
        code_root: str,
        socket_dir: str | None,
        api_socket: str | None,
    ) -> list[str]:
        """The argv of a shared environment zygote: ``read_only`` holds the interpreter and
        the environment directory (all functions' layers, each function binds back its own);
        ``code_root`` every function's code, at /fnhost/code; ``socket_dir`` the egress
        sockets, at /fnhost/sockets. It stays root, runs no function code, and forks each
        function's zygote, which makes that function's sandbox (``bootstrap.enter_function_sandbox``)."""
        sockets = Sockets(api=api_socket if self.network else None)
        argv = self.bwrap_args(None, read_only, sockets=sockets, shared=True)
        extra = ["--ro-bind", code_root, SANDBOX_CODE_ROOT, "--dir", SANDBOX_CODE_DIR]
        if socket_dir is not None:
            extra += ["--ro-bind", socket_dir, SANDBOX_SOCKET_DIR]
        argv[-2:-2] = extra  # before the closing --chdir
        return [*argv, "--", python, "-I", self.bootstrap_inside(), *args, "--shared"]

    def build_command(
        self,
        python: str,
        command: list[str],
        *,
        uid: int,
        work_dir: str,
        read_only: Iterable[str],
        sockets: Sockets | None = None,
        extra_ro: dict[str, str] | None = None,
        chdir: str = BUILD_DIR,
    ) -> list[str]:
        """The argv of one build step run as the function's uid in a sandbox of its own.

        The sandbox sees the system directories, the interpreter (``read_only``), the files
        ``extra_ro`` maps (host path → path inside; uv itself), and ``work_dir`` writable at
        ``/build`` (the code's copy, the install target, a cache of its own); nothing of the
        server's. ``command`` is run by ``bootstrap.py exec`` (after the uid is dropped and the
        loopback forwarder started), in ``chdir``. Without bubblewrap, the same runs on the
        host's file system (``uid``: as the function's uid).
        """
        tail = [python, "-I", "-S", self.bootstrap_inside(), "exec"]
        if self.drops_uid:
            tail += ["--drop-uid", str(uid), "--drop-gid", str(uid)]
        elif self.mechanism == "none":
            return list(command)  # nothing to set up first
        sockets = sockets or Sockets()
        if self.mechanism != "bwrap":
            return [*tail, "--", *command]
        if self.network:
            for forward in self.forwards(False, sockets.egress is not None):
                tail += ["--forward", forward]
        argv = self.bwrap_args(None, read_only, sockets=sockets, writable={work_dir: BUILD_DIR}, chdir=chdir)
        for host_path, inside in (extra_ro or {}).items():
            argv[-2:-2] = ["--ro-bind", host_path, inside]  # before the closing --chdir
        return [*argv, "--", *tail, "--", *command]

    def bwrap_args(
        self,
        code_dir: str | None,
        read_only: Iterable[str],
        *,
        sockets: Sockets | None = None,
        writable: dict[str, str] | None = None,
        chdir: str = "/",
        shared: bool = False,
    ) -> list[str]:
        """bubblewrap's arguments; ``writable`` maps host directories to where the sandbox
        sees them read-write. The last two are ``--chdir`` and ``chdir``. ``shared``: the
        sandbox of a shared environment zygote, which builds each function's own after the
        fork (so it keeps the capabilities for that, and the host's network namespace, which
        no function keeps)."""
        argv = [
            self.bwrap,
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session",
        ]
        if self.network and not shared:
            argv += ["--unshare-net"]
        if os.geteuid() == 0:
            # root in the sandbox keeps only what it needs to become the function's uid
            caps = SHARED_CAPS if shared else ("CAP_SETUID", "CAP_SETGID")
            argv += ["--cap-drop", "ALL"] + [a for cap in caps for a in ("--cap-add", cap)]
        else:
            argv += ["--unshare-user"]
        bound: list[str] = []
        for d in SYSTEM_DIRS:
            if os.path.islink(d):
                argv += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                argv += ["--ro-bind", d, d]
                bound.append(d)
        resolv = os.path.realpath("/etc/resolv.conf")
        if os.path.exists(resolv) and not _under(resolv, bound):
            argv += ["--ro-bind", resolv, resolv]
        argv += [
            "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--tmpfs", "/tmp",
            "--perms", "1777", "--tmpfs", "/dev/shm",
            "--dir", "/var", "--symlink", "../tmp", "/var/tmp",
        ]
        # what a system directory would show of the server's own files is covered up first;
        # the function's own environment is bound afterwards, on top
        for hidden in self.hidden:
            if _under(hidden, bound) and os.path.isdir(hidden):
                argv += ["--tmpfs", hidden]
        made: set[str] = set()
        for path in _outermost(p for p in read_only if not _under(p, bound)):
            # parents bubblewrap would make copy the host's modes (/root is 0700): make them
            # traversable, since the function's uid must reach its interpreter
            for parent in reversed(Path(path).parents):
                d = str(parent)
                if d != "/" and d not in made and not _under(d, bound):
                    argv += ["--perms", "0755", "--dir", d]
                    made.add(d)
            argv += ["--ro-bind", path, path]
            for hidden in self.hidden:  # say, a data dir inside the server's own venv
                if hidden != path and _under(hidden, [path]) and os.path.isdir(hidden):
                    argv += ["--tmpfs", hidden]
        # bubblewrap would make the parent 0700; the function's uid runs what is in it
        argv += ["--perms", "0755", "--dir", os.path.dirname(SANDBOX_BOOTSTRAP)]
        argv += ["--ro-bind", str(BOOTSTRAP), SANDBOX_BOOTSTRAP, "--ro-bind", str(PROTOCOL), SANDBOX_PROTOCOL]
        if code_dir is not None:
            argv += ["--ro-bind", code_dir, SANDBOX_CODE_DIR]
        if self.network and sockets is not None and (sockets.api or sockets.egress):
            # bubblewrap would make the parents 0700; the function's uid must pass through
            argv += ["--perms", "0755", "--dir", "/run", "--perms", "0755", "--dir", SANDBOX_RUN_DIR]
            # connect() needs no write access to the file system a socket is on
            if sockets.api is not None:
                argv += ["--ro-bind", sockets.api, SANDBOX_API_SOCKET]
            if sockets.egress is not None:
                argv += ["--ro-bind", sockets.egress, SANDBOX_EGRESS_SOCKET]
        for host_dir, inside in (writable or {}).items():
            argv += ["--bind", host_dir, inside]
        argv += ["--chdir", chdir]
        return argv

    # -- preparing the host side --------------------------------------------------------------
    def own_code_dir(self, code_dir: str) -> None:
        """Give the function's uid its code dir (mode 0500): other uids cannot enter it."""
        if not self.drops_uid:
            return
        uid = self.uid_for(code_dir)
        os.chown(code_dir, uid, uid)
        os.chmod(code_dir, 0o500)

    def check_reachable(self, paths: Iterable[str]) -> None:
        """For ``uid``: the function's uid must be able to reach its interpreter and code."""
        if self.mechanism != "uid":
            return
        for path in paths:
            p = Path(path)
            for parent in [*reversed(p.parents), p]:
                try:
                    mode = parent.stat().st_mode
                except OSError:
                    break
                if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH and str(parent) != path:
                    raise IsolationUnavailable(
                        f"isolation 'uid' runs functions as another user, who cannot enter "
                        f"{parent} (mode {stat.S_IMODE(mode):04o}) to reach {path}. Install "
                        "bubblewrap (isolation 'bwrap' needs no such access), or put Python "
                        "and the environments where every user can read them."
                    )


def interpreter_dirs(python: str, site_dirs: Iterable[str]) -> list[str]:
    """Directories a sandbox must show read-only for ``python`` (a venv's or a system one)."""
    out = subprocess.run(
        [
            python, "-I", "-c",
            "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, "
            "sys.base_exec_prefix, *sys.path]))",
        ],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    found = [p for p in json.loads(out) if p and os.path.isabs(p)]
    found += [os.path.dirname(os.path.realpath(python)), os.path.dirname(os.path.abspath(python))]
    found += [str(d) for d in site_dirs]
    existing = []
    for p in found:
        # a zip on sys.path (python311.zip) may not exist; a file's directory is enough
        while p and not os.path.exists(p):
            p = os.path.dirname(p)
        if p and p != "/":
            existing.append(os.path.abspath(p))
    return _outermost(existing)


class HostIsolation:
    """The isolation this host supports, detected once, on first use (detection starts probe
    processes). One is shared by the executor and the builder: calls and builds are
    isolated alike."""

    def __init__(self, requested: str, **options: Any) -> None:
        self.requested = requested
        self.options = options
        self._value: Isolation | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Isolation:
        with self._lock:
            if self._value is None:
                self._value = detect(self.requested, **self.options)
            return self._value


def detect(
    requested: str,
    *,
    uid_base: int = 200_000,
    uid_count: int = 65_536,
    hidden: Iterable[str] = (),
    policy: NetworkPolicy | None = None,
    api_port: int = DEFAULT_API_PORT,
) -> Isolation:
    """The best mechanism this host supports (``auto``), or the one asked for, checked.

    With bubblewrap, each sandbox also gets a network namespace of its own, with ``policy``
    (``run/network.py``); where the host refuses one, sandboxes share the host's network
    and the reason is logged.
    """
    hidden_paths = [os.path.abspath(str(h)) for h in hidden]
    policy = policy or NetworkPolicy()
    base = Isolation("none", uid_base, uid_count, hidden=hidden_paths, policy=policy, api_port=api_port)
    if requested == "none":
        return base
    if requested not in ("auto", "bwrap", "uid"):
        raise IsolationUnavailable(f"Unknown isolation {requested!r}: auto, bwrap, uid or none.")
    reasons: list[str] = []
    if requested in ("auto", "bwrap"):
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            reasons.append("bubblewrap (bwrap) is not installed")
        else:
            candidate = Isolation(
                "bwrap", uid_base, uid_count, hidden=hidden_paths, bwrap=bwrap, network=True,
                policy=policy, api_port=api_port,
            )
            ok, private_tmp, why = _probe(candidate)
            no_net = ""
            if not ok:  # a host that refuses network namespaces may still allow the rest
                no_net = why
                candidate.network = False
                ok, private_tmp, why = _probe(candidate)
            if ok:
                candidate.private_tmp = private_tmp
                notes = [f"no network namespace: {no_net}"] if no_net else []
                if not private_tmp:
                    notes.append(f"no user namespaces for a per-call /tmp: {why}")
                if candidate.drops_uid:
                    candidate.shared_ok, why_not = _probe_shared(candidate)
                    if not candidate.shared_ok:
                        notes.append(f"an interpreter per function (no sandbox after the fork: {why_not})")
                candidate.reason = "; ".join(notes)
                return candidate
            reasons.append(f"bubblewrap does not work here: {why}")
        if requested == "bwrap":
            raise IsolationUnavailable("FNHOST_ISOLATION=bwrap: " + "; ".join(reasons))
    if os.geteuid() != 0:
        if requested == "uid":
            raise IsolationUnavailable("FNHOST_ISOLATION=uid needs the server to run as root.")
        base.reason = "; ".join([*reasons, "not root, so calls cannot run as another user"])
        return base
    candidate = Isolation("uid", uid_base, uid_count, hidden=hidden_paths, policy=policy, api_port=api_port)
    ok, private_tmp, why = _probe(candidate)
    if not ok:
        raise IsolationUnavailable(f"isolation 'uid' does not work here: {why}")
    candidate.private_tmp = private_tmp
    candidate.reason = "; ".join(reasons + ([] if private_tmp else [f"no per-call /tmp: {why}"]))
    return candidate


def _probe(isolation: Isolation) -> tuple[bool, bool, str]:
    """Run the bootstrap's probe the way a zygote would start: (works, private /tmp, why not)."""
    python = os.path.realpath(sys.executable)
    try:
        if isolation.mechanism == "bwrap":
            dirs = interpreter_dirs(python, ())
            argv = [*isolation.bwrap_args(None, dirs), "--", python, "-I", "-S", SANDBOX_BOOTSTRAP, "probe"]
        else:
            argv = [python, "-I", "-S", str(BOOTSTRAP), "probe"]
        if isolation.drops_uid:
            argv += ["--drop-uid", str(isolation.uid_base), "--drop-gid", str(isolation.uid_base)]
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env={"PATH": "/usr/bin:/bin"}
        )
    except (OSError, subprocess.SubprocessError, ValueError, IsolationUnavailable) as exc:
        return False, False, str(exc)
    result: dict[str, Any] = {}
    for line in reversed(proc.stdout.splitlines()):
        try:
            result = json.loads(line)
            break
        except ValueError:
            continue
    if not result.get("ok"):
        why = result.get("message") or (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return False, False, str(why)
    return True, bool(result.get("privateTmp")), str(result.get("tmpMessage") or "")


def _probe_shared(isolation: Isolation) -> tuple[bool, str]:
    """Whether a shared zygote can build a function's sandbox after the fork here."""
    python = os.path.realpath(sys.executable)
    try:
        argv = isolation.bwrap_args(None, interpreter_dirs(python, ()), shared=True)
        argv[-2:-2] = ["--dir", SANDBOX_CODE_DIR]
        argv += ["--", python, "-I", "-S", SANDBOX_BOOTSTRAP, "probe", "--shared-uid", str(isolation.uid_base)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env={"PATH": "/usr/bin:/bin"})
        result = json.loads((proc.stdout.strip().splitlines() or ["{}"])[-1])
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return False, str(exc)
    if result.get("ok"):
        return True, ""
    return False, str(result.get("message") or (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1])


def _under(path: str, roots: Iterable[str]) -> bool:
    path = os.path.abspath(path)
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _outermost(paths: Iterable[str]) -> list[str]:
    """The paths without those inside another one of them, sorted."""
    kept: list[str] = []
    for p in sorted({os.path.abspath(p) for p in paths}):
        if not _under(p, kept):
            kept.append(p)
    return kept
