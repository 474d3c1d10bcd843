"""The Ray executor: each call is a Ray task placed by the function's CPU and memory.

Process picture on every Ray node::

    Ray task (one per call)       num_cpus=cpu, memory=memory; streams events to the server
       │  Unix socket on the node
    node host (a detached Ray actor, one per node, num_cpus=0, shared by every replica)
    └── LocalExecutor             the same forked zygotes, cgroups/rlimits, timeouts,
        └── env / function zygotes, calls      log capture and redaction as ``run.local``

Why a task *and* a host: Ray places the task by the call's ``cpu`` and ``memory`` and holds
those resources while the call runs (the autoscaler sees the demand), and the host keeps the
warm zygotes so a call is a ~3 ms fork, not a fresh interpreter importing the handler. The
task waits on the host over a Unix socket, not ``ray.get``, because Ray lends out the CPU of a
task blocked in ``ray.get``; a socket keeps the reservation honest. Limits, logs, redaction,
statuses and messages are the local executor's own, so both backends pass one contract suite.

Code travels through Ray's object store (a tar, once per function and node); the function's
environment (``FNHOST_ENV_DIR``) must be at the same path on every node (a shared volume).
A lost worker or node fails the call with a message saying so; Ray never retries a call.

``ray`` is imported lazily: fnhost runs without the ``ray`` extra unless this backend is chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import os
import queue
import re
import secrets
import socket
import struct
import tarfile
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fnhost.clock import now_ms
from fnhost.run import protocol
from fnhost.run._loop import start_loop_thread
from fnhost.run.abc import (
    CallJob,
    CallLimits,
    CallOutcome,
    EnvironmentLike,
    Executor,
    PrepareResult,
)
from fnhost.run.network import DEFAULT_API_PORT

log = logging.getLogger("fnhost.run")

NAMESPACE = "fnhost"
HOST_PREFIX = "fnhost-host-"
# after its time limit, how long a started call may stay silent before it counts as lost
SILENCE_GRACE_S = 60.0
STOP_GRACE_S = 10.0
HOST_START_TIMEOUT_S = 120.0
_FRAME = struct.Struct("!I")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


# -- wire between a call's task and its node's host (length-prefixed JSON or bytes) ----------------

def _send(sock: socket.socket, payload: protocol.Message | bytes) -> None:
    data = payload if isinstance(payload, bytes) else payload.dumps()
    sock.sendall(_FRAME.pack(len(data)) + data)


def _recv_bytes(sock: socket.socket) -> bytes | None:
    head = _recv_exact(sock, _FRAME.size)
    if head is None:
        return None
    return _recv_exact(sock, _FRAME.unpack(head)[0])


def _recv(sock: socket.socket) -> protocol.Message | None:
    data = _recv_bytes(sock)
    return None if data is None else protocol.decode(data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


@dataclass(frozen=True)
class NodeSettings:
    """How every node's host runs calls: the server's isolation and network settings.

    Hosts are shared by every replica that gives the same settings (their actor's name
    carries ``key``), so replicas with different settings never share a host by accident.
    """

    memory_budget_bytes: int = 2 * 1024**3
    isolation: str = "auto"
    uid_base: int = 200_000
    uid_count: int = 65_536
    network: str = "internet"
    network_allow: tuple[str, ...] = ()
    api_url: str = ""  # where sandboxes on the node reach the API (the servers' public URL)
    env_dir: str = ""  # FNHOST_ENV_DIR, mounted at the same path on every node
    api_port: int = DEFAULT_API_PORT
    hidden_paths: tuple[str, ...] = ()
    # a node that cannot isolate calls refuses them unless the operator allows this
    allow_unisolated: bool = False

    @property
    def key(self) -> str:
        """Names this host: these settings and the protocol's version."""
        described = json.dumps([protocol.VERSION, dataclasses.asdict(self)], sort_keys=True)
        return hashlib.sha256(described.encode()).hexdigest()[:10]


