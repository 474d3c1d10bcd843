"""What the server, its zygotes and calls, and Ray node hosts say to each other.

One definition for both ends: ``run/local.py`` and ``run/ray.py`` import this module as
``fnhost.run.protocol``; ``bootstrap.py``, which runs inside a function's environment and
may import nothing of fnhost's, loads this same file by path (it sits beside it, also in a
sandbox). So this module uses the standard library only.

Messages are JSON objects, one per SOCK_SEQPACKET packet between the server and a zygote
(descriptors travel beside them with SCM_RIGHTS), length-prefixed between a Ray task and its
node's host. Keys are camelCase on the wire; ``op`` names a request, ``event`` a report.

    server → env zygote       FunctionOp   fork a function zygote (one fd: its socket)
    env zygote → server       Ready        the environment is imported
    server → function zygote  RunOp        run a call (fds: job, log, result, cgroup.procs…)
                              SpareOp      fork the next call's process ahead (fds: cgroup.procs…)
                              DropSpareOp  the spare is not needed
    function zygote → server  Ready        the handler is imported (or why not)
    call / spare → server     Started, SpareUp   sent by the process itself: its pid comes
                                           with the socket credentials, seen from the server
    function zygote → server  Exit, SpareGone

A call's job (``JobSpec``) travels in a memfd, not on a socket: it may be large.

Between a call's Ray task and its node's host (``run/ray.py``)::

    task → host    HostCallOp (a ``CallSpec``), HostPrepareOp; then the code if asked
    host → task    NeedCode, HostStarted, HostLogs, HostOutcome | Prepared

``VERSION`` changes whenever a message changes shape: Ray node hosts are named by it, so a
server never talks to a host of another version.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

VERSION = 4


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


class Message:
    """A dataclass sent as JSON with camelCase keys and a ``tag`` (its ``op`` or ``event``)."""

    kind: ClassVar[str] = "op"  # the key that carries the tag: "op" or "event"
    tag: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        out = wire(self)
        out[self.kind] = self.tag
        return out

    def dumps(self) -> bytes:
        return json.dumps(self.to_wire()).encode()

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Any:
        return build(cls, data)


def build(cls: type, data: dict[str, Any]) -> Any:
    """``cls`` (a dataclass) from its camelCase JSON form; nested dataclasses are built too,
    unknown keys are ignored."""
    shape = _shape(cls)
    values = {}
    for key, value in data.items():
        found = shape.by_camel.get(key)
        if found is None:
            continue
        name, nested = found
        values[name] = build(nested, value) if nested is not None and isinstance(value, dict) else value
    return cls(**values)


@dataclass(frozen=True)
class _Shape:
    """A message class's fields as the wire needs them, worked out once per class: every
    call encodes and decodes several messages, and both ends are on its path."""

    fields: tuple[tuple[str, str], ...]  # (name, camelCase name)
    by_camel: dict[str, tuple[str, type | None]]  # camelCase name -> (name, nested dataclass)


_SHAPES: dict[type, _Shape] = {}


def _shape(cls: type) -> _Shape:
    shape = _SHAPES.get(cls)
    if shape is None:
        hints = typing.get_type_hints(cls)
        names = [(f.name, _camel(f.name)) for f in fields(cls)]
        shape = _SHAPES[cls] = _Shape(
            tuple(names), {camel: (name, _dataclass_in(hints.get(name))) for name, camel in names}
        )
    return shape


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a field's type names (``X`` or ``X | None``), if any."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        for arg in typing.get_args(hint):
            if isinstance(arg, type) and dataclasses.is_dataclass(arg):
                return arg
    return None


def wire(value: Any) -> dict[str, Any]:
    """A dataclass as its camelCase JSON form (nested ones too)."""
    out = {}
    for name, camel in _shape(type(value)).fields:
        v = getattr(value, name)
        out[camel] = wire(v) if hasattr(type(v), "__dataclass_fields__") else v
    return out


_BY_TAG: dict[tuple[str, str], type[Message]] = {}


def _message(cls: type[Message]) -> type[Message]:
    _BY_TAG[(cls.kind, cls.tag)] = cls
    return cls


def decode(raw: bytes | str | dict[str, Any]) -> Message | None:
    """The message ``raw`` holds, or None if it is none this protocol knows."""
    data = json.loads(raw) if isinstance(raw, bytes | str) else raw
    if not isinstance(data, dict):
        return None
    for kind in ("op", "event"):
        if kind in data:
            cls = _BY_TAG.get((kind, str(data[kind])))
            return cls.from_wire(data) if cls is not None else None
    return None


# -- a call's job --------------------------------------------------------------------------


@dataclass(frozen=True)
class CallLimits:
    """A call's limits as the server decides them (``services``), for any executor."""

    timeout_s: float = 540.0
    memory_bytes: int = int(1.5 * 1024**3)
    cpu: float = 1.0
    max_processes: int = 64
    max_file_bytes: int = 512 * 1024 * 1024
    max_open_files: int = 1024
    response_max_bytes: int = 1024 * 1024
    log_max_bytes: int = 1024 * 1024
    # CPU time per process; None: what ``cpu`` cores allow in ``timeout_s``
    cpu_time_s: float | None = None

    def cpu_seconds(self) -> int:
        seconds = self.cpu_time_s if self.cpu_time_s is not None else self.timeout_s * self.cpu
        return max(1, math.ceil(seconds))


