"""Every table module, imported so that ``metadata`` is complete (Alembic's target)."""

from __future__ import annotations

from fnhost.store import calls, clients, files, functions, groups, projects, sessions  # noqa: F401
from fnhost.store.base import Base

metadata = Base.metadata
