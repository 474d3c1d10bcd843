"""Server-side handles of zygote processes, and the per-call plumbing the local executor uses.

Process tree on this machine::

    fnhost serve
    └── env zygote        python -I bootstrap.py zygote   (one per environment; cognite.client imported)
        └── function zygote   fork, handler imported        (one per Ready function)
            └── call          fork per call: own session, cgroups, rlimits, pipes

The server talks to each zygote over a SOCK_SEQPACKET socket: one JSON message per packet,
file descriptors passed with SCM_RIGHTS. The function zygote reaps its calls and reports
their wait status; the server owns timeouts and kills (process group + cgroup). Each
message also carries its sender's credentials (SO_PASSCRED), so the server learns the pid
of a zygote or call as *it* sees it, even when the sender runs in a PID namespace of its
own (isolation ``bwrap``). With isolation, every function gets an environment zygote of
its own, started inside its sandbox (``run/sandbox.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fnhost.clock import now_ms
from fnhost.run import BOOTSTRAP, protocol

log = logging.getLogger("fnhost.run")

MAX_LINE_BYTES = 64 * 1024


class ZygoteDied(Exception):
    """The zygote that ran a call ended before reporting the call's end."""


class Channel:
    """A SEQPACKET socket to a zygote, read by the event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        on_message: Callable[[protocol.Message, int | None], None],
        on_close: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.on_message = on_message
        self.on_close = on_close
        self.closed = False
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        sender: int | None = None
        fds: list[int] = []
        try:
            msg, ancillary, _, _ = self.sock.recvmsg(
                1 << 16, socket.CMSG_SPACE(16 * 4) + socket.CMSG_SPACE(12)
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            msg, ancillary = b"", []
        for level, kind, data in ancillary:
            if level != socket.SOL_SOCKET:
                continue
            if kind == socket.SCM_RIGHTS:
                fds += list(struct.unpack(f"{len(data) // 4}i", data[: len(data) // 4 * 4]))
            elif kind == socket.SCM_CREDENTIALS and len(data) >= 12:
                sender = struct.unpack("iII", data[:12])[0]
        for fd in fds:
            os.close(fd)
        if not msg:
            self.close()
            self.on_close()
            return
        try:
            message = protocol.decode(msg)
            if message is None:
                log.warning("zygote sent a message this server does not know: %r", msg[:200])
                return
            # the sender's pid as this server sees it (its own may be in a PID namespace)
            self.on_message(message, sender or None)
        except Exception:
            log.exception("zygote message could not be handled: %r", msg[:200])

    def send(self, message: protocol.Message, fds: list[int] | tuple[int, ...] = ()) -> None:
        if self.closed:
            raise ZygoteDied("the zygote's channel is closed")
        data = message.dumps()
        try:
            socket.send_fds(self.sock, [data], list(fds)) if fds else self.sock.send(data)
        except OSError as exc:
            raise ZygoteDied(f"cannot reach the zygote: {exc}") from exc

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def site_args(site_dirs: Any) -> list[str]:
    out: list[str] = []
    for d in site_dirs or ():
        out += ["--site-dir", str(d)]
    return out


# what a function's processes inherit from the server's environment: nothing secret
PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")


def clean_environ() -> dict[str, str]:
    return {k: os.environ[k] for k in PASS_ENV if k in os.environ}


def default_command(python: str, args: list[str]) -> list[str]:
    return [python, "-I", str(BOOTSTRAP), *args]


class EnvZygote:
    """``python bootstrap.py zygote`` for one environment (or, isolated, for one function).

    ``command`` turns the bootstrap's arguments into the argv to start (a sandbox around
    the interpreter, say); ``code_dir`` and ``private_tmp`` are what its function zygotes
    are told, as seen inside it.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        env_hash: str,
        python: str,
        site_dirs: Any,
        *,
        command: Callable[[list[str]], list[str]] | None = None,
        environ: dict[str, str] | None = None,
        code_dir_inside: Callable[[str], str] | None = None,
        private_tmp: bool = False,
    ) -> None:
        self.loop = loop
        self.env_hash = env_hash
        self.python = python
        self.site_dirs = tuple(str(d) for d in site_dirs or ())
        self.command = command or (lambda args: default_command(str(self.python), args))
        self.environ = environ if environ is not None else clean_environ()
        self.code_dir_inside = code_dir_inside or (lambda d: d)
        self.private_tmp = private_tmp
        self.ready: asyncio.Future[protocol.Ready] = loop.create_future()
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: Channel | None = None
        self.fork_safe = False
        self.zygote_pid: int | None = None  # the interpreter's own pid (inside any sandbox)
        self.on_exit: Callable[[EnvZygote], None] | None = None
        # the host sockets its sandbox reaches out through (run/network.py), and what to
        # close once its process has ended (their listeners)
        self.sockets: Any = None
        self.cleanup: list[Callable[[], None]] = []
        self.modules: tuple[str, ...] = ()  # the top-level modules it imported

    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                self.command(["zygote", "--control-fd", str(theirs.fileno()), *site_args(self.site_dirs)]),
                pass_fds=[theirs.fileno()],
                env=self.environ,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
            )
        finally:
            theirs.close()
        self.channel = Channel(self.loop, ours, self._message, self._closed)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def pss_bytes(self) -> int:
        return pss_of(self.zygote_pid)

    def _message(self, msg: protocol.Message, sender: int | None) -> None:
        if isinstance(msg, protocol.Ready) and not self.ready.done():
            self.fork_safe = msg.fork_safe
            self.zygote_pid = sender or msg.pid
            self.modules = tuple(msg.modules)
            self.ready.set_result(msg)

    def _closed(self) -> None:
        if not self.ready.done():
            self.ready.set_exception(ZygoteDied("the environment's zygote exited while starting"))
        self.loop.run_in_executor(None, self._reap)
        if self.on_exit:
            self.on_exit(self)

    def _reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._clean_up()

    def _clean_up(self) -> None:
        while self.cleanup:
            try:
                self.cleanup.pop()()
            except Exception:
                log.exception("cleaning up after an environment zygote failed")

    @property
    def alive(self) -> bool:
        return self.channel is not None and not self.channel.closed

    def fork_function(
        self,
        code_dir: str,
        function_path: str,
        env_vars: dict[str, str],
        sandbox: protocol.FunctionSandbox | None = None,
    ) -> FunctionZygote:
        """Ask for a function zygote; with ``sandbox`` (a shared zygote), it builds its own."""
        assert self.channel is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            op = protocol.FunctionOp(
                self.code_dir_inside(code_dir), function_path, env_vars, self.private_tmp, sandbox
            )
            self.channel.send(op, [theirs.fileno()])
        except ZygoteDied:
            ours.close()
            raise
        finally:
            theirs.close()
        fz = FunctionZygote(self.loop, self, code_dir, function_path, ours)
        fz.sandbox = sandbox
        return fz

    def stop(self, wait: bool = True) -> None:
        """Kill it (and, sandboxed, everything in its sandbox); ``wait=False`` reaps later."""
        if self.channel is not None:
            self.channel.close()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            if wait:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)
                self._clean_up()
            else:
                self.loop.run_in_executor(None, self._reap)
        else:
            self._clean_up()