def _node_dir(node_id: str, key: str) -> Path:
    return Path(tempfile.gettempdir()) / "fnhost-ray" / f"{node_id[:16]}-{key}"


def _socket_path(node_id: str, key: str) -> str:
    return str(_node_dir(node_id, key) / "host.sock")


def _host_name(node_id: str, key: str) -> str:
    return f"{HOST_PREFIX}{node_id}-{key}"


# -- on each node: the host actor ---------------------------------------------------------------

class NodeHost:
    """One per Ray node (a detached actor): serves calls and prepares on a Unix socket."""

    def __init__(self, node_id: str, node: NodeSettings) -> None:
        from fnhost.run.local import LocalExecutor
        from fnhost.run.network import Egress, host_port, policy_of

        self.node_id = node_id
        self.dir = _node_dir(node_id, node.key)
        (self.dir / "code").mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)  # the socket runs code: only this node's user may reach it
        self.egress = Egress()
        api_socket = None
        if node.api_url:  # sandboxes have no route out: the API comes to them over a socket
            host, port = host_port(node.api_url)
            api_socket = str(self.dir / "api.sock")
            self.egress.relay(api_socket, host, port)
        self.executor = LocalExecutor(
            memory_budget_bytes=node.memory_budget_bytes,
            isolation=node.isolation,
            isolation_uid_base=node.uid_base,
            isolation_uid_count=node.uid_count,
            hidden_paths=[*node.hidden_paths, str(self.dir.parent)],
            network=policy_of(node.network, node.network_allow),
            api_socket=api_socket,
            api_port=node.api_port,
            egress=self.egress,
            code_root=str(self.dir / "code"),
            env_root=node.env_dir or None,
        )
        self.executor.start()
        self.refusal = ""
        if self.executor.isolation.mechanism == "none" and not node.allow_unisolated:
            self.refusal = (
                f"Ray node {node_id[:16]} cannot isolate function code "
                f"({self.executor.isolation.reason or f'FNHOST_ISOLATION={node.isolation}'}), so it runs no "
                "calls; install bubblewrap on the node (or run the node as root), or set "
                "FNHOST_RAY_ALLOW_UNISOLATED=true to run them unisolated."
            )
            log.error("fnhost node host: %s", self.refusal)
        elif self.executor.isolation.mechanism == "none":
            log.warning(
                "fnhost node host on %s runs calls UNISOLATED (FNHOST_RAY_ALLOW_UNISOLATED=true)", node_id
            )
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._calls: dict[tuple[str, int], int] = {}  # (server, call id) -> id on this host
        self._code_lock = threading.Lock()
        self.path = _socket_path(node_id, node.key)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(256)
        threading.Thread(target=self._accept, name="fnhost-host-accept", daemon=True).start()
        log.info("fnhost node host on %s: %s", node_id, self.path)

    # actor methods
    def address(self) -> str:
        return self.path

    def pid(self) -> int:
        return os.getpid()

    def cancel(self, server: str, call_id: int, message: str) -> bool:
        with self._lock:
            local_id = self._calls.get((server, call_id))
        if local_id is None:
            return False
        self.executor.cancel(local_id, message)
        return True

    def drop(self, name: str, message: str) -> None:
        self.executor.drop(self.dir / "code" / name, message)

    def stats(self) -> dict[str, Any]:
        return self.executor.stats()

    # the socket
    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="fnhost-host-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            request = _recv(conn)
            if not isinstance(request, protocol.HostCallOp | protocol.HostPrepareOp):
                return
            code_dir = self._code(conn, request.code)
            if code_dir is None:
                return
            env = request.env if isinstance(request, protocol.HostPrepareOp) else request.call.env
            if self.refusal:
                self._refuse(conn, request, self.refusal)
                return
            if not os.path.exists(env.python):
                self._refuse(
                    conn,
                    request,
                    f"The function's environment is not on Ray node {self.node_id[:16]} (no {env.python}): "
                    "every Ray node must mount FNHOST_ENV_DIR at the same path as the servers.",
                )
                return
            if isinstance(request, protocol.HostPrepareOp):
                result = self.executor.prepare(env, code_dir, request.function_path, request.env_vars)
                _send(conn, protocol.Prepared(result.ok, result.message, result.trace, result.fork_safe, list(result.args)))
            else:
                self._call(conn, request, code_dir)
        except Exception:
            log.exception("node host: a request failed")
        finally:
            conn.close()

    def _refuse(self, conn: socket.socket, request: protocol.Message, message: str) -> None:
        if isinstance(request, protocol.HostPrepareOp):
            _send(conn, protocol.Prepared(False, message))
            return
        now = now_ms()
        _send(conn, protocol.HostStarted(os.getpid()))
        _send(conn, protocol.HostLogs([(now, f"[fnhost] {message}")]))
        _send(conn, protocol.HostOutcome("Failed", error={"message": message, "trace": ""}, start_ms=now, end_ms=now))

    def _code(self, conn: socket.socket, name: str) -> Path | None:
        """The function's code on this node, asked from the task (once per node) if missing.

        ``name`` is ``<function id>-<digest>``: the id picks the uid the function runs as."""
        if not re.fullmatch(r"\d+-[0-9a-f]{32}", name):
            return None
        target = self.dir / "code" / name
        if target.is_dir():
            return target
        _send(conn, protocol.NeedCode())
        data = _recv_bytes(conn)
        if data is None:
            return None
        with self._code_lock:
            if not target.is_dir():
                tmp = Path(tempfile.mkdtemp(dir=self.dir / "code", prefix=".unpack-"))
                with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                    tar.extractall(tmp, filter="data")
                os.rename(tmp, target)
        return target

    def _call(self, conn: socket.socket, request: protocol.HostCallOp, code_dir: Path) -> None:
        spec = request.call
        key = (request.server, spec.call_id)
        local_id = next(self._ids)
        events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        token = spec.token
        job = CallJob(
            call_id=local_id,
            function_id=spec.function_id,
            project=spec.project,
            env=spec.env,
            code_dir=code_dir,
            function_path=spec.function_path,
            data=spec.data,
            secrets=spec.secrets,
            env_vars=spec.env_vars,
            base_url=spec.base_url,
            token=(lambda: token) if token else None,
            schedule_id=spec.schedule_id,
            scheduled_time=spec.scheduled_time,
            function_version=spec.function_version,
            limits=spec.limits,
            on_log=lambda ts, line: events.put(("log", (ts, line))),
            info_call_id=spec.call_id,
        )
        with self._lock:
            self._calls[key] = local_id
        try:
            _send(conn, protocol.HostStarted(os.getpid()))
            future = self.executor.submit(job)
            future.add_done_callback(lambda f: events.put(("done", f.result())))

            def watch() -> None:  # the task's end closes the socket: the call ends with it
                _recv_exact(conn, 1)
                events.put(("closed", None))

            threading.Thread(target=watch, name="fnhost-host-watch", daemon=True).start()
            connected = True
            while True:
                kind, value = events.get()
                if kind == "closed":
                    if connected:
                        connected = False
                        self.executor.cancel(
                            local_id, "The Ray task that ran the call ended before the call did."
                        )
                    continue
                lines, outcome = [], None
                while True:
                    if kind == "log":
                        lines.append(value)
                    elif kind == "done":
                        outcome = value
                    if outcome is not None:
                        break
                    try:
                        kind, value = events.get_nowait()
                    except queue.Empty:
                        break
                    if kind == "closed":
                        events.put((kind, value))
                        break
                if connected and lines:
                    with contextlib.suppress(OSError):
                        _send(conn, protocol.HostLogs(lines))
                if outcome is not None:
                    if connected:
                        with contextlib.suppress(OSError):
                            _send(conn, _outcome_message(outcome))
                    return
        finally:
            with self._lock:
                self._calls.pop(key, None)


