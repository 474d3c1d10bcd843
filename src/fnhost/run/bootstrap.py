"""The code that runs *inside* a function's Python environment.

This file is executed by the environment's interpreter as a script, so it must import
nothing from ``fnhost`` and only the standard library at module level (``cognite.client``
is imported where a mode needs it). Modes::

    python bootstrap.py check --code-dir DIR --function-path handler.py
        import the handler as the service will; print one JSON line:
        {"ok": bool, "message": str, "trace": str, "forkSafe": bool, "args": [...]}

    python -I bootstrap.py zygote --control-fd N [--site-dir D ...]
        the environment's zygote: imports ``cognite.client`` once, then serves requests on a
        SOCK_SEQPACKET socket (one JSON message per packet, file descriptors passed with
        SCM_RIGHTS; the messages are ``protocol.py``'s, loaded from beside this file).
        ``FunctionOp`` with one fd forks a *function zygote* that imports the handler and
        then forks one child per call (``RunOp``).

    python -I bootstrap.py run --job-fd J --log-fd L --result-fd R [--site-dir D ...]
        one call in a fresh interpreter, for handlers that cannot be forked safely.

    python -I -S bootstrap.py probe [--drop-uid U --drop-gid G]
        check that this host can isolate calls as the server would (``run/sandbox.py``);
        print one JSON line: {"ok": bool, "message": str, "privateTmp": bool, "tmpMessage": str}

A call's child gets three fds from the server: a memfd with the job (JSON), the write end
of a pipe that becomes its stdout and stderr, and a memfd for the result (``OK\n`` + the
response JSON, or ``ERR\n`` + ``{"message", "trace"}``); then one write-only fd per cgroup
it must join (``cgroup.procs``, opened by the server: writing ``0`` moves the writer).

Isolation (``run/sandbox.py``): with ``--drop-uid``, the process gives up root for the
function's uid before anything of the function's is read. A function zygote asked for
``privateTmp`` enters a user namespace of its own, so that each call can mount a private
tmpfs over /tmp and /dev/shm in a mount namespace of its own, and then drop every capability.
"""

from __future__ import annotations
import __future__

import argparse
import contextlib
import ctypes
import gc
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import json
import os
import sys
import threading
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

ALLOWED_ARGS = ("client", "data", "secrets", "function_call_info")


# a sandbox's files are not ours to add bytecode caches to (its /fnhost is the server's)
sys.dont_write_bytecode = True


def _load_protocol() -> ModuleType:
    """``protocol.py`` from beside this file: the one definition of what the server and this
    process say (fnhost itself is not importable in a function's environment)."""
    name = "fnhost_protocol"
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "protocol.py")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before it runs: its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


P = _load_protocol()


