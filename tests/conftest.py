from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cognite.client import CogniteClient

from tests.live import LiveServer
from tests.raycluster import RAY_ENV, RayCluster


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server shared by the tests that need no special settings."""
    live = LiveServer(tmp_path_factory.mktemp("fnhost-home")).start()
    yield live
    live.stop()


@pytest.fixture(scope="session")
def admin_creds(server: LiveServer) -> dict[str, Any]:
    return server.create_client("admin-tests")


@pytest.fixture(scope="session")
def client(server: LiveServer, admin_creds: dict[str, Any]) -> CogniteClient:
    return server.client(admin_creds)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Any]:
    """Start extra servers with their own settings; all are stopped after the test."""
    started: list[LiveServer] = []

    def _start(env: dict[str, str] | None = None, home: Path | None = None) -> LiveServer:
        live = LiveServer(home or tmp_path / f"home{len(started)}", env=env).start()
        started.append(live)
        return live

    yield _start
    for live in started:
        live.stop()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """One local Ray cluster on 127.0.0.1 for the whole session (it takes ~10 s and ~1 GB).

    The ray extra is part of the test setup: without it these tests fail, unless
    FNHOST_TEST_SKIP_RAY=1 says this run is knowingly without Ray.
    """
    if os.environ.get("FNHOST_TEST_SKIP_RAY") == "1":
        pytest.skip("FNHOST_TEST_SKIP_RAY=1: the Ray executor is not tested in this run")
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)  # read when ray is imported, in this process too
    cluster = RayCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()