def _outcome_message(outcome: CallOutcome) -> protocol.HostOutcome:
    return protocol.HostOutcome(
        outcome.status, outcome.response, outcome.error, outcome.start_ms, outcome.end_ms, outcome.mode, outcome.usage
    )


# -- on each node: the task of one call -----------------------------------------------------------

_host_sockets: dict[str, str] = {}
_remotes: dict[str, Any] = {}


def _remote(target: Any) -> Any:
    """``ray.remote(target)``, made once per process (each new one is exported to the cluster)."""
    import ray

    made = _remotes.get(target.__name__)
    if made is None:
        made = _remotes[target.__name__] = ray.remote(target)
    return made


def _connect_host(node: NodeSettings, deadline: float) -> tuple[socket.socket, str]:
    """A connection to this node's host, starting the host (a detached actor) if needed.

    A host that just died is restarted by Ray; until it is back, its actor is unavailable
    and its socket refuses: keep trying until ``deadline`` (``time.monotonic()``).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray.get_runtime_context().get_node_id()
    path = _host_sockets.get(node_id + node.key) or _socket_path(node_id, node.key)
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            _host_sockets[node_id + node.key] = path
            return sock, node_id
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
        try:
            host = (
                _remote(NodeHost)
                .options(
                    name=_host_name(node_id, node.key),
                    namespace=NAMESPACE,
                    lifetime="detached",
                    get_if_exists=True,
                    num_cpus=0,
                    max_concurrency=64,
                    max_restarts=-1,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                )
                .remote(node_id, node)
            )
            path = ray.get(host.address.remote(), timeout=max(1.0, deadline - time.monotonic()))
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.ActorDiedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _code_exchange(sock: socket.socket, code_box: list[Any]) -> protocol.Message | None:
    """Read the host's next message, sending the code when it asks for it."""
    import ray

    while True:
        msg = _recv(sock)
        if not isinstance(msg, protocol.NeedCode):
            return msg
        _send(sock, ray.get(code_box[0]))


