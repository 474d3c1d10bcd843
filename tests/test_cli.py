"""The ``fnhost`` user commands, run as a user runs them: a subprocess against a live server.

Every command is exercised with ``--json`` (what scripts parse) and at least once in its
human form; exit codes are checked because CI pipelines rely on them.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cognite.client import CogniteClient

from tests.gate import WAIT_AT_GATE, Gate
from tests.live import LiveServer


class Cli:
    """``python -m fnhost.cli`` with its own profile file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FNHOST_")}
        self.env["FNHOST_CLI_CONFIG"] = str(config)
        self.env["COLUMNS"] = "200"

    def __call__(self, *args: str, ok: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "fnhost.cli", *args],
            env=self.env, capture_output=True, text=True, input=input, timeout=300,
        )
        if ok and proc.returncode != 0:
            raise AssertionError(f"fnhost {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "fnhost.cli", *args],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )


@pytest.fixture(scope="module")
def creds(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-creds") / "client.json"
    path.write_text(json.dumps(server.create_client("cli-user")))
    return path


@pytest.fixture(scope="module")
def cli(creds: Path, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    run = Cli(tmp_path_factory.mktemp("cli-config") / "profiles.json")
    run("login", "--from-file", str(creds))
    return run


def write_code(folder: Path, handler: str, **extra: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(handler)
    for name, text in extra.items():
        (folder / name).write_text(text)
    return folder


ECHO = '''
def handle(data, function_call_info):
    print("got", data)
    return {"echo": data, "call": function_call_info["call_id"]}
'''


@pytest.fixture(scope="module")
def echo_fn(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    code = write_code(tmp_path_factory.mktemp("echo") / "echo", ECHO)
    return cli.json("deploy", str(code), "--external-id", "cli-echo")


# -- login and profiles -----------------------------------------------------------------------
def test_login_stores_a_profile_only_the_user_can_read(creds: Path, tmp_path: Path) -> None:
    cli = Cli(tmp_path / "conf" / "profiles.json")
    values = json.loads(creds.read_text())
    out = cli.json(
        "login", "--base-url", values["base_url"], "--project", values["project"],
        "--client-id", values["client_id"], "--client-secret", values["client_secret"], "--profile", "work",
    )
    assert out["profile"] == "work" and out["client_secret"] == "***"
    assert values["client_secret"] not in cli("login", "--from-file", str(creds), "--json").stdout
    mode = stat.S_IMODE(cli.config.stat().st_mode)
    assert mode == 0o600
    saved = json.loads(cli.config.read_text())
    assert set(saved["profiles"]) == {"work", "default"} and saved["current"] == "default"
    # a profile others can read is refused, because it holds secrets
    cli.config.chmod(0o644)
    refused = cli("functions", "ls", ok=False)
    assert refused.returncode == 2 and "chmod 600" in refused.stderr
    cli.config.chmod(0o600)
    assert cli.json("functions", "ls", "--profile", "work") == cli.json("functions", "ls")


def test_login_with_a_wrong_secret_fails_and_saves_nothing(creds: Path, tmp_path: Path) -> None:
    cli = Cli(tmp_path / "profiles.json")
    values = json.loads(creds.read_text())
    out = cli(
        "login", "--base-url", values["base_url"], "--client-id", values["client_id"],
        "--client-secret", "wrong", ok=False,
    )
    assert out.returncode != 0
    assert not cli.config.exists()
    assert cli("functions", "ls", ok=False).returncode == 2  # no profile yet


# -- deploy and functions ----------------------------------------------------------------------
def test_deploy_follows_the_build_to_ready(cli: Cli, echo_fn: dict[str, Any]) -> None:
    assert echo_fn["status"] == "Ready"
    assert echo_fn["externalId"] == "cli-echo"
    listed = cli.json("functions", "ls")
    # other tests share the project, and a function without an external id has no such key
    assert [f["id"] for f in listed if f.get("externalId") == "cli-echo"] == [echo_fn["id"]]
    shown = cli.json("functions", "show", "cli-echo")
    assert shown["id"] == echo_fn["id"] and shown["status"] == "Ready"
    assert cli.json("functions", "show", str(echo_fn["id"]))["externalId"] == "cli-echo"
    human = cli("functions", "ls").stdout
    assert "cli-echo" in human and "Ready" in human
    # deploying over an existing external id makes a new version; --new refuses to
    again = cli("deploy", "--external-id", "cli-echo", "--new", str(Path(__file__)), ok=False)
    assert again.returncode == 1 and "--new" in again.stderr


def test_deploy_of_a_failing_build_exits_non_zero_with_the_error(cli: Cli, tmp_path: Path) -> None:
    code = write_code(tmp_path / "broken", 'raise RuntimeError("broken at import time")\n\ndef handle():\n    return 1\n')
    out = cli("deploy", str(code), "--name", "cli-broken", ok=False)
    assert out.returncode == 1
    assert "Failed" in out.stderr and "broken at import time" in out.stderr
    as_json = cli("deploy", str(code), "--name", "cli-broken", "--replace", "--json", ok=False)
    assert as_json.returncode == 1
    fn = json.loads(as_json.stdout)
    assert fn["status"] == "Failed" and "broken at import time" in json.dumps(fn["error"])
    shown = cli("functions", "show", "cli-broken", "--json")
    assert json.loads(shown.stdout)["status"] == "Failed"
    assert cli.json("functions", "rm", "cli-broken")["deleted"] == [fn["id"]]
    gone = cli("functions", "show", "cli-broken", ok=False)
    assert gone.returncode == 3


def test_deploy_a_single_file_and_a_zip(cli: Cli, tmp_path: Path) -> None:
    single = tmp_path / "single.py"
    single.write_text("def handle():\n    return 'single'\n")
    fn = cli.json("deploy", str(single), "--external-id", "cli-single")
    assert fn["status"] == "Ready" and fn["functionPath"] == "single.py"
    import zipfile

    archive = tmp_path / "code.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pkg/__init__.py", "")
        zf.writestr("pkg/main.py", "def handle(data):\n    return data\n")
    fz = cli.json("deploy", str(archive), "--external-id", "cli-zip", "--function-path", "pkg/main.py")
    assert fz["status"] == "Ready" and fz["functionPath"] == "pkg/main.py"
    assert sorted(cli.json("functions", "rm", "cli-single", "cli-zip", "--yes")["deleted"]) == sorted(
        [fn["id"], fz["id"]]
    )


def test_deploy_again_makes_versions_and_rollback_goes_back(cli: Cli, tmp_path: Path) -> None:
    folder = write_code(tmp_path / "cli-versioned", "def handle():\n    return 'one'\n")
    first = cli.json("deploy", str(folder))
    assert first["status"] == "Ready"
    # the same folder again: identical bytes, no version
    same = cli("deploy", str(folder))
    assert same.returncode == 0 and "Unchanged" in same.stdout and "version 1" in same.stdout
    assert cli.json("deploy", str(folder))["unchanged"] is True
    write_code(folder, "def handle():\n    return 'two'\n")
    human = cli("deploy", str(folder))
    assert "version 2 and is current" in human.stdout, human.stdout + human.stderr
    assert cli.json("call", "cli-versioned")["response"] == "two"
    listed = cli.json("functions", "versions", "cli-versioned")
    assert [(v["version"], v["current"]) for v in listed] == [(2, True), (1, False)]
    assert "yes" in cli("functions", "versions", "cli-versioned").stdout
    assert cli.json("functions", "rollback", "cli-versioned")["version"] == 1
    assert cli.json("call", "cli-versioned")["response"] == "one"
    back = cli("functions", "rollback", "cli-versioned", "--to", "2")
    assert "version 2 again" in back.stdout
    # what a version cannot change, and versions that cannot be rolled back to
    refused = cli("deploy", str(folder), "--secret", "k=v", ok=False)
    assert refused.returncode == 2 and "--secret" in refused.stderr
    missing = cli("functions", "rollback", "cli-versioned", "--to", "7", ok=False)
    assert missing.returncode != 0 and "no version 7" in missing.stderr
    # a version that fails to build: exit 1, and the current one stays
    write_code(folder, "import fnhost_no_such_module\n\ndef handle():\n    return 'three'\n")
    failed = cli("deploy", str(folder), ok=False)
    assert failed.returncode == 1 and "current version still serves" in failed.stderr
    assert cli.json("call", "cli-versioned")["response"] == "two"
    assert cli.json("functions", "rm", "cli-versioned")["deleted"] == [first["id"]]


# -- call, logs, calls ----------------------------------------------------------------------------
def test_call_waits_and_prints_response_and_logs(cli: Cli, echo_fn: dict[str, Any], tmp_path: Path) -> None:
    out = cli.json("call", "cli-echo", "--data", '{"x": 1}')
    assert out["status"] == "Completed"
    assert out["response"] == {"echo": {"x": 1}, "call": out["id"]}
    assert any("got {'x': 1}" in line["message"] for line in out["logs"])
    payload = tmp_path / "data.json"
    payload.write_text('{"from": "file"}')
    human = cli("call", str(echo_fn["id"]), "--data", f"@{payload}")
    assert json.loads(human.stdout) == {"echo": {"from": "file"}, "call": json.loads(human.stdout)["call"]}
    assert "Completed" in human.stderr and "got {'from': 'file'}" in human.stdout + human.stderr
    bad = cli("call", "cli-echo", "--data", "{not json", ok=False)
    assert bad.returncode == 2


def test_call_no_wait_then_logs_and_calls_ls(cli: Cli, echo_fn: dict[str, Any]) -> None:
    started = cli.json("call", "cli-echo", "--data", '{"n": 7}', "--no-wait")
    assert started["status"] == "Running" and started["functionId"] == echo_fn["id"]
    call_id = str(started["id"])
    deadline = time.monotonic() + 60
    while True:
        listed = cli.json("calls", "ls", "cli-echo")
        mine = [c for c in listed if c["id"] == started["id"]]
        assert mine, listed
        if mine[0]["status"] != "Running" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert mine[0]["status"] == "Completed"
    logs = cli.json("logs", call_id)  # found without naming the function
    assert [entry["message"] for entry in logs] == ["got {'n': 7}"]
    assert cli.json("logs", call_id, "--function", "cli-echo") == logs
    assert "got {'n': 7}" in cli("logs", call_id).stdout
    everything = cli.json("calls", "ls", "--status", "Completed")
    assert started["id"] in [c["id"] for c in everything]
    assert "Completed" in cli("calls", "ls").stdout
    assert cli("logs", "999999", ok=False).returncode == 3


FAILING = '''
def handle(data):
    print("about to fail")
    raise ValueError("bad input " + str(data))
'''


def test_a_failing_call_exits_non_zero_with_its_error(cli: Cli, tmp_path: Path) -> None:
    cli.json("deploy", str(write_code(tmp_path / "failing", FAILING)), "--external-id", "cli-failing")
    out = cli("call", "cli-failing", "--data", '{"a": 1}', "--json", ok=False)
    assert out.returncode == 1
    result = json.loads(out.stdout)
    assert result["status"] == "Failed" and "bad input" in result["error"]["message"]
    assert any("about to fail" in line["message"] for line in result["logs"])
    cli("functions", "rm", "cli-failing", "--yes")


GATED = WAIT_AT_GATE + '''

def handle(client, data):
    print("first line", flush=True)
    # held open until the test has seen the first line and checked the call still runs
    wait_at_gate(client, data["gate"])
    print("last line")
    return "done"
'''


def test_logs_follow_shows_a_line_before_the_call_ends(cli: Cli, client: CogniteClient, tmp_path: Path) -> None:
    # The call cannot end before the test opens its gate, so "Running" below is a fact, not a
    # race against CLI start-up.
    gate = Gate(client)
    cli.json("deploy", str(write_code(tmp_path / "slow", GATED)), "--external-id", "cli-slow")
    started = cli.json("call", "cli-slow", "--data", json.dumps({"gate": gate.data}), "--no-wait")
    follower = cli.popen("logs", str(started["id"]), "--function", "cli-slow", "--follow", "--json")
    assert follower.stdout is not None
    try:
        first = json.loads(follower.stdout.readline())
        assert first["message"] == "first line"
        # the line reached us while the call was still running, and the follower goes on
        state = cli.json("calls", "ls", "cli-slow")
        assert [c["status"] for c in state if c["id"] == started["id"]] == ["Running"]
        assert follower.poll() is None
    finally:
        gate.open()
    rest = [json.loads(line) for line in follower.stdout]
    assert follower.wait(30) == 0
    assert [r.get("message") for r in rest[:-1]] == ["last line"]
    assert rest[-1]["event"] == "end" and rest[-1]["status"] == "Completed"
    # following a call that has ended replays its lines and ends at once
    replay = cli("logs", str(started["id"]), "--follow")
    assert "first line" in replay.stdout and "last line" in replay.stdout and "Completed" in replay.stderr
    cli("functions", "rm", "cli-slow", "--yes")


# -- schedules --------------------------------------------------------------------------------------
def test_schedules_create_ls_pause_resume_rm(cli: Cli, echo_fn: dict[str, Any], tmp_path: Path) -> None:
    payload = tmp_path / "input.json"
    payload.write_text('{"assetNo": 0}')
    made = cli.json(
        "schedules", "create", "cli-nightly", "--function", "cli-echo", "--cron", "0 0 * * *",
        "--data", f"@{payload}", "--description", "every midnight",
    )
    assert made["functionId"] == echo_fn["id"] and made["cronExpression"] == "0 0 * * *"
    sid = made["id"]
    other = cli("schedules", "create", "cli-hourly", "-f", str(echo_fn["id"]), "--cron", "0 * * * *")
    assert "cli-hourly" in other.stdout
    mine = cli.json("schedules", "ls", "--function", "cli-echo")
    assert sorted(s["name"] for s in mine) == ["cli-hourly", "cli-nightly"]
    assert [s["paused"] for s in mine if s["id"] == sid] == [False]

    assert cli.json("schedules", "pause", str(sid))["paused"] is True
    assert [s["paused"] for s in cli.json("schedules", "ls") if s["id"] == sid] == [True]
    human = cli("schedules", "ls", "-f", "cli-echo").stdout
    assert "cli-nightly" in human and "paused" in human
    assert "resumed" in cli("schedules", "resume", str(sid)).stdout
    assert [s["paused"] for s in cli.json("schedules", "ls") if s["id"] == sid] == [False]

    # deleting is all or nothing: an unknown id deletes none of them
    missing = cli("schedules", "rm", str(sid), "987654", "--json", ok=False)
    assert missing.returncode == 3 and "error" in json.loads(missing.stdout)
    assert len(cli.json("schedules", "ls", "-f", "cli-echo")) == 2
    hourly = next(s["id"] for s in mine if s["name"] == "cli-hourly")
    assert sorted(cli.json("schedules", "rm", str(sid), str(hourly))["deleted"]) == sorted([sid, hourly])
    assert cli.json("schedules", "ls", "-f", "cli-echo") == []
    assert cli("schedules", "pause", str(sid), ok=False).returncode == 3
    bad = cli("schedules", "create", "bad", "-f", "cli-echo", "--cron", "every day", ok=False)
    assert bad.returncode == 1 and "cron" in bad.stderr.lower()


# -- run: the service's bootstrap on this machine ---------------------------------------------------
LOCAL = '''
import os

def handle(client, data, secrets, function_call_info):
    print("running locally", data)
    print("the token is", secrets["token"])
    fn = client.functions.retrieve(external_id=data["lookup"])
    return {
        "found": fn.id,
        "project": client.config.project,
        "secret": secrets["token"],
        "mode": os.environ["MODE"],
        "info": function_call_info,
    }
'''


def test_run_uses_the_service_bootstrap_with_a_client_for_the_server(
    cli: Cli, echo_fn: dict[str, Any], tmp_path: Path
) -> None:
    code = write_code(tmp_path / "local", LOCAL)
    out = cli.json(
        "run", str(code), "--data", '{"lookup": "cli-echo"}', "--secret", "token=s3cret-value",
        "--env", "MODE=local",
    )
    assert out["status"] == "Completed", out
    assert out["response"]["found"] == echo_fn["id"] and out["response"]["mode"] == "local"
    assert out["response"]["secret"] == "s3cret-value"
    assert set(out["response"]["info"]) >= {"function_id", "call_id"}
    # secret values are redacted from the logs, as the service does
    assert [line["message"] for line in out["logs"]] == [
        "running locally {'lookup': 'cli-echo'}", "the token is ***",
    ]
    # people get the response alone on stdout (pipeable) and the logs on stderr
    human = cli("run", str(code / "handler.py"), "--data", '{"lookup": "cli-echo"}', "--secret", "token=x",
                "--env", "MODE=file")
    assert json.loads(human.stdout)["mode"] == "file"
    assert "running locally" in human.stderr and "Completed" in human.stderr
    # a handler that raises: exit 1, with its traceback
    failing = write_code(tmp_path / "failing", FAILING)
    failed = cli("run", str(failing), "--data", '{"a": 2}', "--json", ok=False)
    assert failed.returncode == 1
    result = json.loads(failed.stdout)
    assert result["status"] == "Failed" and "bad input {'a': 2}" in result["error"]["message"]
    assert "ValueError" in result["error"]["trace"]
    # a return value that is not JSON is refused as the service refuses it
    write_code(tmp_path / "nojson", "def handle():\n    return object()\n")
    nojson = cli("run", str(tmp_path / "nojson"), ok=False)
    assert nojson.returncode == 1 and "JSON" in nojson.stderr


# -- --json everywhere, and the operator commands ------------------------------------------------
def test_every_command_but_serve_has_json() -> None:
    from tests.clitree import commands

    without = [c.path for c in commands() if "--json" not in c.options and c.path != "fnhost serve"]
    assert without == []


def test_admin_commands_print_json(server: LiveServer) -> None:
    """Operator commands work on the server's data directory while it runs."""

    def admin(*args: str) -> Any:
        out = server.cli("admin", *args, "--json", check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)

    migrated = admin("migrate")
    assert migrated["from"] == migrated["to"] and migrated["to"]  # serve migrated at start
    assert admin("projects", "create", "cli-ops") == {"name": "cli-ops"}
    assert "cli-ops" in [p["name"] for p in admin("projects", "list")]
    made = admin("clients", "create", "cli-ops-reader", "--project", "cli-ops", "-c", "functionsAcl:READ")
    assert made["project"] == "cli-ops" and made["client_secret"]
    assert made["client_id"] in [c["clientId"] for c in admin("clients", "list")]
    group = admin("groups", "create", "cli-ops-runners", "--project", "cli-ops", "-c", "functionsAcl:READ,RUN")[0]
    assert admin("groups", "delete", str(group["id"]), "--project", "cli-ops") == {"deleted": group["id"]}
    assert admin("clients", "delete", made["client_id"]) == {"deleted": made["client_id"]}
    checked = admin("check-secrets")
    assert checked["failed"] == [] and isinstance(checked["functions"], int)
    assert admin("rotate-secrets") == checked  # same keys, same functions: all re-encrypted


# -- start-up: what a command imports before it runs ------------------------------------------------
# the server, the database, the settings and cognite-sdk: seconds of imports no user command
# needs before it parses its arguments (bench/cli.py times it; this checks why it is fast)
HEAVY = ("fnhost.api", "fnhost.services", "fnhost.store", "fnhost.settings", "fastapi",
         "starlette", "sqlalchemy", "uvicorn", "pydantic_settings", "cognite.client", "httpx")  # fmt: skip


def imported_by(cli: Cli, *args: str) -> set[str]:
    """The modules ``fnhost ARGS`` imports, read from ``python -X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fnhost.cli", *args],
        env=cli.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "fnhost.commands._common" in names  # the output was read right
    return names


def heavy(names: set[str]) -> list[str]:
    return sorted(n for n in names if any(n == h or n.startswith(h + ".") for h in HEAVY))


def test_help_imports_nothing_heavy(cli: Cli) -> None:
    assert heavy(imported_by(cli, "--help")) == []
    assert heavy(imported_by(cli, "functions", "--help")) == []


def test_functions_ls_talks_to_the_server_without_the_sdk(cli: Cli, echo_fn: dict[str, Any]) -> None:
    names = imported_by(cli, "functions", "ls", "--json")
    assert heavy(names) == []
    listed = cli.json("functions", "ls")
    assert [f["id"] for f in listed if f.get("externalId") == "cli-echo"] == [echo_fn["id"]]
    assert cli.json("functions", "ls", "--status", "Ready") and all(
        f["status"] == "Ready" for f in cli.json("functions", "ls", "--status", "Ready")
    )
    # errors from the server keep their exit codes: a token that does not verify
    bad = Cli(cli.config.with_name("bad-profiles.json"))
    bad.config.write_text(json.dumps({"current": "x", "profiles": {"x": {
        **json.loads(cli.config.read_text())["profiles"]["default"], "client_secret": "wrong"}}}))
    bad.config.chmod(0o600)
    refused = bad("functions", "ls", ok=False)
    assert refused.returncode == 1 and "Invalid client credentials" in refused.stderr
    unreachable = Cli(cli.config.with_name("away-profiles.json"))
    unreachable.config.write_text(json.dumps({"current": "x", "profiles": {"x": {
        **json.loads(cli.config.read_text())["profiles"]["default"], "base_url": "http://127.0.0.1:9",
        "token_url": "http://127.0.0.1:9/oauth2/token"}}}))
    unreachable.config.chmod(0o600)
    away = unreachable("functions", "ls", ok=False)
    assert away.returncode == 4 and "Cannot reach the server" in away.stderr
