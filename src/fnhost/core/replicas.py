"""Replicas: which server owns a call or a build, and whether that server is still alive."""

from __future__ import annotations

import os
import socket


def owner_is_dead(owner: str, *, shared_with_other_hosts: bool) -> bool:
    """Owners are ``host-pid-random``. On this host, a missing pid means a dead server.

    An owner on another host is taken for dead only when the database cannot be shared
    with other hosts (SQLite); elsewhere its leases say when it is gone.
    """
    try:
        host, pid, _ = owner.rsplit("-", 2)
        pid_value = int(pid)
    except ValueError:
        return True
    if host != socket.gethostname():
        return not shared_with_other_hosts
    if pid_value == os.getpid():
        return False
    try:
        os.kill(pid_value, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