HOST_LOST = "The fnhost host process on the Ray node ended unexpectedly while the call ran."
HOST_LOST_PREPARING = "The fnhost host process on the Ray node ended unexpectedly while it prepared the function."


def _first_reply(
    request: protocol.HostCallOp | protocol.HostPrepareOp, code_box: list[Any], node: NodeSettings
) -> tuple[socket.socket, str, protocol.Message | None]:
    """Send ``request`` to this node's host and read its first reply (after any code exchange).

    A host that closes the connection before its first reply has done nothing with the
    request: it was going away (killed, or restarting after that) when the task reached it,
    so the request goes to the restarted host instead, until ``HOST_START_TIMEOUT_S`` (one
    deadline for every attempt, reaching the restarted host included). ``None`` as the reply
    means the deadline passed with no host answering.
    """
    deadline = time.monotonic() + HOST_START_TIMEOUT_S
    while True:
        sock, node_id = _connect_host(node, deadline)
        try:
            _send(sock, request)
            msg = _code_exchange(sock, code_box)
        except OSError:
            msg = None
        if msg is None and time.monotonic() < deadline:
            sock.close()
            time.sleep(0.2)
            continue
        return sock, node_id, msg


def run_call_task(request: protocol.HostCallOp, code_box: list[Any], node: NodeSettings) -> Any:
    """The body of a call's Ray task (a streaming generator of the host's events).

    The host's first reply says the call started (``_first_reply`` retries a host that
    went away before it). Once started, a lost host fails the call: what ran cannot be run
    again unasked.
    """
    sock, node_id, msg = _first_reply(request, code_box, node)
    try:
        while True:
            if msg is None:
                yield protocol.HostLost()
                return
            if isinstance(msg, protocol.HostStarted):
                msg.node, msg.worker_pid = node_id, os.getpid()
            yield msg
            if isinstance(msg, protocol.HostOutcome):
                return
            msg = _code_exchange(sock, code_box)
    finally:
        sock.close()


