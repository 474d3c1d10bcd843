from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cognite.client import CogniteClient

from tests.live import LiveServer
from tests.raycluster import RAY_ENV, RayCluster

# -- running the suite in parallel (pytest-xdist; ./scripts/test passes -n and --dist loadgroup) --
# A test module is the unit of work: its module-scoped fixtures (a live server, deployed
# functions, a browser) are made once, on the one worker that runs it. Tests that use the
# session's Ray cluster form one unit of their own ("ray"), so one worker runs them all and
# the machine holds one test cluster at a time, as in a serial run.
RAY_GROUP = "ray"

# The longest modules, whose tests share no more than the worker's session server and a few
# cheap module fixtures (a client, a login, one deploy), run as this many units of their own,
# their tests dealt out in turn: each unit makes those fixtures once.
SPLIT_MODULES = {"tests/test_cli.py": 2, "tests/test_identity.py": 2}

# Seconds each unit's tests took, summed (a run of ./scripts/test --durations=0 on the 2-core
# CI machine, which was busy: only the ratios matter). Units start longest first, so the
# longest is not the one still running at the end; a unit missing here goes after the listed
# ones, by its number of tests. Refresh it when a module grows a lot.
UNIT_SECONDS = {
    "tests/test_cli.py": 1013, "tests/test_identity.py": 1004, RAY_GROUP: 303,
    "tests/test_schedules.py": 260, "tests/test_ui_pages.py": 234, "tests/test_fuzz.py": 380,
    "tests/test_faults.py": 206, "tests/test_isolation.py": 174, "tests/test_hygiene.py": 152,
    "tests/test_ui.py": 143, "tests/test_assets.py": 136, "tests/test_calls.py": 135,
    "tests/test_escape.py": 133, "tests/test_docs.py": 127, "tests/test_function_data.py": 104,
    "tests/test_operations.py": 86, "tests/test_oidc.py": 77, "tests/test_functions.py": 76,
    "tests/test_versions.py": 150,
    "tests/test_metrics.py": 72, "tests/test_executor.py": 62, "tests/test_raw.py": 61,
    "tests/store/test_store_contract.py": 57, "tests/store/test_migrations.py": 38,
}


def _uses_ray(item: pytest.Item) -> bool:
    fixtures = set(getattr(item, "fixturenames", ()))
    return bool({"ray_cluster", "ray_executor"} & fixtures) or item.get_closest_marker("ray") is not None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    dealt: Counter[str] = Counter()
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        if _uses_ray(item):
            item.add_marker(pytest.mark.xdist_group(RAY_GROUP))
        elif module in SPLIT_MODULES:
            part = dealt[module] % SPLIT_MODULES[module]
            dealt[module] += 1
            item.add_marker(pytest.mark.xdist_group(f"{module}#{part}"))


def _unit_of(nodeid: str) -> str:
    """The work unit of a test: its xdist_group ("…@ray"), else its module."""
    if nodeid.rfind("@") > nodeid.rfind("]"):
        return nodeid.rsplit("@", 1)[1]
    return nodeid.split("::", 1)[0]


def _seconds(unit: str) -> float:
    module, _, part = unit.partition("#")
    return UNIT_SECONDS.get(module, 0) / (SPLIT_MODULES[module] if part else 1)


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's, which would answer first
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getoption("dist") != "loadgroup":
        return None  # any other --dist: xdist's own scheduler
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        """xdist's loadgroup with the module as the default group, and the units handed out
        longest first (UNIT_SECONDS, then the number of tests)."""

        def _split_scope(self, nodeid: str) -> str:
            return _unit_of(nodeid)

        def schedule(self) -> None:
            if self.collection is None and self.collection_is_completed:
                # xdist fills the ordered workqueue unit by unit, and a key already in it
                # keeps its place: entering the units first, in this order, is the order
                sizes = Counter(_unit_of(n) for n in next(iter(self.registered_collections.values())))
                for unit in sorted(sizes, key=lambda u: (-_seconds(u), -sizes[u], u)):
                    self.workqueue[unit] = {}
            super().schedule()

    return UnitScheduling(config, log)


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
