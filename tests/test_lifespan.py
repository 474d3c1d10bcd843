"""The app's lifespan, in-process (``api/app.py``): what start-up leaves for the server's life."""

from __future__ import annotations

import gc
from pathlib import Path

from fastapi.testclient import TestClient

from fnhost.api.app import create_app
from fnhost.settings import Settings
from fnhost.system import System


def test_start_up_puts_what_it_made_out_of_the_collectors_reach(tmp_path: Path) -> None:
    """A full collection walks every tracked object: start-up's (the modules, the app, the
    ORM's and pydantic's tables) live as long as the server, so they are frozen, and the
    collections that calls trigger walk only what calls made."""
    gc.unfreeze()  # whatever this test process froze before: only the lifespan's freeze counts
    settings = Settings(home=tmp_path, isolation="none")
    system = System(settings)
    try:
        with TestClient(create_app(settings, system)) as client:
            assert client.get("/health").json()["status"] == "ok"
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
        system.close()
