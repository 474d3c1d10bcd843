"""Scale-out end to end: two `fnhost serve` replicas on one PostgreSQL database, with the
database blob store and the Ray executor (a local Ray cluster on 127.0.0.1), driven with the
official cognite-sdk as a user would.

One fresh database per test run (``fnhost_test_<random>``), dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cognite.client import CogniteClient

from tests.live import LiveServer, sdk_client, wait_for
from tests.pg import create_database, drop_database, require_postgres
from tests.raycluster import RayCluster, alive
from tests.test_schedules import wait_status, zip_of

pytestmark = pytest.mark.slow

HANDLER = """
import os, time

def handle(data, secrets, function_call_info):
    print("running on pid", os.getpid(), "with", secrets["key"])
    if data.get("pidfile"):
        with open(data["pidfile"], "w") as f:
            f.write(str(os.getpid()))
    time.sleep(data.get("sleep", 0))
    return {"echo": data.get("echo"), "info": function_call_info}
"""


# These calls write their pid to a file of the test's, which must be the node's real pid:
# the Ray nodes run them unisolated, on purpose (isolation on Ray nodes: test_escape.py).
UNISOLATED = {"FNHOST_ISOLATION": "none", "FNHOST_RAY_ALLOW_UNISOLATED": "true"}


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, str]]:
    require_postgres("the scale-out test")
    name, url = create_database()
    yield name, url
    drop_database(name)


def pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        return list(conn.execute(sql))


def assert_failed_for_stopped_server(client: CogniteClient, function_id: int, call_id: int, what: str) -> None:
    """Wait for the call to leave Running, and check that it failed as a stopped server's."""

    def ended() -> Any:
        row = client.functions.calls.retrieve(function_id=function_id, call_id=call_id)
        return row if row is not None and row.status != "Running" else None

    row = wait_for(ended, timeout=60, what=what)
    assert row.status == "Failed"
    assert row.error["message"] == "The server running this call stopped before the call ended."


def client_for(server: LiveServer, creds: dict[str, Any]) -> CogniteClient:
    """The same service client, talking to (and getting its tokens from) ``server``."""
    return sdk_client({
        **creds,
        "base_url": server.base_url,
        "token_url": f"{server.base_url}/oauth2/token",
        "scopes": [f"{server.base_url}/.default"],
    })


@pytest.fixture(scope="module")
def replicas(
    database: tuple[str, str], ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, LiveServer]]:
    _, url = database
    env = {
        "FNHOST_DATABASE_URL": url,
        "FNHOST_BLOB_STORE": "database",
        "FNHOST_EXECUTOR": "ray",
        "FNHOST_RAY_ADDRESS": ray_cluster.address,
        "FNHOST_SCHEDULER_SECONDS_CRON": "true",
        "FNHOST_REPLICA_HEARTBEAT_SECONDS": "0.5",
        "FNHOST_REPLICA_DEAD_AFTER_SECONDS": "3",
        **UNISOLATED,
    }
    root = tmp_path_factory.mktemp("replicas")
    a = LiveServer(root / "a", env=env).start(timeout=120)
    # replicas share the token signing key and the secrets key (a mounted secret in production)
    shutil.copytree(a.home / "keys", root / "b" / "keys")
    b = LiveServer(root / "b", env=env).start(timeout=120)
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()


@pytest.fixture(scope="module")
def setup(replicas: tuple[LiveServer, LiveServer]) -> dict[str, Any]:
    """One service client for both replicas, and a function deployed through replica A."""
    a, b = replicas
    creds = a.create_client("scaleout")
    via_a, via_b = client_for(a, creds), client_for(b, creds)
    file_id = via_a.files.upload_bytes(zip_of({"handler.py": HANDLER}), name="scaled.zip").id
    fn = via_a.functions.create(name="scaled", file_id=file_id, secrets={"key": "k3y-value"})
    return {"creds": creds, "a": via_a, "b": via_b, "fn": fn}


def test_deploy_on_one_replica_call_on_the_other(
    replicas: tuple[LiveServer, LiveServer], setup: dict[str, Any]
) -> None:
    a, b = replicas
    fn = setup["fn"]
    assert wait_status(setup["b"], fn.id) == "Ready"
    built = [s for s in (a, b) if f"function {fn.id} ready" in s.log()]
    assert len(built) == 1, "the function must be built by exactly one replica"

    call = setup["b"].functions.call(id=fn.id, data={"echo": "hello"}, wait=True)
    assert call.status == "Completed", call.error
    assert call.get_response() == {"echo": "hello", "info": {"function_id": fn.id, "call_id": call.id, "function_version": 1}}
    # read back through the other replica: the outcome and logs are in the shared database
    again = setup["a"].functions.calls.retrieve(function_id=fn.id, call_id=call.id)
    assert again is not None and again.status == "Completed"
    logs = [e.message for e in setup["a"].functions.calls.get_logs(call_id=call.id, function_id=fn.id)]
    assert any(m.startswith("running on pid") and m.endswith("with ***") for m in logs), logs
    assert "ray executor" in a.log() and "ray executor" in b.log()


