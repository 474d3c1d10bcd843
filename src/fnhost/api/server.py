"""Serving the app: uvicorn on the configured TCP address and, for sandboxes, a Unix socket.

Function sandboxes have network namespaces of their own with no route to the host, so
their ``client`` reaches this API through a Unix socket bound into each sandbox
(``run/network.py``). It is the same app on a second listening socket: no proxy hop.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from fnhost.api.httpguard import protocol_with_header_timeout
from fnhost.settings import Settings


def unix_listener(path: Path) -> socket.socket:
    """A listening Unix socket that function uids may connect to (its directory is private)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o666)  # noqa: S103  (only reachable where it is bound: in sandboxes)
    sock.listen(2048)
    return sock


def run(app: FastAPI, settings: Settings, *, api_socket: Path, log_level: str) -> None:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        log_config=None,  # serverlog.configure set up every logger (text or JSON)
        access_log=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.http_keep_alive_seconds,
        http=protocol_with_header_timeout(settings.http_header_timeout_seconds),
    )
    sockets = [config.bind_socket(), unix_listener(api_socket)]
    uvicorn.Server(config).run(sockets=sockets)