def prepare_task(request: protocol.HostPrepareOp, code_box: list[Any], node: NodeSettings) -> protocol.Prepared:
    """The body of a prepare's Ray task. A prepare is idempotent, so a host lost before it
    replied is asked again (``_first_reply``), as a call is before it starts."""
    sock, node_id, msg = _first_reply(request, code_box, node)
    try:
        if not isinstance(msg, protocol.Prepared):
            return protocol.Prepared(False, HOST_LOST_PREPARING, node=node_id)
        msg.node = node_id
        return msg
    finally:
        sock.close()


# -- in the server: the executor ----------------------------------------------------------------

_connection_lock = threading.Lock()
_connection_users: set[int] = set()  # executors in this process sharing its Ray connection


@dataclass
class _Call:
    job: CallJob
    node: str | None = None
    cancel_message: str | None = None
    gen: Any = None
    lines: list[tuple[int, str]] = field(default_factory=list)
    started_ms: int = 0
    worker_pid: int | None = None
    host_pid: int | None = None


@dataclass
class _Code:
    signature: tuple[int, int]
    digest: str
    ref: Any
    function_id: int = 0

    @property
    def name(self) -> str:
        """The code's directory name on a node: the function id (its uid) and the digest."""
        return f"{self.function_id}-{self.digest}"