@dataclass
class Limits:
    """What the call's own process enforces on itself (the server owns wall time and cgroups)."""

    memory_bytes: int = 0
    max_file_bytes: int | None = None
    max_open_files: int | None = None
    response_max_bytes: int = 1 << 20
    cpu_seconds: int | None = None
    max_processes: int | None = None  # RLIMIT_NPROC: only when there is no pids cgroup
    address_space_bytes: int | None = None  # RLIMIT_AS: only when there is no memory cgroup


@dataclass
class JobSpec:
    """Everything a call's process needs, as it sees it (paths inside its sandbox)."""

    call_id: int
    function_id: int
    project: str
    code_dir: str
    function_path: str
    data: Any = None
    secrets: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    base_url: str = ""
    token: str | None = None  # only when the handler declares ``client``
    schedule_id: int | None = None
    scheduled_time: int | None = None
    limits: Limits = field(default_factory=Limits)
    private_tmp: bool = False  # mount a tmpfs of its own on /tmp and /dev/shm
    function_version: int | None = None  # the function's version the call runs

    def dumps(self) -> bytes:
        return json.dumps(wire(self)).encode()

    @classmethod
    def loads(cls, raw: bytes) -> JobSpec:
        job: JobSpec = build(cls, json.loads(raw))
        return job


# -- server ↔ zygotes ------------------------------------------------------------------------


@dataclass
class FunctionSandbox:
    """How a *shared* environment zygote makes one function's sandbox after the fork.

    Paths are as the environment zygote sees them. The function zygote unshares mount, PID,
    IPC, UTS (and network) namespaces, covers ``hide`` with empty tmpfs, binds what is its
    own back on top read-only (``code_dir`` at /function, ``keep`` where they were, each of
    ``sockets`` at its key), brings its loopback up, becomes ``uid`` for good, and only then
    reads anything of the function's.
    """

    uid: int
    code_dir: str
    keep: list[str] = field(default_factory=list)  # its interpreter's and environment's dirs
    hide: list[str] = field(default_factory=list)  # every function's code, environments, sockets
    sockets: dict[str, str] = field(default_factory=dict)  # path inside -> path outside
    network: bool = True  # a network namespace of its own
    forwards: list[str] = field(default_factory=list)  # its loopback forwarder's PORT=SOCKET
    site_dirs: list[str] = field(default_factory=list)  # added to sys.path once it is the function's uid


@_message
@dataclass
class FunctionOp(Message):
    tag: ClassVar[str] = "function"
    code_dir: str
    function_path: str
    env_vars: dict[str, str] = field(default_factory=dict)
    private_tmp: bool = False
    sandbox: FunctionSandbox | None = None  # set: a shared zygote builds the function's sandbox


@_message
@dataclass
class RunOp(Message):
    tag: ClassVar[str] = "run"
    call: int
    spare: int | None = None  # hand the call to this spare (its fds then follow the job's)


@_message
@dataclass
class SpareOp(Message):
    tag: ClassVar[str] = "spare"
    spare: int


@_message
@dataclass
class DropSpareOp(Message):
    tag: ClassVar[str] = "drop-spare"
    spare: int