def test_a_schedule_fires_each_due_time_once(
    replicas: tuple[LiveServer, LiveServer], database: tuple[str, str], setup: dict[str, Any]
) -> None:
    fn = setup["fn"]
    assert wait_status(setup["a"], fn.id) == "Ready"
    creds = {"client_id": setup["creds"]["client_id"], "client_secret": setup["creds"]["client_secret"]}
    schedule = setup["a"].functions.schedules.create(
        name="every-second", cron_expression="* * * * * *", function_id=fn.id, client_credentials=creds,
        data={"echo": "tick"},
    )
    wait_for(
        lambda: len(pg_rows(database[1], f"SELECT id FROM calls WHERE schedule_id = {schedule.id}")) >= 6,
        timeout=60, what="six scheduled calls",
    )
    setup["b"].functions.schedules.delete(id=schedule.id)
    sql = f"SELECT scheduled_time, status, owner FROM calls WHERE schedule_id = {schedule.id}"
    wait_for(lambda: all(r[1] != "Running" for r in pg_rows(database[1], sql)), timeout=60,
             what="the scheduled calls to end")
    rows = pg_rows(database[1], sql)
    times = sorted(r[0] for r in rows)
    assert len(set(times)) == len(times), "a due time was fired twice"
    assert times == list(range(times[0], times[-1] + 1000, 1000)), "a due time was skipped"
    assert {r[1] for r in rows} == {"Completed"}


def test_a_replica_killed_mid_call_does_not_leave_it_running(
    replicas: tuple[LiveServer, LiveServer], setup: dict[str, Any], tmp_path: Path
) -> None:
    a, b = replicas
    fn = setup["fn"]
    assert wait_status(setup["b"], fn.id) == "Ready"
    pidfile = tmp_path / "call.pid"
    call = setup["b"].functions.call(
        id=fn.id, data={"sleep": 120, "pidfile": str(pidfile)}, wait=False
    )
    wait_for(lambda: pidfile.exists() and pidfile.read_text(), timeout=60, what="the call to start on Ray")
    call_pid = int(pidfile.read_text())
    b.kill9()
    assert_failed_for_stopped_server(
        setup["a"], fn.id, call.id, what="the surviving replica to fail the orphaned call"
    )
    # Ray ends the dead replica's task; the node host then ends the call's process
    wait_for(lambda: not alive(call_pid), timeout=60, what="the orphaned call's process to end")
    assert "failed 1 call(s) left Running by stopped replica(s)" in a.log()


def test_a_replica_that_goes_silent_has_its_calls_failed_by_heartbeat(
    replicas: tuple[LiveServer, LiveServer], setup: dict[str, Any], tmp_path: Path
) -> None:
    """A frozen replica (SIGSTOP) still has a process, so only its missing heartbeats tell the
    others it is gone: the same path as a replica on a machine that vanished."""
    a, _ = replicas
    fn = setup["fn"]
    c = LiveServer(tmp_path / "c", env={k: v for k, v in a.env.items() if k.startswith("FNHOST_")
                                        and k not in ("FNHOST_HOME", "FNHOST_PORT")})
    shutil.copytree(a.home / "keys", c.home / "keys")
    c.start(timeout=120)
    try:
        via_c = client_for(c, setup["creds"])
        pidfile = tmp_path / "call.pid"
        call = via_c.functions.call(id=fn.id, data={"sleep": 120, "pidfile": str(pidfile)}, wait=False)
        wait_for(lambda: pidfile.exists() and pidfile.read_text(), timeout=60, what="the call to start")
        assert c.proc is not None
        os.killpg(c.proc.pid, signal.SIGSTOP)
        assert_failed_for_stopped_server(setup["a"], fn.id, call.id, what="the silent replica's call to be failed")
        assert alive(c.proc.pid), "the replica was only frozen: its heartbeat told, not its pid"
    finally:
        c.kill9()  # SIGKILL ends a stopped process too
    wait_for(lambda: not alive(int(pidfile.read_text())), timeout=60, what="the call's process to end")


@pytest.mark.ray  # a cluster of its own, started while the session's runs: one worker runs both
def test_a_lost_ray_node_fails_its_calls(tmp_path: Path) -> None:
    """A Ray node that vanishes (its raylet and every process on it SIGKILLed, as when a
    machine dies) fails the calls it ran, saying so; nothing stays Running."""
    cluster = RayCluster(num_cpus=0).start()  # the head takes no calls: they go to the worker node
    server: LiveServer | None = None
    try:
        worker = cluster.add_worker(num_cpus=2)
        server = LiveServer(tmp_path / "home", env={
            "FNHOST_EXECUTOR": "ray", "FNHOST_RAY_ADDRESS": cluster.address, **UNISOLATED,
        }).start(timeout=120)
        client = server.client(server.create_client("nodes"))
        file_id = client.files.upload_bytes(zip_of({"handler.py": HANDLER}), name="node.zip").id
        fn = client.functions.create(name="on-a-node", file_id=file_id, secrets={"key": "k"})
        assert wait_status(client, fn.id) == "Ready"
        pidfile = tmp_path / "call.pid"
        call = client.functions.call(id=fn.id, data={"sleep": 300, "pidfile": str(pidfile)}, wait=False)
        wait_for(lambda: pidfile.exists() and pidfile.read_text(), timeout=60, what="the call to start")
        worker.kill(graceful=0)

        def ended() -> Any:
            row = client.functions.calls.retrieve(function_id=fn.id, call_id=call.id)
            return row if row is not None and row.status != "Running" else None

        row = wait_for(ended, timeout=120, what="the lost node's call to fail")
        assert row.status == "Failed"
        message = row.error["message"]
        assert message.startswith("The call was lost: the Ray worker or node running it failed ("), message
        logs = [e.message for e in client.functions.calls.get_logs(call_id=call.id, function_id=fn.id)]
        assert logs[-1] == f"[fnhost] {message}"
    finally:
        if server is not None:
            server.stop()
        cluster.stop()