class RayExecutor(Executor):
    """Runs calls on a Ray cluster (``FNHOST_EXECUTOR=ray``, ``FNHOST_RAY_ADDRESS``)."""

    def __init__(
        self,
        address: str | None,
        *,
        memory_budget_bytes: int = 2 * 1024**3,
        start_timeout_s: float = 300.0,
        node: NodeSettings | None = None,
    ) -> None:
        self.address = address
        self.node = dataclasses.replace(node or NodeSettings(), memory_budget_bytes=memory_budget_bytes)
        self.start_timeout_s = start_timeout_s
        self.server_id = secrets.token_hex(8)  # keys this server's calls on shared hosts
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._connected = False
        self._calls: dict[int, _Call] = {}
        self._codes: dict[str, _Code] = {}
        self._code_lock = threading.Lock()
        self._args: dict[tuple[str, str], tuple[str, ...]] = {}
        self._stopping = False
        self._ray: Any = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``loop`` is not used: this executor keeps a thread of its own, whose loop waits
        on Ray's futures."""
        if self._thread is not None:
            return
        if (self.address or "").startswith("ray://"):
            raise RuntimeError(
                "FNHOST_RAY_ADDRESS is a Ray Client address (ray://…), which cannot stream call "
                "events; run the server on a Ray node (`ray start --address=HEAD:6379 --num-cpus=0` "
                "next to it) and give the cluster's GCS address (HEAD:6379) or `auto`."
            )
        host = (self.address or "").rsplit(":", 1)[0].strip("[]")
        if host in LOOPBACK:
            # Ray replaces a loopback address with the host's external one unless told not to
            # (read when ray is imported); a loopback cluster must stay on loopback
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Under `uv run`, Ray would ship this server's project to every worker as a runtime
        # env (slow, and not what runs calls): the nodes run their own fnhost installation.
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError(
                "FNHOST_EXECUTOR=ray needs the ray extra: pip install 'fnhost[ray]'"
            ) from exc
        self._ray = ray
        with _connection_lock:
            if not ray.is_initialized():
                ray.init(
                    # never None: that would start a private Ray instance inside this server
                    address=self.address or "auto",
                    namespace=NAMESPACE,
                    log_to_driver=False,
                    configure_logging=False,
                )
            _connection_users.add(id(self))
        self._connected = True
        resources = ray.cluster_resources()
        log.info(
            "ray executor: cluster at %s with %g CPU, %.1f GB memory on %d node(s)",
            self.address or "auto",
            resources.get("CPU", 0),
            resources.get("memory", 0) / 1024**3,
            sum(1 for n in ray.nodes() if n.get("Alive")),
        )
        if self.node.allow_unisolated:
            log.warning(
                "ray executor: FNHOST_RAY_ALLOW_UNISOLATED is set: Ray nodes that cannot isolate "
                "function code run calls UNISOLATED, with the node's rights"
            )
        else:
            log.info(
                "ray executor: each node isolates calls (FNHOST_ISOLATION=%s, network %s); a node "
                "that cannot refuses calls, saying why",
                self.node.isolation,
                self.node.network,
            )
        self.loop, self._thread = start_loop_thread("fnhost-ray-executor")

    def stop(self) -> None:
        if self._thread is None or self.loop is None:
            return
        self._stopping = True
        for call_id in list(self._calls):
            self.cancel(call_id, "The server stopped while the call ran.")
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._drain(), self.loop).result(STOP_GRACE_S + 5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self._thread = None
        if self._connected:
            self._connected = False
            with _connection_lock:  # one connection per process: the last executor ends it
                _connection_users.discard(id(self))
                if not _connection_users:
                    self._ray.shutdown()

    async def _drain(self) -> None:
        deadline = asyncio.get_running_loop().time() + STOP_GRACE_S
        while self._calls and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for call in list(self._calls.values()):  # a host that does not answer: stop waiting
            if call.gen is not None:
                with contextlib.suppress(Exception):
                    self._ray.cancel(call.gen, force=True)

    # -- code shipping ------------------------------------------------------------------------
    def _code(self, code_dir: Path) -> _Code:
        """The code as a tar in Ray's object store, made once per code directory."""
        st = code_dir.stat()
        signature = (st.st_ino, st.st_mtime_ns)
        with self._code_lock:
            known = self._codes.get(str(code_dir))
            if known is not None and known.signature == signature:
                return known
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                for path in sorted(code_dir.rglob("*")):
                    if "__pycache__" in path.parts:
                        continue
                    tar.add(path, arcname=str(path.relative_to(code_dir)), recursive=False)
            data = buf.getvalue()
            function_id = int(code_dir.name) if code_dir.name.isdigit() else 0
            code = _Code(signature, hashlib.sha256(data).hexdigest()[:32], self._ray.put(data), function_id)
            self._codes[str(code_dir)] = code
            return code

    @staticmethod
    def _env(env: EnvironmentLike) -> protocol.EnvRef:
        return protocol.EnvRef(str(env.hash), str(env.python), [str(d) for d in env.site_dirs or ()])

    # -- public API ----------------------------------------------------------------------------
    def prepare(
        self,
        env: EnvironmentLike,
        code_dir: Path,
        function_path: str,
        env_vars: dict[str, str] | None = None,
        *,
        limits: CallLimits | None = None,  # not used: a node readies its process on its first call
    ) -> PrepareResult:
        ray = self._ray
        with self._code_lock:
            self._codes.pop(str(code_dir), None)  # a fresh build: ship the code again
        code = self._code(code_dir)
        request = protocol.HostPrepareOp(code.name, self._env(env), function_path, env_vars or {})
        task = _remote(prepare_task).options(num_cpus=0, max_retries=0)
        try:
            msg: protocol.Prepared = ray.get(task.remote(request, [code.ref], self.node), timeout=600)
        except Exception as exc:
            return PrepareResult(False, f"The function could not be prepared on the Ray cluster: {_describe(exc)}")
        result = PrepareResult(msg.ok, msg.message, msg.trace, msg.fork_safe, tuple(msg.args))
        if result.ok:
            self._args[(str(code_dir), function_path)] = result.args
        return result

    def submit(self, job: CallJob) -> Future[CallOutcome]:
        if self.loop is None:
            raise RuntimeError("the executor is not started")
        return asyncio.run_coroutine_threadsafe(self._run_safely(job), self.loop)

    def cancel(self, call_id: int, message: str) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._cancel, call_id, message)

    def drop(self, code_dir: Path, message: str = "The function was deleted.") -> None:
        with self._code_lock:
            code = self._codes.pop(str(code_dir), None)
        self._args = {k: v for k, v in self._args.items() if k[0] != str(code_dir)}
        if self.loop is not None:
            for call_id, call in list(self._calls.items()):
                if str(call.job.code_dir) == str(code_dir):
                    self.loop.call_soon_threadsafe(self._cancel, call_id, message)
        if code is None:
            return
        refs = [host.drop.remote(code.name, message) for host in self._hosts().values()]
        with contextlib.suppress(Exception):
            self._ray.get(refs, timeout=30)

    def stats(self) -> dict[str, Any]:
        """The hosts' own stats; ``functions`` keyed by this server's code directories."""
        if self._ray is None:
            return {}
        by_digest = {c.name: d for d, c in self._codes.items()}
        hosts: dict[str, Any] = {}
        functions: dict[str, Any] = {}
        for name, host in self._hosts().items():
            try:
                stats = self._ray.get(host.stats.remote(), timeout=10)
            except Exception as exc:
                hosts[name] = {"error": _describe(exc)}
                continue
            hosts[name] = stats
            for path, info in (stats.get("functions") or {}).items():
                functions[by_digest.get(Path(path).name, path)] = info
        return {"executor": "ray", "hosts": hosts, "functions": functions, "running": len(self._calls)}

    def _hosts(self) -> dict[str, Any]:
        ray = self._ray
        out = {}
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry.get("name", "")
            if entry.get("namespace") == NAMESPACE and name.startswith(HOST_PREFIX) and name.endswith(self.node.key):
                with contextlib.suppress(ValueError):
                    out[entry["name"]] = ray.get_actor(entry["name"], namespace=NAMESPACE)
        return out

    # -- calls (on the executor's event loop) ---------------------------------------------------
    def _cancel(self, call_id: int, message: str) -> None:
        call = self._calls.get(call_id)
        if call is None or call.cancel_message is not None:
            return
        call.cancel_message = message
        if call.node is not None:
            self._cancel_on_host(call)
        elif call.gen is not None:  # not started yet: Ray drops the waiting task
            with contextlib.suppress(Exception):
                self._ray.cancel(call.gen, force=True)

    def _cancel_on_host(self, call: _Call) -> None:
        try:
            host = self._ray.get_actor(_host_name(str(call.node), self.node.key), namespace=NAMESPACE)
            host.cancel.remote(self.server_id, call.job.call_id, call.cancel_message)
        except Exception:
            log.exception("call %s: cancelling on the Ray node failed", call.job.call_id)
            with contextlib.suppress(Exception):
                self._ray.cancel(call.gen, force=True)

    async def _run_safely(self, job: CallJob) -> CallOutcome:
        start = now_ms()
        call = _Call(job)
        self._calls[job.call_id] = call
        try:
            outcome = await self._run(call)
        except Exception as exc:
            log.exception("call %s could not run on Ray", job.call_id)
            outcome = self._failed(call, f"The call could not run on the Ray cluster: {_describe(exc)}")
        finally:
            self._calls.pop(job.call_id, None)
        outcome.start_ms = outcome.start_ms or start
        outcome.end_ms = outcome.end_ms or now_ms()
        return outcome

    def _failed(self, call: _Call, message: str) -> CallOutcome:
        """An outcome fnhost decides (lost, cancelled, never started), logged like the local one."""
        if call.cancel_message is not None:
            message = call.cancel_message
        line = (now_ms(), f"[fnhost] {message}")
        call.lines.append(line)
        self._publish(call, line)
        return CallOutcome(
            "Failed",
            error={"message": message, "trace": ""},
            logs=call.lines,
            start_ms=call.started_ms,
            end_ms=now_ms(),
        )

    def _publish(self, call: _Call, line: tuple[int, str]) -> None:
        if call.job.on_log is not None:
            try:
                call.job.on_log(*line)
            except Exception:
                log.exception("live log subscriber failed")

    async def _run(self, call: _Call) -> CallOutcome:
        ray = self._ray
        job = call.job
        loop = asyncio.get_running_loop()
        code = await loop.run_in_executor(None, self._code, job.code_dir)
        args = self._args.get((str(job.code_dir), job.function_path))
        wants_token = job.token is not None and (args is None or "client" in args)
        token = await loop.run_in_executor(None, job.token) if wants_token and job.token else None
        limits = job.limits
        spec = protocol.CallSpec(
            call_id=job.call_id,
            function_id=job.function_id,
            project=job.project,
            env=self._env(job.env),
            function_path=job.function_path,
            data=job.data,
            secrets=job.secrets,
            env_vars=job.env_vars,
            base_url=job.base_url,
            token=token,
            schedule_id=job.schedule_id,
            scheduled_time=job.scheduled_time,
            limits=limits,
            function_version=job.function_version,
        )
        if call.cancel_message is not None:
            return self._failed(call, call.cancel_message)
        task = _remote(run_call_task).options(
            num_cpus=limits.cpu,
            memory=max(1, int(limits.memory_bytes)),
            max_retries=0,
            retry_exceptions=False,
            num_returns="streaming",
        )
        call.gen = task.remote(protocol.HostCallOp(self.server_id, spec, code.name), [code.ref], self.node)
        events = call.gen.__aiter__()
        deadline = self.start_timeout_s
        while True:
            try:
                ref = await asyncio.wait_for(events.__anext__(), deadline)
                msg = await ref
            except StopAsyncIteration:
                return self._failed(call, HOST_LOST)
            except TimeoutError:
                with contextlib.suppress(Exception):
                    ray.cancel(call.gen, force=True)
                if call.node is None:
                    gb = f"{limits.memory_bytes / 1024**3:g} GB"
                    return self._failed(
                        call,
                        f"No Ray node could start the call within {self.start_timeout_s:g} s (it asks for "
                        f"{limits.cpu:g} CPU and {gb} memory; is the cluster big enough, or its "
                        "autoscaler running?).",
                    )
                return self._failed(
                    call, "The Ray node running the call stopped reporting on it; it was stopped."
                )
            except Exception as exc:
                if call.cancel_message is not None:
                    return self._failed(call, call.cancel_message)
                return self._failed(
                    call,
                    f"The call was lost: the Ray worker or node running it failed ({_describe(exc)}).",
                )
            if isinstance(msg, protocol.HostStarted):
                call.node = msg.node
                call.worker_pid = msg.worker_pid
                call.host_pid = msg.host_pid
                call.started_ms = now_ms()
                deadline = limits.timeout_s + SILENCE_GRACE_S
                if call.cancel_message is not None:
                    self._cancel_on_host(call)
            elif isinstance(msg, protocol.HostLogs):
                for ts, line in msg.lines:
                    call.lines.append((ts, line))
                    self._publish(call, (ts, line))
            elif isinstance(msg, protocol.HostLost):
                return self._failed(call, HOST_LOST)
            elif isinstance(msg, protocol.HostOutcome):
                return CallOutcome(
                    msg.status,  # type: ignore[arg-type]
                    response=msg.response,
                    error=msg.error,
                    logs=call.lines,
                    start_ms=msg.start_ms or call.started_ms,
                    end_ms=msg.end_ms or now_ms(),
                    mode=msg.mode,
                    usage=msg.usage,
                )

    def running(self) -> dict[int, dict[str, Any]]:
        """Calls in flight: where they run (for tests and ``stats``)."""
        return {
            i: {"node": c.node, "workerPid": c.worker_pid, "hostPid": c.host_pid, "started": bool(c.started_ms)}
            for i, c in list(self._calls.items())
        }


def _describe(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # RayTaskError wraps what went wrong in the task
    if isinstance(cause, BaseException) and cause is not exc:
        return _describe(cause)
    text = _ANSI.sub("", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