@_message
@dataclass
class Ready(Message):
    """From an env zygote (``ok`` is then always true) or a function zygote."""

    kind: ClassVar[str] = "event"
    tag: ClassVar[str] = "ready"
    ok: bool = True
    pid: int = 0
    fork_safe: bool = False
    args: list[str] = field(default_factory=list)  # the names ``handle`` declares
    message: str = ""
    trace: str = ""
    # an environment zygote's: the top-level modules it imported (a function whose own
    # packages would shadow one of them cannot share it)
    modules: list[str] = field(default_factory=list)


@_message
@dataclass
class Started(Message):
    kind: ClassVar[str] = "event"
    tag: ClassVar[str] = "started"
    call: int
    pid: int = 0


@_message
@dataclass
class Exit(Message):
    kind: ClassVar[str] = "event"
    tag: ClassVar[str] = "exit"
    call: int
    pid: int
    status: int  # as from waitpid
    # its own accounting, from wait4: CPU seconds of it and the children it waited for, and
    # its peak resident set (kB)
    user_s: float = 0.0
    system_s: float = 0.0
    max_rss_kb: int = 0


@dataclass
class Usage:
    """What a call used, from its cgroups where it had them (every process it started, the
    ones it did not wait for too), else from its process's own accounting (rusage)."""

    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0
    peak_memory_bytes: int = 0
    source: str = "rusage"  # or "cgroup"


@_message
@dataclass
class SpareUp(Message):
    kind: ClassVar[str] = "event"
    tag: ClassVar[str] = "spare"
    spare: int
    pid: int = 0


@_message
@dataclass
class SpareGone(Message):
    kind: ClassVar[str] = "event"
    tag: ClassVar[str] = "spare-gone"
    spare: int


# -- a Ray task ↔ its node's host -----------------------------------------------------------


@dataclass
class EnvRef:
    """A function's environment by where it is (the same path on every node)."""

    hash: str
    python: str
    site_dirs: list[str] = field(default_factory=list)


@dataclass
class CallSpec:
    """A call as a node's host gets it: a ``CallJob`` without its callbacks."""

    call_id: int
    function_id: int
    project: str
    env: EnvRef
    function_path: str
    data: Any = None
    secrets: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    base_url: str = ""
    token: str | None = None
    schedule_id: int | None = None
    scheduled_time: int | None = None
    limits: CallLimits = field(default_factory=CallLimits)
    function_version: int | None = None


@_message
@dataclass
class HostCallOp(Message):
    tag: ClassVar[str] = "call"
    server: str  # which server's call (hosts are shared): with ``call.call_id``, its key
    call: CallSpec
    code: str  # the code's name on the node: "<function id>-<digest>"


@_message
@dataclass
class HostPrepareOp(Message):
    tag: ClassVar[str] = "prepare"
    code: str
    env: EnvRef
    function_path: str
    env_vars: dict[str, str] = field(default_factory=dict)


@_message
@dataclass
class NeedCode(Message):
    """The host lacks the code: the task sends the tar next, as a frame of bytes."""

    kind: ClassVar[str] = "event"
    tag: ClassVar[str] = "need-code"


@_message
@dataclass
class HostStarted(Message):
    kind: ClassVar[str] = "event"
    tag: ClassVar[str] = "host-started"
    host_pid: int
    node: str = ""  # added by the task
    worker_pid: int = 0  # added by the task


@_message
@dataclass
class HostLogs(Message):
    kind: ClassVar[str] = "event"
    tag: ClassVar[str] = "host-logs"
    lines: list[tuple[int, str]]


@_message
@dataclass
class HostOutcome(Message):
    kind: ClassVar[str] = "event"
    tag: ClassVar[str] = "host-outcome"
    status: str
    response: str | None = None
    error: dict[str, str] | None = None
    start_ms: int = 0
    end_ms: int = 0
    mode: str = ""
    usage: Usage | None = None


@_message
@dataclass
class Prepared(Message):
    kind: ClassVar[str] = "event"
    tag: ClassVar[str] = "prepared"
    ok: bool
    message: str = ""
    trace: str = ""
    fork_safe: bool = False
    args: list[str] = field(default_factory=list)
    node: str = ""


@_message
@dataclass
class HostLost(Message):
    """The task's own word that its host went away (never sent by a host)."""

    kind: ClassVar[str] = "event"
    tag: ClassVar[str] = "host-lost"