@dataclass
class Running:
    """A call in flight."""

    call_id: int
    exit: asyncio.Future[tuple[int | None, int | None]]  # (exit code, signal)
    rusage: protocol.Exit | None = None  # the zygote's report of the call's own accounting
    pid: int | None = None
    cancel_message: str | None = None
    lost: str | None = None
    cgroups: list[str] = field(default_factory=list)
    code_dir: str = ""


@dataclass
class Spare:
    """A call's process forked before its call (``bootstrap._spare``): it has its session and
    has joined its cgroups, so a call handed to it skips the fork and the cgroup attach."""

    id: int
    limits: Any  # the CallLimits its cgroups were made with; only a call with the same uses it
    cgroups: list[str] = field(default_factory=list)
    # kept open until the spare is used: if it died meanwhile, the call joins through them
    cgroup_fds: list[int] = field(default_factory=list)
    pid: int | None = None  # as this server sees it; known once the spare has said hello
    # True once it has said hello (in its cgroups, waiting for a job), False if it went first
    up: asyncio.Future[bool] | None = None


def decode_status(status: int) -> tuple[int | None, int | None]:
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


class FunctionZygote:
    """A fork of an environment's zygote that has imported one function's handler."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        env: EnvZygote,
        code_dir: str,
        function_path: str,
        sock: socket.socket,
    ) -> None:
        self.loop = loop
        self.env = env
        self.code_dir = code_dir
        self.function_path = function_path
        self.ready: asyncio.Future[protocol.Ready] = loop.create_future()
        self.pid: int | None = None
        self.args: tuple[str, ...] = ()
        self.fork_safe = False
        self.calls: dict[int, Running] = {}
        self.last_used = now_ms()
        self.dropped = False  # ended on purpose (evicted, redeployed, deleted)
        self.retired = False  # replaced by a newer one: stop when its last call ends
        self.owns_env = False  # isolated: its environment zygote is its alone (its sandbox)
        self.on_exit: Callable[[FunctionZygote], None] | None = None
        self.spare: Spare | None = None
        self.on_spare_gone: Callable[[Spare], None] | None = None
        self.sandbox: protocol.FunctionSandbox | None = None  # set: sandboxed after the fork
        self.sockets: Any = None  # the host sockets its sandbox reaches out through
        self.cleanup: list[Callable[[], None]] = []  # run once it has ended (its listeners)
        self.channel = Channel(loop, sock, self._message, self._closed)

    @property
    def alive(self) -> bool:
        return not self.channel.closed

    def _message(self, msg: protocol.Message, sender: int | None) -> None:
        if isinstance(msg, protocol.Ready):
            self.pid = sender or msg.pid
            self.args = tuple(msg.args)
            self.fork_safe = msg.fork_safe
            if not self.ready.done():
                self.ready.set_result(msg)
        elif isinstance(msg, protocol.Started):
            run = self.calls.get(msg.call)
            if run is not None:
                run.pid = sender or msg.pid
        elif isinstance(msg, protocol.Exit):
            run = self.calls.pop(msg.call, None)
            if run is not None and not run.exit.done():
                run.rusage = msg
                run.exit.set_result(decode_status(msg.status))
        elif isinstance(msg, protocol.SpareUp | protocol.SpareGone):
            spare = self.spare
            if spare is None or spare.id != msg.spare:
                return  # one already taken by a call or dropped: nothing to do
            if isinstance(msg, protocol.SpareUp):
                spare.pid = sender or msg.pid
                if spare.up is not None and not spare.up.done():
                    spare.up.set_result(True)
            else:
                self._forget_spare()

    def _forget_spare(self) -> None:
        spare, self.spare = self.spare, None
        if spare is not None and spare.up is not None and not spare.up.done():
            spare.up.set_result(False)
        if spare is not None and self.on_spare_gone is not None:
            self.on_spare_gone(spare)

    def _closed(self) -> None:
        self._forget_spare()
        while self.cleanup:
            try:
                self.cleanup.pop()()
            except Exception:
                log.exception("cleaning up after a function zygote failed")
        if not self.ready.done():
            self.ready.set_exception(ZygoteDied("the function's zygote exited while importing the handler"))
        for run in self.calls.values():
            run.lost = "The process that ran the call (the function's zygote) ended unexpectedly."
            if not run.exit.done():
                run.exit.set_exception(ZygoteDied(run.lost))
        self.calls.clear()
        if self.on_exit:
            self.on_exit(self)

    def run(self, run: Running, fds: tuple[int, ...], spare: int | None = None) -> None:
        self.calls[run.call_id] = run
        self.last_used = now_ms()
        try:
            self.channel.send(protocol.RunOp(run.call_id, spare), fds)
        except ZygoteDied:
            self.calls.pop(run.call_id, None)
            raise

    def add_spare(self, spare: Spare) -> None:
        spare.up = self.loop.create_future()
        self.channel.send(protocol.SpareOp(spare.id), spare.cgroup_fds)
        self.spare = spare

    def take_spare(self, limits: Any) -> Spare | None:
        """The spare, if it is up and was made for these limits (it is this call's now)."""
        spare = self.spare
        if spare is None or spare.pid is None:
            return None
        self.spare = None
        if spare.limits != limits:
            with contextlib.suppress(ZygoteDied):
                self.channel.send(protocol.DropSpareOp(spare.id))
            self.spare = spare
            self._forget_spare()
            return None
        return spare

    def run_on_spare(self, run: Running, spare: Spare, fds: tuple[int, ...]) -> None:
        """Hand a call to a spare (``take_spare``); its cgroup fds go along in case it died."""
        run.pid = spare.pid
        self.run(run, fds + tuple(spare.cgroup_fds), spare=spare.id)

    def pss_bytes(self) -> int:
        own = pss_of(self.pid)
        return own + self.env.pss_bytes() if self.owns_env else own

    def stop(self) -> None:
        """End it: its calls are killed by the zygote itself when it sees the socket close."""
        self.dropped = True
        self.channel.close()
        if self.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        self._closed()
        if self.owns_env:
            self.env.stop(wait=False)


def pss_of(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


class LogCollector:
    """Reads a call's stdout+stderr pipe: lines, timestamps, redaction, a size cap."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, secrets: list[str], max_bytes: int) -> None:
        self.loop = loop
        self.fd = fd
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.max_bytes = max_bytes
        self.lines: list[tuple[int, str]] = []
        self.size = 0
        self.truncated = False
        self.buf = bytearray()
        self.eof: asyncio.Future[None] = loop.create_future()
        self.on_line: Any = None  # called with (ms, line) as each kept line is read (live logs)
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def _readable(self) -> None:
        try:
            chunk = os.read(self.fd, 1 << 20 if self.truncated else 1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        if self.truncated:
            return  # keep draining so the writer never blocks, but keep nothing
        self.buf += chunk
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                break
            self.add(bytes(self.buf[:nl]))
            del self.buf[: nl + 1]
        while len(self.buf) > MAX_LINE_BYTES:
            self.add(bytes(self.buf[:MAX_LINE_BYTES]))
            del self.buf[:MAX_LINE_BYTES]

    def add(self, raw: bytes | str) -> None:
        if self.truncated:
            return
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        text = self.redact(text.rstrip("\r"))
        size = len(text.encode()) + 1
        if self.size + size > self.max_bytes:
            self.truncated = True
            self.buf.clear()
            self.lines.append(
                (now_ms(), f"[fnhost] Log truncated: this call wrote more than {self.max_bytes} bytes "
                 "of output; the rest was dropped.")
            )
            self._published(self.lines[-1])
            return
        self.size += size
        self.lines.append((now_ms(), text))
        self._published(self.lines[-1])

    def _published(self, line: tuple[int, str]) -> None:
        if self.on_line is not None:
            try:
                self.on_line(*line)
            except Exception:
                log.exception("live log subscriber failed")

    def close(self) -> None:
        if self.eof.done():
            return
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if self.buf:
            self.add(bytes(self.buf))
            self.buf.clear()
        self.eof.set_result(None)


def kill_call(run: Running, cgroups: Any) -> None:
    """SIGKILL the call's process, its process group, and anything left in its cgroups."""
    if run.pid is not None and not run.exit.done():
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(OSError):
                kill(run.pid, signal.SIGKILL)
    if run.pid is not None and run.exit.done():
        with contextlib.suppress(OSError):
            os.killpg(run.pid, signal.SIGKILL)  # whatever the call left behind in its group
    if run.cgroups and cgroups is not None:
        cgroups.kill_all(run.cgroups)


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def interpreter_of(env: Any) -> str:
    return str(getattr(env, "python", None) or sys.executable)
