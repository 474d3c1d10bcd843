"""Every table module, imported so that ``metadata`` is complete (Alembic's target)."""

from __future__ import annotations

# one import per line, so that adding a table module is a one-line change
from fnhost.store import (
    assets,  # noqa: F401
    blobs,  # noqa: F401
    calls,  # noqa: F401
    clients,  # noqa: F401
    files,  # noqa: F401
    functions,  # noqa: F401
    groups,  # noqa: F401
    identity,  # noqa: F401
    projects,  # noqa: F401
    raw,  # noqa: F401
    replicas,  # noqa: F401
    schedules,  # noqa: F401
    sessions,  # noqa: F401
    versions,  # noqa: F401
)
from fnhost.store.base import Base

metadata = Base.metadata
