"""What the HTTP edge (the API and the web page) uses of the running system.

A Protocol, so the edge names the services it calls without importing the composition root
(``fnhost.system``, a layer above it); ``System`` satisfies it as it is. A route that needs
something new of the system gets it added here, where it can be seen.
"""

from __future__ import annotations

from typing import Protocol

from fnhost.auth.tokens import TokenService
from fnhost.core.ratelimit import RateLimiter
from fnhost.metrics import Metrics
from fnhost.services.access import Access
from fnhost.services.assets import Assets
from fnhost.services.calls import Calls
from fnhost.services.files import Files
from fnhost.services.functions import Functions
from fnhost.services.groups import Groups
from fnhost.services.overview import Overview
from fnhost.services.raw import Raw
from fnhost.services.schedules import Schedules
from fnhost.services.sessions import Sessions
from fnhost.services.versions import Versions
from fnhost.settings import Settings
from fnhost.store.db import Database


class Services(Protocol):
    settings: Settings
    db: Database  # only to ask whether it is quick (api/deps.py ``quickly``)
    tokens: TokenService
    rate_limiter: RateLimiter
    metrics: Metrics
    access: Access
    sessions: Sessions
    files: Files
    functions: Functions
    versions: Versions
    calls: Calls
    schedules: Schedules
    groups: Groups
    assets: Assets
    raw: Raw
    overview: Overview

    @property
    def public_url(self) -> str: ...


class Lifecycle(Services, Protocol):
    """What the app's lifespan does with it."""

    def migrate(self) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