class HandlerImportError(Exception):
    def __init__(self, message: str, trace: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.trace = trace


class _LazyAnnotationsLoader(importlib.machinery.SourceFileLoader):
    """Compiles the handler module as if it began with ``from __future__ import annotations``.

    Handle-mode zips hold only the function's own source, so annotations such as
    ``client: CogniteClient | None`` name things that were never imported; evaluated
    eagerly they raise NameError at import. Lazy annotations make them harmless strings.
    """

    def source_to_code(self, data: Any, path: Any, *, _optimize: int = -1) -> Any:  # type: ignore[override]
        return compile(
            data, path, "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True, optimize=_optimize
        )


def module_name(function_path: str) -> str:
    return function_path[: -len(".py")].replace("/", ".").replace("\\", ".")


def import_handler(code_dir: str, function_path: str) -> ModuleType:
    """Import the handler as a dotted module with the code root first on ``sys.path``."""
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    name = module_name(function_path)
    path = os.path.join(code_dir, function_path)
    if not os.path.isfile(path):
        raise HandlerImportError(f"The function file {function_path!r} does not exist in the code.")
    # Import parent packages normally (relative imports inside packages keep working), then
    # the handler module itself through the lazy-annotations loader.
    parent, _, _ = name.rpartition(".")
    try:
        if parent:
            importlib.import_module(parent)
        loader = _LazyAnnotationsLoader(name, path)
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
        if spec is None:
            raise HandlerImportError(f"Cannot load {function_path!r}.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loader.exec_module(module)
    except HandlerImportError:
        raise
    except SyntaxError as exc:
        raise HandlerImportError(
            f"{function_path} has a syntax error: {exc.msg} (line {exc.lineno}).", traceback.format_exc()
        ) from None
    except BaseException as exc:
        raise HandlerImportError(
            f"Importing {function_path} failed: {type(exc).__name__}: {exc}", traceback.format_exc()
        ) from None
    return module


def handle_of(module: ModuleType, function_path: str) -> tuple[Any, list[str]]:
    """The ``handle`` callable and the allowed argument names it declares."""
    handle = getattr(module, "handle", None)
    if handle is None:
        raise HandlerImportError(f"{function_path} does not define a function named 'handle'.")
    if not callable(handle):
        raise HandlerImportError(f"'handle' in {function_path} is not callable.")
    try:
        params = inspect.signature(handle).parameters
    except (TypeError, ValueError):
        return handle, []
    names = [
        p.name
        for p in params.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    bad = [n for n in names if n not in ALLOWED_ARGS]
    if bad:
        raise HandlerImportError(
            f"handle() in {function_path} has argument(s) {bad}; only {list(ALLOWED_ARGS)} are allowed."
        )
    return handle, names


def fork_safe() -> bool:
    """A process may be forked safely only while it runs a single thread."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return threading.active_count() == 1


# -- isolation ---------------------------------------------------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x04000000, 0x08000000, 0x20000000, 0x40000000
PR_SET_CHILD_SUBREAPER = 36
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    0x1, 0x2, 0x4, 0x8, 0x20, 0x1000, 0x4000, 0x40000
)
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_libc: Any = None


def _lib() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _ok(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def drop_privileges(uid: int, gid: int) -> None:
    """Become the function's uid for good: no groups, no capabilities, no way back."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError(f"could not become uid {uid}")
    libc = _lib()
    _ok(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    # changing uid made the process undumpable; stay so (no process of the same uid may
    # ptrace it). The function zygote turns it on just long enough to write its uid_map.
    _ok(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "dumpable")


def enter_user_namespace() -> None:
    """Function zygote: a user namespace (same uid) whose capabilities allow per-call mounts."""
    uid, gid = os.geteuid(), os.getegid()
    libc = _lib()
    # /proc/self/uid_map is writable only by a dumpable process (its files are then ours)
    _ok(libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")
    _ok(libc.unshare(CLONE_NEWUSER), "unshare(user namespace)")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    _ok(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "dumpable")


SANDBOX_CODE_DIR = "/function"
PRIVATE_TMP_DIRS = ("/tmp", "/dev/shm")
O_PATH = getattr(os, "O_PATH", 0o10000000)
# what lives under /tmp and must stay visible in each call: the interpreter, environment and
# code (set by the function zygote; computed on first use otherwise)
_keep_paths: list[str] | None = None


def paths_under_tmp(extra: tuple[str, ...] = ()) -> list[str]:
    """This interpreter's own directories (and ``extra``) that a tmpfs on /tmp would hide."""
    candidates = [*sys.path, sys.prefix, sys.base_prefix, sys.exec_prefix, *extra]
    candidates += [os.path.dirname(os.path.realpath(sys.executable)), os.path.dirname(os.path.abspath(__file__))]
    found: list[str] = []
    for p in candidates:
        if not p:
            continue
        real = os.path.realpath(p)
        while real and not os.path.exists(real):  # a zip on sys.path may not exist
            real = os.path.dirname(real)
        if any(real == d or real.startswith(d + "/") for d in PRIVATE_TMP_DIRS) and real not in PRIVATE_TMP_DIRS:
            found.append(real)
    outermost: list[str] = []
    for p in sorted(set(found)):
        if not any(p.startswith(q + "/") for q in outermost):
            outermost.append(p)
    return outermost


def private_tmp(size_bytes: int) -> None:
    """Call process: fresh tmpfs on /tmp and /dev/shm, then no capabilities at all.

    Whatever of the function's own lives under /tmp (its environment, when ``FNHOST_HOME``
    or ``FNHOST_ENV_DIR`` is there) is bound again on top of the new tmpfs from a descriptor
    opened before it, so a call still imports what its zygote had not imported yet.
    """
    global _keep_paths
    libc = _lib()
    if _keep_paths is None:
        _keep_paths = paths_under_tmp()
    _ok(libc.unshare(CLONE_NEWNS), "unshare(mount namespace)")
    _ok(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")
    # opened in the new namespace (a bind's source must be a mount of the caller's own)
    keep = [(p, os.open(p, O_PATH | os.O_CLOEXEC)) for p in _keep_paths]
    options = f"size={max(size_bytes, 1 << 20)},mode=1777".encode()
    for target in (b"/tmp", b"/dev/shm"):
        if os.path.isdir(target):
            _ok(libc.mount(b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV, options), f"mount {target!r}")
    for path, fd in keep:
        os.makedirs(path, exist_ok=True)
        source = f"/proc/self/fd/{fd}".encode()
        _ok(libc.mount(source, path.encode(), None, MS_BIND | MS_REC, None), f"keep {path}")
        # read-only: the call may not change its own environment or code (the flags the
        # mount has must be repeated, or a user namespace may not remount it)
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | _mount_flags(path)
        _ok(libc.mount(None, path.encode(), None, flags, None), f"keep {path} read-only")
        os.close(fd)
    drop_capabilities()


def _bind(fd: int, target: str, *, read_only: bool = True) -> None:
    """Bind what ``fd`` (O_PATH, opened in this mount namespace) names onto ``target``."""
    libc = _lib()
    source = f"/proc/self/fd/{fd}".encode()
    _ok(libc.mount(source, target.encode(), None, MS_BIND | MS_REC, None), f"bind {target}")
    if read_only:
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | _mount_flags(target)
        _ok(libc.mount(None, target.encode(), None, flags, None), f"{target} read-only")


def _loopback_up() -> None:
    """A new network namespace's loopback starts down; 127.0.0.1 and ::1 come with it up."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s, siocgifflags, request))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh14x", b"lo", flags | iff_up))


def enter_function_sandbox(sandbox: Any) -> None:
    """In a fork of a *shared* environment zygote, still root: make this function's sandbox.

    Its own mount, IPC, UTS, PID (and network) namespaces; everything of other functions'
    covered by empty tmpfs; its code at /function, its environment and sockets bound back
    on top read-only; its loopback up. Returns in a fork that is pid 1 of the new PID
    namespace, with /proc of it, as the function's uid with no capabilities: nothing of the
    function's has been read yet. (The process that called this one exits.)
    """
    libc = _lib()
    flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID | (CLONE_NEWNET if sandbox.network else 0)
    _ok(libc.unshare(flags), "unshare(the function's namespaces)")
    _ok(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")
    # opened now, in the new mount namespace (a bind's source must be a mount of the
    # caller's own), and before anything covers them
    code = os.open(sandbox.code_dir, O_PATH | os.O_CLOEXEC)
    keep = [(p, os.open(p, O_PATH | os.O_CLOEXEC)) for p in sandbox.keep]
    sockets = [(inside, os.open(outside, O_PATH | os.O_CLOEXEC)) for inside, outside in sandbox.sockets.items()]
    socket_dirs = {os.path.dirname(inside) for inside, _ in sockets}
    for path in socket_dirs:
        os.makedirs(path, exist_ok=True)
    for path in sorted({*sandbox.hide, *socket_dirs}):
        if os.path.isdir(path):
            _ok(libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755,size=64k"), f"hide {path}")
    _bind(code, SANDBOX_CODE_DIR)
    for path, fd in keep:
        os.makedirs(path, exist_ok=True)
        _bind(fd, path)
    for inside, fd in sockets:
        with open(inside, "w"):
            pass  # a file to mount the socket on
        _bind(fd, inside)  # connect() needs no write access to the mount
    for fd in [code, *(fd for _, fd in keep), *(fd for _, fd in sockets)]:
        os.close(fd)
    if sandbox.network:
        _loopback_up()
    if os.fork():
        os._exit(0)  # the door into the new PID namespace; its first process carries on
    _ok(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc")
    drop_privileges(sandbox.uid, sandbox.uid)


def _mount_flags(path: str) -> int:
    """The per-mount flags of the mount ``path`` is on, as ``mount(2)`` wants them."""
    f_flag = os.statvfs(path).f_flag
    pairs = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
             (os.ST_NOATIME, 1024), (os.ST_NODIRATIME, 2048), (os.ST_RELATIME, 1 << 21))
    return sum(ms for st, ms in pairs if f_flag & st)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


# capset's arguments (version 3, this process, every set empty) and the function itself,
# made once by a function zygote (``prepare_drop_capabilities``) so that each call only
# calls it: building two ctypes classes and looking the symbol up in each call's fork cost
# ~280 us and ~60 page faults per call (bench/cpu.py)
_capset: tuple[Any, Any, Any] | None = None


def prepare_drop_capabilities() -> None:
    global _capset
    _capset = (_lib().capset, ctypes.byref(_CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)), (_CapData * 2)())


def drop_capabilities() -> None:
    if _capset is None:
        prepare_drop_capabilities()
    assert _capset is not None
    capset, header, data = _capset
    _ok(capset(header, data), "capset")


def _probe(args: argparse.Namespace) -> int:
    """The isolation steps a call goes through, tried once (see ``run/sandbox.py``)."""
    result: dict[str, Any] = {"ok": True, "message": "", "privateTmp": False, "tmpMessage": ""}
    if args.drop_uid is not None and os.geteuid() != args.drop_uid:
        result = {"ok": False, "message": "the uid was not dropped", "privateTmp": False}
    else:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                enter_user_namespace()
                private_tmp(1 << 20)
                with open("/tmp/probe", "w") as f:
                    f.write("ok")
                code = 0 if _lib().umount2(b"/tmp", 0) != 0 else 2  # must not be undone
            except OSError as exc:
                os.write(2, f"{exc}\n".encode())
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        result["privateTmp"] = os.waitstatus_to_exitcode(status) == 0
        if not result["privateTmp"]:
            result["tmpMessage"] = "user namespaces are not available to unprivileged processes"
    print(json.dumps(result), flush=True)
    return 0


def _probe_shared(uid: int) -> int:
    """Build a function's sandbox as a shared zygote's fork would; print one JSON line:
    {"ok": bool, "message": str}."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 1
        try:
            enter_function_sandbox(P.FunctionSandbox(uid=uid, code_dir="/usr", network=True))
            # pid 1 of its own PID namespace now, as the function's uid, its loopback up
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
            ok = os.getpid() == 1 and os.getuid() == uid and os.path.isdir("/function/bin")
            os.write(w, b"ok" if ok else b"the function's sandbox was not what it should be")
            code = 0
        except OSError as exc:
            os.write(w, str(exc).encode())
        finally:
            os._exit(code)
    os.close(w)
    os.waitpid(pid, 0)
    chunks = []
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    said = b"".join(chunks).decode(errors="replace")
    print(json.dumps({"ok": said == "ok", "message": "" if said == "ok" else said}), flush=True)
    return 0


def _check(args: argparse.Namespace) -> int:
    os.chdir(args.code_dir)
    try:
        module = import_handler(args.code_dir, args.function_path)
        _, names = handle_of(module, args.function_path)
    except HandlerImportError as exc:
        print(json.dumps({"ok": False, "message": exc.message, "trace": exc.trace, "forkSafe": False}))
        return 0
    print(json.dumps({"ok": True, "message": "", "trace": "", "forkSafe": fork_safe(), "args": names}))
    return 0


# -- one call ---------------------------------------------------------------------------------

def _enter_call_process(cgroup_fds: list[int]) -> None:
    """What makes a fork a call's process: its own session and its cgroups.

    Separate from the rest because a spare (see ``_spare``) does it before its call is known:
    the first write to a v1 ``cgroup.procs`` after a quiet spell waits for an RCU grace
    period (~10 ms here), which a spare pays while nobody is waiting.
    """
    os.setsid()  # own process group: the server ends the call and all it started at once
    for fd in cgroup_fds:  # "0" is the writer itself, in whatever pid namespace it is
        os.write(fd, b"0")
        os.close(fd)


def _apply_limits(job: Any) -> None:
    """Runs in the call's own process before any user code: /tmp and rlimits."""
    import resource

    limits = job.limits
    if job.private_tmp:
        private_tmp(int(limits.memory_bytes or 1 << 30))

    def setlimit(which: int, value: int | None) -> None:
        if value is None:
            return
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(which, (value, value))

    setlimit(resource.RLIMIT_CORE, 0)
    setlimit(resource.RLIMIT_FSIZE, limits.max_file_bytes)
    setlimit(resource.RLIMIT_NOFILE, limits.max_open_files)
    # per uid, so only when there is no pids cgroup; never enforced for root
    setlimit(resource.RLIMIT_NPROC, limits.max_processes)
    cpu = limits.cpu_seconds
    if cpu:  # SIGXCPU at the soft limit, SIGKILL a second later
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu) + 1))
    if limits.address_space_bytes:  # fallback when no memory cgroup is available
        setlimit(resource.RLIMIT_AS, _vm_size() + int(limits.address_space_bytes))


def _vm_size() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


# set by the function zygote: stdout, stderr and ``logging`` already point at fds 1 and 2
_output_ready = False


def _prepare_output() -> None:
    """Python's stdout and stderr on fds 1 and 2, line buffered (each line reaches the server,
    and gets its timestamp, when printed), and ``logging`` writing to stderr.

    A function zygote does this once, before it forks calls: a call then only points fds 1
    and 2 at its log pipe, instead of building these objects (and copying the pages they
    touch) again in every call.
    """
    global _output_ready
    import io
    import logging

    def stream(fd: int) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w", closefd=False)
        return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", line_buffering=True)

    sys.stdout = stream(1)
    sys.stderr = stream(2)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s:%(name)s:%(message)s", force=True
    )
    for noisy in ("httpx", "httpx2", "httpcore", "urllib3"):  # one line per request of `client`
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _output_ready = True


def _redirect_output(log_fd: int) -> None:
    if not _output_ready:  # a function zygote's calls have /dev/null on fd 0 already
        _stdin_from_devnull()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    if log_fd > 2:
        os.close(log_fd)
    if not _output_ready:  # a fresh interpreter (spawn): no zygote prepared them
        _prepare_output()


def _function_environ(env_vars: dict[str, str] | None) -> None:
    """The function's environment variables and ``COGNITE_FUNCTION_RUNTIME``. A function
    zygote sets them before it forks, so in its calls nothing differs and nothing is written
    (each write is a putenv, and copies the pages it touches)."""
    for key, value in {**(env_vars or {}), "COGNITE_FUNCTION_RUNTIME": "true"}.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _stdin_from_devnull() -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def _read_job(job_fd: int) -> Any:
    # reads of the memfd's size: a read of 1 MiB at a time would map (and unmap) a buffer
    # of 1 MiB for a job of a few hundred bytes, twice, in every call
    size = os.fstat(job_fd).st_size
    chunks, offset = [], 0
    while offset < size:
        chunk = os.pread(job_fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    os.close(job_fd)
    return P.JobSpec.loads(b"".join(chunks))


def _write_result(result_fd: int, ok: bool, payload: bytes) -> None:
    data = (b"OK\n" if ok else b"ERR\n") + payload
    view = memoryview(data)
    while view:
        n = os.write(result_fd, view)
        view = view[n:]


def _error(message: str, trace: str = "") -> bytes:
    return json.dumps({"message": message, "trace": trace}).encode()


def _gb(n: int) -> str:
    return f"{n / 1024**3:g} GB"


# set by the function zygote: ``handle`` and the argument names it declares
_handler: tuple[Any, list[str]] | None = None
# json.dumps(result, allow_nan=False) without building an encoder in every call
_RESULT_JSON = json.JSONEncoder(allow_nan=False)


def _call(job: Any, module: ModuleType | None, result_fd: int) -> None:
    """Import (if needed) and call ``handle``; write the result. Never raises."""
    limits = job.limits
    function_path = job.function_path
    try:
        if module is None:
            module = import_handler(job.code_dir, function_path)
        handle, names = _handler if _handler is not None else handle_of(module, function_path)
    except HandlerImportError as exc:
        if exc.trace:
            sys.stderr.write(exc.trace)
        _write_result(result_fd, False, _error(exc.message, exc.trace))
        return
    except MemoryError:
        _write_result(result_fd, False, _error(_oom_message(limits)))
        return
    _function_environ(job.env_vars)
    kwargs: dict[str, Any] = {}
    try:
        if "client" in names:
            kwargs["client"] = _client(job)
        if "data" in names:
            kwargs["data"] = job.data
        if "secrets" in names:
            kwargs["secrets"] = dict(job.secrets or {})
        if "function_call_info" in names:
            info: dict[str, Any] = {"function_id": job.function_id, "call_id": job.call_id}
            if job.schedule_id is not None:
                info["schedule_id"] = job.schedule_id
                info["scheduled_time"] = job.scheduled_time
            if job.function_version is not None:
                info["function_version"] = job.function_version
            kwargs["function_call_info"] = info
        result = handle(**kwargs)
    except MemoryError:
        trace = traceback.format_exc()
        sys.stderr.write(trace)
        _write_result(result_fd, False, _error(_oom_message(limits), trace))
        return
    except BaseException as exc:
        trace = traceback.format_exc()
        sys.stderr.write(trace)
        _write_result(result_fd, False, _error(f"{type(exc).__name__}: {exc}", trace))
        return
    try:
        text = _RESULT_JSON.encode(result)
    except (TypeError, ValueError, RecursionError) as exc:
        message = f"The return value is not JSON-serializable: {exc}"
        sys.stderr.write(message + "\n")
        _write_result(result_fd, False, _error(message))
        return
    payload = text.encode()
    maximum = int(limits.response_max_bytes or 1 << 20)
    if len(payload) > maximum:
        message = (
            f"The response is {len(payload)} bytes of JSON, more than the limit of "
            f"{maximum} bytes ({maximum / 1024**2:g} MB)."
        )
        sys.stderr.write(message + "\n")
        _write_result(result_fd, False, _error(message))
        return
    _write_result(result_fd, True, payload)


def _oom_message(limits: Any) -> str:
    memory = limits.memory_bytes
    limit = f" (limit {_gb(int(memory))})" if memory else ""
    return f"MemoryError: the function ran out of memory{limit}."


def _client(job: Any) -> Any:
    from cognite.client import ClientConfig, CogniteClient, global_config
    from cognite.client.credentials import Token

    global_config.disable_pypi_version_check = True
    return CogniteClient(
        ClientConfig(
            client_name="fnhost-function",
            project=job.project,
            base_url=job.base_url,
            credentials=Token(job.token),
        )
    )


def _child(
    job_fd: int,
    log_fd: int,
    result_fd: int,
    module: ModuleType | None,
    cgroup_fds: list[int] | None = None,
    *,
    entered: bool = False,
) -> int:
    """The body of a call's process; returns its exit code. ``entered``: a spare, which has
    its session and cgroups already."""
    code = 0
    try:
        if not entered:
            _enter_call_process(list(cgroup_fds or ()))
        job = _read_job(job_fd)
        if module is None and job.private_tmp:
            enter_user_namespace()  # a fresh interpreter: no function zygote did it
        _apply_limits(job)
        _redirect_output(log_fd)
        if module is None:
            os.chdir(job.code_dir)
        _call(job, module, result_fd)
    except BaseException:
        code = 70
        with contextlib.suppress(OSError):
            _write_result(result_fd, False, _error("The call's bootstrap failed.", traceback.format_exc()))
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    return code


# -- network (inside a sandbox's own network namespace; see run/network.py) -------------------

def _parse_forwards(specs: list[str] | None) -> list[tuple[int, str]]:
    out = []
    for spec in specs or ():
        port, _, path = spec.partition("=")
        out.append((int(port), path))
    return out


def start_forwarder(forwards: list[tuple[int, str]], close: tuple[int, ...] = ()) -> int | None:
    """Fork the process that serves this sandbox's loopback ports; returns its pid.

    Each connection to ``127.0.0.1:port`` is handed to the Unix socket ``path`` the server
    bound into the sandbox (the API, the egress proxy). The process is not a boundary: the
    sandbox may talk to those sockets itself; what they let through is decided outside.
    ``close``: descriptors of the parent's that the forwarder must not hold (its control socket).
    """
    if not forwards:
        return None
    import socket

    listening = []
    for port, path in forwards:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(128)
        listening.append((server, path))
    pid = os.fork()
    if pid:
        for server, _ in listening:
            server.close()
        return pid
    code = 1
    try:
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        _forward(listening)
    finally:
        os._exit(code)


def _forward(listening: list[tuple[Any, str]]) -> None:
    import select
    import signal
    import socket

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def pipe(src: Any, dst: Any) -> None:
        try:
            while True:
                chunk = src.recv(1 << 16)
                if not chunk:
                    break
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def serve(conn: Any, path: str) -> None:
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(path)
        except OSError:
            conn.close()
            up.close()
            return
        back = threading.Thread(target=pipe, args=(up, conn), daemon=True)
        back.start()
        pipe(conn, up)
        back.join()
        conn.close()
        up.close()

    paths = {server: path for server, path in listening}
    while True:
        ready, _, _ = select.select(list(paths), [], [])
        for server in ready:
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn, paths[server]), daemon=True).start()


def _exec(args: argparse.Namespace) -> int:
    """A build step in its sandbox: the loopback forwarder, then the command itself."""
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("bootstrap exec: no command", file=sys.stderr)
        return 2
    start_forwarder(_parse_forwards(args.forward))
    os.execve(command[0], command, dict(os.environ))  # noqa: S606  (argv, no shell)


# -- zygotes ------------------------------------------------------------------------------------

def _send(sock: Any, message: Any) -> None:
    sock.sendall(message.dumps())


def _preload() -> None:
    """What every call of every function needs, imported once per environment."""
    try:
        import cognite.client  # noqa: F401
        from cognite.client import ClientConfig, CogniteClient, global_config  # noqa: F401
        from cognite.client.credentials import Token  # noqa: F401

        global_config.disable_pypi_version_check = True
    except ImportError:
        pass  # an environment without cognite-sdk can still run handlers that do not use it
    import logging  # noqa: F401


MADV_COLLAPSE = 25  # Linux 6.1: make huge pages of a range's pages now
_HUGE_PAGE = 2 << 20


def _heap_into_huge_pages() -> None:
    """Back the frozen heap with transparent huge pages, where the kernel can.

    Every call is a fork of a function zygote, itself a fork of this process, and most of a
    zygote's memory is this heap, shared. A fork copies the page-table entries of every
    private page and counts one more mapping of each; since Linux 6.9 it does that once per
    run of a large page, not once per 4 KiB page, and a call's exit unmaps the same way. So
    the fewer, larger pages this heap is in, the cheaper each call's fork and exit, in this
    process's function zygotes too (they keep the large pages they do not write to).
    ``bench/cpu.py --below``; docs/architecture.md, "The call path". Best effort: a kernel
    without MADV_COLLAPSE, or with THP off, says EINVAL and nothing changes. Only whole
    aligned 2 MiB stretches of the heap and of anonymous mappings are asked for; a stretch
    with holes grows to 2 MiB, once, for every function of the environment. Not
    MADV_HUGEPAGE: that flag is inherited, and khugepaged would then also collapse stretches
    of the heap inside each function zygote (those at most half still shared, by default)
    into huge pages of the zygote's own, copying what its siblings share."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read().splitlines()
    except OSError:
        return
    madvise = _lib().madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for line in maps:
        fields = line.split()
        if fields[1] != "rw-p" or (len(fields) > 5 and fields[5] != "[heap]"):
            continue
        low, high = (int(x, 16) for x in fields[0].split("-"))
        start, end = -(-low // _HUGE_PAGE) * _HUGE_PAGE, high // _HUGE_PAGE * _HUGE_PAGE
        if end > start:
            madvise(start, end - start, MADV_COLLAPSE)


def _zygote(args: argparse.Namespace) -> int:
    import signal
    import socket

    sock = socket.socket(fileno=args.control_fd)
    if args.shared:
        # function zygotes leave for PID namespaces of their own: they are orphaned to us
        _ok(_lib().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "subreaper")
    forwards = _parse_forwards(args.forward)
    # forked before the heavy imports: the forwarder is a small process
    forwarder = start_forwarder(forwards, close=(args.control_fd,))
    _preload()
    # Freeze what every function shares before any function zygote is forked: a collection
    # walks (and writes to) every tracked object it reaches, so one run in each function
    # zygote would copy most of this heap into each of them.
    gc.collect()
    gc.freeze()
    _heap_into_huge_pages()

    def reap(_signum: int, _frame: Any) -> None:
        nonlocal forwarder
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == forwarder:  # killed (function code runs as the same uid): serve again
                forwarder = start_forwarder(forwards, close=(args.control_fd,))

    signal.signal(signal.SIGCHLD, reap)
    modules = sorted({name.partition(".")[0] for name in sys.modules})
    _send(sock, P.Ready(pid=os.getpid(), fork_safe=fork_safe(), modules=modules))
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 16)
        except OSError:
            return 0
        if not msg:
            return 0  # the server is gone
        request = P.decode(msg)
        if not isinstance(request, P.FunctionOp) or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            sock.close()
            code = 1
            try:
                code = _function_zygote(socket.socket(fileno=fds[0]), request)
            finally:
                os._exit(code)
        os.close(fds[0])


def _call_process(control: Any, call_id: int, fds: list[int], module: ModuleType) -> int:
    """A call's process forked for its call. ``fds``: its job, log and result descriptors,
    then those of the cgroups it joins."""
    # sent by the call itself: the server reads its pid (as the server sees it, whatever
    # namespace this is) from the socket's credentials
    _send(control, P.Started(call_id, os.getpid()))
    control.close()
    return _child(fds[0], fds[1], fds[2], module, fds[3:])


def _spare(
    control: Any, inbox: Any, spare_id: int, cgroup_fds: list[int], module: ModuleType, others: list[Any]
) -> int:
    """A call's process forked before its call: it enters its session and cgroups, then
    waits for its job's descriptors (end-of-file: not needed after all). ``others`` are the
    zygote's ends of spare sockets, its own included, which are not this process's to hold."""
    import socket

    for other in others:
        other.close()
    _enter_call_process(cgroup_fds)
    # up only once in its cgroups: a call handed to it then waits for nothing, and the
    # server's prepare can wait for it (the first call after a deploy starts as fast as the
    # rest). Sent by the spare itself: the server reads its pid from the socket's credentials
    _send(control, P.SpareUp(spare_id, os.getpid()))
    control.close()
    try:
        _, fds, _, _ = socket.recv_fds(inbox, 1 << 16, 3)
    except OSError:
        fds = []
    inbox.close()
    if len(fds) != 3:
        return 0
    return _child(fds[0], fds[1], fds[2], module, entered=True)


def _warm_up(code_dir: str, function_path: str) -> None:
    """Run the Python every call runs (decode its job, encode its messages and its result)
    often enough for the interpreter to specialise it and fill its caches (type hints, the
    JSON codecs' state), so that calls start from those pages, shared, instead of each
    writing its own copies of them (about 1.3 ms of CPU per call when profiled)."""
    limits = P.Limits(memory_bytes=1, max_file_bytes=1, max_open_files=1, cpu_seconds=1)
    job = P.JobSpec(
        call_id=1, function_id=1, project="p", code_dir=code_dir, function_path=function_path,
        data={"n": 0}, secrets={"k": "v"}, env_vars={"K": "v"}, base_url="http://127.0.0.1",
        schedule_id=1, scheduled_time=1, limits=limits, private_tmp=True,
    ).dumps()
    for _ in range(64):  # 3.11 specialises an instruction after a few dozen runs of it
        P.JobSpec.loads(job)
        _RESULT_JSON.encode({"n": 0})
        P.Started(1, 1).dumps()
        P.SpareUp(1, 1).dumps()
        _error("x")


def _function_zygote(sock: Any, request: Any) -> int:
    import select
    import signal
    import socket

    code_dir, function_path = request.code_dir, request.function_path
    forwards: list[tuple[int, str]] = []
    forwarder: int | None = None
    if request.sandbox is not None:  # a shared zygote's fork: this function's sandbox first
        try:
            enter_function_sandbox(request.sandbox)
            forwards = _parse_forwards(request.sandbox.forwards)
            forwarder = start_forwarder(forwards, close=(sock.fileno(),))
        except OSError as exc:
            _send(sock, P.Ready(ok=False, message=f"The function's sandbox could not be set up: {exc}"))
            return 0
        _add_site_dirs(request.sandbox.site_dirs)
    # import-time output of the handler goes nowhere: the server's log is not the user's
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.close(devnull)
    _stdin_from_devnull()  # its calls' stdin, opened once here rather than in every call
    _function_environ(request.env_vars)
    if request.private_tmp:
        try:
            enter_user_namespace()
        except OSError as exc:
            _send(sock, P.Ready(ok=False, message=f"The function's sandbox could not be set up: {exc}"))
            return 0
    try:
        os.chdir(code_dir)
        module = import_handler(code_dir, function_path)
        handle, names = handle_of(module, function_path)
    except HandlerImportError as exc:
        _send(sock, P.Ready(ok=False, message=exc.message, trace=exc.trace))
        return 0
    global _keep_paths, _handler
    _keep_paths = paths_under_tmp((code_dir,))  # once here rather than in every call
    if request.private_tmp:
        prepare_drop_capabilities()
    _handler = (handle, names)
    # what every call does first, done once here, before the freeze, so calls share it:
    # their output objects, and the job decoder's caches (its type hints)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 2)  # from here the handler's output goes to its calls' logs only
    os.close(devnull)
    _prepare_output()
    _warm_up(code_dir, function_path)
    safe = fork_safe()
    # The handler's module is shared with every call too: freeze it as well, so that a
    # collection in a call does not touch (and copy) the shared pages. The environment's
    # heap is frozen already, so this collection walks only what the handler created.
    gc.collect()
    gc.freeze()
    _send(sock, P.Ready(ok=True, pid=os.getpid(), fork_safe=safe, args=names))
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)

    def fork_call_process(body: Callable[..., int], *args: Any) -> int:
        """Fork a call's process (or a spare): the child leaves this loop's signal plumbing
        behind, runs ``body(*args)`` and exits with its code (70 if it raised); we get its pid."""
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.close(wake_r)
                os.close(wake_w)
                code = body(*args)
            finally:
                os._exit(code)
        return pid

    children: dict[int, int] = {}  # pid -> call id
    spares: dict[int, tuple[int, Any]] = {}  # spare id -> (pid, our end of its socket)
    while True:
        ready, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in ready:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
            while True:
                try:
                    pid, status, usage = os.wait4(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                call_id = children.pop(pid, None)
                if call_id is not None:
                    _send(sock, P.Exit(call_id, pid, status, usage.ru_utime, usage.ru_stime, usage.ru_maxrss))
                if pid == forwarder:  # killed by a call (the same uid): serve the loopback again
                    forwarder = start_forwarder(forwards, close=(sock.fileno(), wake_r, wake_w))
                for spare_id, (spare_pid, spare_sock) in list(spares.items()):
                    if spare_pid == pid:  # ended before it got a call
                        spare_sock.close()
                        del spares[spare_id]
                        _send(sock, P.SpareGone(spare_id))
        if sock in ready:
            try:
                msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 16)
            except OSError:
                msg, fds = b"", []
            if not msg:
                for pid in children:  # the server is gone: so are its calls
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL)
                return 0
            request = P.decode(msg)
            spare = (
                spares.pop(request.spare or 0, None)
                if isinstance(request, P.RunOp | P.DropSpareOp) else None
            )
            if spare is not None:
                spare_pid, spare_sock = spare
                if isinstance(request, P.RunOp) and len(fds) >= 3:
                    try:  # its cgroups (fds[3:]) are joined already
                        socket.send_fds(spare_sock, [msg], fds[:3])
                        children[spare_pid] = request.call
                        request = None  # handed over: every fd is closed below
                    except OSError:
                        pass  # it is gone: the call forks as usual, into the same cgroups
                spare_sock.close()  # a dropped spare reads end-of-file and exits
            if isinstance(request, P.SpareOp):
                spare_id = request.spare
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                others = [ours, *(other_sock for _, other_sock in spares.values())]
                pid = fork_call_process(_spare, sock, theirs, spare_id, fds, module, others)
                theirs.close()
                for fd in fds:
                    os.close(fd)
                spares[spare_id] = (pid, ours)
            elif isinstance(request, P.RunOp) and len(fds) >= 3:
                pid = fork_call_process(_call_process, sock, request.call, fds, module)
                for fd in fds:
                    os.close(fd)
                children[pid] = request.call
            else:
                for fd in fds:
                    os.close(fd)


def _run(args: argparse.Namespace) -> int:
    # a sandbox of its own (and so a network namespace of its own): serve its loopback too
    start_forwarder(_parse_forwards(args.forward), close=(args.job_fd, args.log_fd, args.result_fd))
    return _child(args.job_fd, args.log_fd, args.result_fd, None, args.cgroup_fd or [])


def _add_site_dirs(site_dirs: list[str] | None) -> None:
    if site_dirs:
        import site

        before = list(sys.path)
        for d in site_dirs:
            site.addsitedir(d)
        # the function's own packages come first, before the baseline's site-packages
        sys.path[:] = [p for p in sys.path if p not in before] + before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bootstrap")
    sub = parser.add_subparsers(dest="mode", required=True)
    check = sub.add_parser("check", help="import the handler and report")
    check.add_argument("--code-dir", required=True)
    check.add_argument("--function-path", default="handler.py")
    zygote = sub.add_parser("zygote", help="serve forks of this environment")
    zygote.add_argument("--control-fd", type=int, required=True)
    zygote.add_argument("--site-dir", action="append")
    run = sub.add_parser("run", help="run one call in this fresh process")
    run.add_argument("--job-fd", type=int, required=True)
    run.add_argument("--log-fd", type=int, required=True)
    run.add_argument("--result-fd", type=int, required=True)
    run.add_argument("--cgroup-fd", type=int, action="append")
    run.add_argument("--site-dir", action="append")
    run.add_argument("--forward", action="append", help="PORT=UNIX_SOCKET served on loopback")
    zygote.add_argument("--forward", action="append", help="PORT=UNIX_SOCKET served on loopback")
    zygote.add_argument("--shared", action="store_true", help="build each function's sandbox after the fork")
    probe = sub.add_parser("probe", help="check that calls can be isolated here")
    probe.add_argument("--shared-uid", type=int, help="check a shared zygote's sandboxing, for this uid")
    exec_ = sub.add_parser("exec", help="run a build step in a sandbox: forward, then exec")
    exec_.add_argument("--forward", action="append", help="PORT=UNIX_SOCKET served on loopback")
    exec_.add_argument("command", nargs=argparse.REMAINDER)
    for p in (zygote, run, probe, exec_):
        p.add_argument("--drop-uid", type=int)
        p.add_argument("--drop-gid", type=int)
    args = parser.parse_args(argv)
    if args.mode == "check":
        return _check(args)
    if args.drop_uid is not None:
        # first thing: nothing of the function's (site dirs, handler) is read as root
        try:
            drop_privileges(args.drop_uid, args.drop_gid if args.drop_gid is not None else args.drop_uid)
        except OSError as exc:
            if args.mode == "probe":
                print(json.dumps({"ok": False, "message": f"cannot drop privileges: {exc}"}), flush=True)
                return 0
            raise
    if args.mode == "probe" and args.shared_uid is not None:
        return _probe_shared(args.shared_uid)
    if args.mode == "probe":
        return _probe(args)
    if args.mode == "exec":
        return _exec(args)
    _add_site_dirs(args.site_dir)
    if args.mode == "zygote":
        return _zygote(args)
    if args.mode == "run":
        return _run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
