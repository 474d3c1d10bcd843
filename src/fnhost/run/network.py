"""What a sandbox may reach on the network, and the host side that enforces it.

Every bubblewrap sandbox (a function's calls, a function's build) has a network namespace of
its own: its own loopback and nothing else. Inside it, a small forwarder
(``bootstrap._forward``) listens on loopback and hands each connection to a Unix socket
bound into the sandbox from this side::

    sandbox netns                               host (this module)
    127.0.0.1:API_PORT  ──▶ /run/fnhost/api.sock     the server's own API socket (uvicorn), or
                                                      an ``ApiRelay`` to the API over TCP (Ray nodes)
    127.0.0.1:PROXY_PORT ─▶ /run/fnhost/egress.sock  ``Egress``: an HTTP proxy (CONNECT and
                                                      absolute-URI requests) that resolves the
                                                      destination and connects only where the
                                                      sandbox's ``NetworkPolicy`` allows

The function sees ``HTTP_PROXY``/``HTTPS_PROXY`` pointing at the proxy port, and its
``client`` talks to the API port. The forwarder is not a boundary (function code may talk
to the Unix sockets itself); the boundary is this side: the namespace has no route to
anything else, and ``Egress`` decides each destination by its resolved address, after
resolution, so a name that resolves to a loopback or private address is refused too.

Policies (``FNHOST_NETWORK``): ``internet`` (default: the API, and public addresses), ``api-only``
(the API), ``none`` (nothing). ``FNHOST_NETWORK_ALLOW`` adds CIDRs any policy but ``none``
may reach. A build gets its function's policy plus the exact ``host:port`` of the package
indexes it was told to use.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import urlsplit

from fnhost.run._loop import start_loop_thread

log = logging.getLogger("fnhost.run")

NetworkMode = Literal["internet", "api-only", "none"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Listener"], Awaitable[None]]

# where a sandbox finds the host's sockets, and the loopback ports its forwarder listens on
SANDBOX_RUN_DIR = "/run/fnhost"
SANDBOX_API_SOCKET = f"{SANDBOX_RUN_DIR}/api.sock"
SANDBOX_EGRESS_SOCKET = f"{SANDBOX_RUN_DIR}/egress.sock"
SANDBOX_PROXY_PORT = 3128
DEFAULT_API_PORT = 8000  # as settings.SANDBOX_API_PORT_DEFAULT (run/ reads no settings)

HEAD_LIMIT = 64 * 1024
HEAD_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 15.0
MAX_CONNECTIONS_PER_SANDBOX = 128
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# public indexes uv uses when a function names none (files live on a second host)
DEFAULT_INDEX_HOSTS = (("pypi.org", 443), ("files.pythonhosted.org", 443))


@dataclass(frozen=True)
class NetworkPolicy:
    """Where one sandbox may connect to (besides its own loopback)."""

    mode: NetworkMode = "internet"
    allow: tuple[IPNetwork, ...] = ()  # the operator's extra destinations (FNHOST_NETWORK_ALLOW)
    # exact (host, port) pairs, whatever they resolve to: a build's package indexes
    allow_hosts: frozenset[tuple[str, int]] = field(default_factory=frozenset)

    @property
    def api(self) -> bool:
        return self.mode != "none"

    @property
    def egress(self) -> bool:
        """Whether the sandbox gets the egress proxy at all."""
        return self.mode == "internet" or bool(self.allow) or bool(self.allow_hosts)

    def describe(self) -> str:
        text = {
            "internet": "the API and public internet addresses (HTTP proxy)",
            "api-only": "the API only",
            "none": "nothing",
        }[self.mode]
        if self.allow and self.mode != "none":
            text += ", plus " + ", ".join(str(n) for n in self.allow)
        return text

    def for_build(self, index_urls: Iterable[str]) -> NetworkPolicy:
        """This policy plus the package indexes a build was told to use (uv's defaults if none)."""
        hosts = set(self.allow_hosts)
        named = [u for u in index_urls if u]
        for url in named:
            hosts.add(host_port(url))
        if not named:
            hosts.update(DEFAULT_INDEX_HOSTS)
        allow = self.allow if self.mode != "none" else ()
        return replace(self, allow=allow, allow_hosts=frozenset(hosts))


def policy_of(mode: str, allow: Iterable[str]) -> NetworkPolicy:
    """A policy from its settings (``FNHOST_NETWORK``, ``FNHOST_NETWORK_ALLOW``)."""
    if mode not in ("internet", "api-only", "none"):
        raise ValueError(f"unknown network policy {mode!r}: internet, api-only or none")
    return NetworkPolicy(mode, allow=parse_networks(allow))  # type: ignore[arg-type]


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs (``10.1.0.0/16``, ``2001:db8::/32``, or one address) as networks; ValueError if bad."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"not a URL with a host: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname.lower(), port


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_allowed(policy: NetworkPolicy, ip: IPAddress, own: Iterable[IPAddress] = ()) -> str | None:
    """None if ``policy`` lets a sandbox connect to ``ip``; otherwise why not, in words."""
    if policy.mode == "none":
        return "the function's network policy is 'none'"
    inner = _embedded_ipv4(ip)
    candidates = [ip] if inner is None else [inner, ip]  # what it carries says more
    if any(c in net for c in candidates for net in policy.allow if c.version == net.version):
        return None
    if policy.mode != "internet":
        return f"the function's network policy is '{policy.mode}'"
    for c in candidates:
        if c.is_loopback:
            return "it is a loopback address"
        if c in own:
            return "it is an address of this host"
        if c.is_link_local:
            return "it is a link-local address"
        if c.is_multicast or c.is_unspecified:
            return "it is not a unicast address"
        if not c.is_global:
            return "it is a private or reserved address"
    return None


def own_addresses() -> set[IPAddress]:
    """Every address of this host's interfaces (read from /proc, no extra packages)."""
    found: set[IPAddress] = set()
    with contextlib.suppress(OSError):
        lines = open("/proc/net/fib_trie").read().splitlines()  # noqa: SIM115
        for prev, line in itertools.pairwise(lines):
            if "/32 host LOCAL" in line:
                with contextlib.suppress(ValueError):
                    found.add(ipaddress.IPv4Address(prev.split()[-1]))
    with contextlib.suppress(OSError):
        for line in open("/proc/net/if_inet6").read().splitlines():  # noqa: SIM115
            raw = line.split()[0]
            with contextlib.suppress(ValueError):
                found.add(ipaddress.IPv6Address(":".join(raw[i : i + 4] for i in range(0, 32, 4))))
    return found


class _OwnAddresses:
    """``own_addresses()`` re-read at most every few seconds (interfaces change rarely)."""

    def __init__(self, ttl_s: float = 10.0) -> None:
        self.ttl_s = ttl_s
        self._at = 0.0
        self._value: set[IPAddress] = set()

    def get(self) -> set[IPAddress]:
        if time.monotonic() - self._at > self.ttl_s:
            self._value = own_addresses()
            self._at = time.monotonic()
        return self._value


def parse_request_head(head: bytes) -> tuple[str, str, int, bytes]:
    """(method, host, port, the head to send upstream) of a proxy request; ValueError if bad.

    ``CONNECT host:port`` tunnels (HTTPS and anything else); ``GET http://host/…`` is plain
    HTTP in absolute form, sent on in origin form without the ``Proxy-*`` headers.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError("not an HTTP proxy request")
    method, target, version = parts
    if method == "CONNECT":
        host, sep, port = target.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError("CONNECT needs host:port")
        return method, host.strip("[]").lower(), int(port), b""
    url = urlsplit(target)
    if url.scheme != "http" or not url.hostname:
        raise ValueError("only CONNECT and absolute http:// requests go through this proxy")
    path = url.path or "/"
    if url.query:
        path += "?" + url.query
    kept = [
        line for line in lines[1:]
        if line and not line.lower().startswith((b"proxy-connection:", b"proxy-authorization:"))
    ]
    upstream = b"\r\n".join([f"{method} {path} {version}".encode("latin-1"), *kept]) + b"\r\n\r\n"
    return method, url.hostname.lower(), url.port or 80, upstream


class Egress:
    """The host side of every sandbox's network: HTTP proxies and API relays on Unix sockets.

    Runs on an event loop thread of its own ("fnhost-network"), shared by the executor and
    the builder; costs nothing while no sandbox connects anywhere.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._own = _OwnAddresses()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self.loop is None:
                self.loop, self._thread = start_loop_thread("fnhost-network")
            return self.loop

    def close(self) -> None:
        """Stop every listener and connection, then the loop (the server is stopping)."""
        with self._lock:
            loop, thread, self.loop, self._thread = self.loop, self._thread, None, None
        if loop is None or thread is None:
            return

        async def finish() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            await asyncio.sleep(0)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(finish(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    # -- listeners ---------------------------------------------------------------------------
    def proxy(self, path: str, policy: NetworkPolicy, name: str) -> Listener:
        """An HTTP proxy for one sandbox on the Unix socket ``path`` (made mode 0666)."""
        return self._listen(("unix", path), lambda r, w, ln: self._proxy(r, w, policy, name, ln))

    def proxy_tcp(self, policy: NetworkPolicy, name: str) -> Listener:
        """The same on a loopback TCP port of the host, for uv run on the host (wheels only)."""
        return self._listen(("tcp", "127.0.0.1"), lambda r, w, ln: self._proxy(r, w, policy, name, ln))

    def relay(self, path: str, host: str, port: int) -> Listener:
        """The API for sandboxes on a host without the server's own socket (a Ray node)."""

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: Listener) -> None:
            try:
                up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError):
                writer.close()
                return
            await _splice(reader, writer, up_r, up_w)

        return self._listen(("unix", path), serve)

    def _listen(self, where: tuple[str, str], serve: _Handler) -> Listener:
        loop = self._ensure()
        listener = Listener(self, where)

        async def start() -> None:
            async def guarded(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                if listener.active >= MAX_CONNECTIONS_PER_SANDBOX:
                    w.close()
                    return
                listener.active += 1
                try:
                    await serve(r, w, listener)
                except asyncio.CancelledError:
                    pass  # stopping
                except Exception:
                    log.exception("sandbox network connection failed")
                finally:
                    listener.active -= 1
                    w.close()

            if where[0] == "unix":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(where[1])
                listener.server = await asyncio.start_unix_server(guarded, path=where[1])
                os.chmod(where[1], 0o666)  # noqa: S103  (the function's uid connects; the dir keeps others out)
            else:
                listener.server = await asyncio.start_server(guarded, host=where[1], port=0)
                listener.port = int(listener.server.sockets[0].getsockname()[1])

        asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        return listener

    # -- the proxy ---------------------------------------------------------------------------
    async def _proxy(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        policy: NetworkPolicy,
        name: str,
        listener: Listener,
    ) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            method, host, port, upstream_head = parse_request_head(head[:HEAD_LIMIT])
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
            await _refuse(writer, 400, f"fnhost egress proxy: {exc}")
            return
        target = await self._resolve(policy, host, port)
        if isinstance(target, str):
            log.info("network: %s: refused %s:%s (%s)", name, host, port, target)
            note = f"fnhost network policy: {host}:{port} is not reachable from functions: {target}."
            listener.notes.append(note)
            await _refuse(writer, 403, note)
            return
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(str(target), port), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            note = f"fnhost egress proxy: cannot connect to {host}:{port}: {exc}"
            listener.notes.append(note)
            await _refuse(writer, 502, note)
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            up_w.write(upstream_head)
        await _splice(reader, writer, up_r, up_w)

    async def _resolve(self, policy: NetworkPolicy, host: str, port: int) -> IPAddress | str:
        """The address to connect to, or why none may be."""
        named = (host, port) in policy.allow_hosts
        if policy.mode == "none" and not named:
            return "the function's network policy is 'none'"
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            return f"its name does not resolve ({exc})"
        own = self._own.get()
        why = "its name resolves to no address"
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if named:
                return ip
            reason = address_allowed(policy, ip, own)
            if reason is None:
                return ip
            why = f"{ip}: {reason}"
        return why



@dataclass
class Listener:
    """One listening socket of ``Egress``; ``close()`` stops it (connections in flight end)."""

    egress: Egress
    where: tuple[str, str]
    server: asyncio.AbstractServer | None = None
    port: int = 0
    active: int = 0
    # what the proxy refused or could not reach, for the error of a build that failed on it
    notes: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        loop = self.egress.loop
        server, self.server = self.server, None
        if server is None or loop is None or loop.is_closed() or not loop.is_running():
            return

        async def stop() -> None:
            server.close()
            if hasattr(server, "close_clients"):
                server.close_clients()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        if self.where[0] == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.where[1])


async def _refuse(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    body = (message + "\n").encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode() + body
    )
    with contextlib.suppress(OSError):
        await writer.drain()


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_r: asyncio.StreamReader,
    up_w: asyncio.StreamWriter,
) -> None:
    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                chunk = await src.read(1 << 16)
                if not chunk:
                    break
                dst.write(chunk)
                await dst.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                if dst.can_write_eof():
                    dst.write_eof()

    try:
        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))
    finally:
        up_w.close()
