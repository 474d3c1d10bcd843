"""Identity and access, end to end: capabilities, projects, groups, sessions, secrets at rest.

Everything goes through a real server with the official cognite-sdk (or plain HTTP where
the test is about the exact status and message on the wire).
"""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from cognite.client import CogniteClient
from cognite.client.data_classes import ClientCredentials
from cognite.client.data_classes.capabilities import Capability, FunctionsAcl, SessionsAcl
from cognite.client.data_classes.iam import Group, GroupList, GroupWrite
from cognite.client.exceptions import (
    CogniteAPIError,
    CogniteNotFoundError,
    CogniteProjectAccessError,
)

from tests.live import LiveServer, bearer_token, sdk_client, token_client

OTHER = "other-proj"


def handle(data: dict, secrets: dict) -> dict:
    return {"ok": True}


def _api(server: LiveServer, project: str, path: str) -> str:
    return f"{server.base_url}/api/v1/projects/{project}{path}"


@pytest.fixture(scope="module")
def other_project(server: LiveServer) -> str:
    server.cli("admin", "projects", "create", OTHER)
    return OTHER


@pytest.fixture(scope="module")
def reader_creds(server: LiveServer) -> dict[str, Any]:
    """READ on functions and files, may create sessions, nothing else."""
    return server.create_client(
        "reader", "-c", "functionsAcl:READ", "-c", "filesAcl:READ,WRITE", "-c", "sessionsAcl:CREATE"
    )


@pytest.fixture(scope="module")
def deployed(client: CogniteClient) -> Any:
    """A function row with a secret (the build need not finish for these tests)."""
    return client.functions.create(
        name="identity-fn",
        external_id="identity-fn",
        function_handle=handle,
        secrets={"apikey": "s3cr3t-VALUE-never-on-disk-7f3a"},
    )


def test_missing_or_invalid_token_is_401_with_a_message(server: LiveServer) -> None:
    url = _api(server, "default", "/functions/list")
    r = httpx.post(url, json={})
    assert r.status_code == 401
    assert "Missing Authorization header" in r.json()["error"]["message"]
    r = httpx.post(url, json={}, headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401
    assert "not a JWT" in r.json()["error"]["message"]
    r = httpx.post(url, json={}, headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    assert "Bearer" in r.json()["error"]["message"]
    with pytest.raises(CogniteProjectAccessError):
        token_client(server.base_url, "default", "garbage").functions.list()


def test_client_secret_is_checked_on_every_grant(server: LiveServer) -> None:
    creds = server.create_client("secret-checks")

    def grant(secret: str) -> int:
        form = {"grant_type": "client_credentials", "client_id": creds["client_id"], "client_secret": secret}
        return httpx.post(creds["token_url"], data=form).status_code

    # a secret that passed once is recognised quickly afterwards; others are still refused
    assert [grant(creds["client_secret"]), grant(creds["client_secret"])] == [200, 200]
    assert grant(creds["client_secret"] + "x") == 401
    assert grant(creds["client_secret"][:-1]) == 401
    assert grant(creds["client_secret"]) == 200


def test_read_only_client_cannot_deploy(
    server: LiveServer, client: CogniteClient, reader_creds: dict[str, Any], deployed: Any
) -> None:
    reader = sdk_client(reader_creds)
    # reading works
    assert deployed.id in [f.id for f in reader.functions.list()]
    assert reader.functions.retrieve(id=deployed.id).name == "identity-fn"
    with pytest.raises(CogniteAPIError) as err:
        reader.functions.create(name="nope", function_handle=handle)
    assert err.value.code == 403
    assert "functionsAcl:WRITE" in err.value.message
    with pytest.raises(CogniteAPIError) as err:
        reader.functions.delete(id=deployed.id)
    assert err.value.code == 403
    assert client.functions.retrieve(id=deployed.id) is not None


def test_read_only_client_cannot_call(
    server: LiveServer, reader_creds: dict[str, Any], deployed: Any
) -> None:
    r = httpx.post(
        _api(server, "default", f"/functions/{deployed.id}/call"),
        json={},
        headers={"Authorization": f"Bearer {bearer_token(reader_creds)}"},
    )
    if r.status_code == 404 and "no such endpoint" in r.text:
        pytest.fail("the calls API (POST /functions/{id}/call) is not there yet")
    assert r.status_code == 403, r.text
    assert "functionsAcl:RUN" in r.json()["error"]["message"]


def test_a_calls_response_is_read_with_functions_read_only(
    server: LiveServer, client: CogniteClient, deployed: Any
) -> None:
    """``GET …/calls/{id}/response`` checks its token and capability on the event loop now,
    as the call endpoints do. The legitimate use: the owner reads it through the SDK. The
    attacks: a client of the project without functionsAcl:READ, and the call's id under
    another function."""
    call = client.functions.call(id=deployed.id, wait=True)
    assert call.status == "Completed", call.error
    assert call.get_response() == client.functions.calls.get_response(call_id=call.id, function_id=deployed.id)
    files_only = server.create_client("files-only", "-c", "filesAcl:READ")
    path = f"/functions/{deployed.id}/calls/{call.id}/response"
    r = httpx.get(_api(server, "default", path), headers={"Authorization": f"Bearer {bearer_token(files_only)}"})
    assert r.status_code == 403, r.text
    assert "functionsAcl:READ" in r.json()["error"]["message"]
    with pytest.raises(CogniteNotFoundError):  # CDF's shape: a 400 naming what is missing
        client.functions.calls.get_response(call_id=call.id, function_id=987654321)


def test_403_names_the_missing_capability(server: LiveServer, reader_creds: dict[str, Any]) -> None:
    reader = sdk_client(reader_creds)
    with pytest.raises(CogniteAPIError) as err:
        reader.iam.sessions.list()
    assert err.value.code == 403
    assert "sessionsAcl:LIST" in err.value.message
    with pytest.raises(CogniteAPIError) as err:
        reader.iam.groups.list(all=True)
    assert err.value.code == 403
    assert "groupsAcl:LIST" in err.value.message


def test_token_inspect(server: LiveServer, client: CogniteClient, reader_creds: dict[str, Any]) -> None:
    admin = client.iam.token.inspect()
    assert admin.subject
    assert "default" in [p.url_name for p in admin.projects]
    reader = sdk_client(reader_creds).iam.token.inspect()
    assert reader.subject == reader_creds["client_id"]
    assert [p.url_name for p in reader.projects] == ["default"]
    dumped = [c.capability.dump() for c in reader.capabilities]
    assert {"functionsAcl": {"actions": ["READ"], "scope": {"all": {}}}} in dumped
    assert not any("assetsAcl" in d for d in dumped)
    # the SDK's own capability check uses inspect
    assert sdk_client(reader_creds).iam.verify_capabilities(
        [FunctionsAcl([FunctionsAcl.Action.Read], FunctionsAcl.Scope.All())]
    ) == []
    missing = sdk_client(reader_creds).iam.verify_capabilities(
        [FunctionsAcl([FunctionsAcl.Action.Write], FunctionsAcl.Scope.All())]
    )
    assert missing


def test_projects_are_isolated_and_nothing_leaks(
    server: LiveServer, other_project: str, deployed: Any, client: CogniteClient
) -> None:
    outsider = server.create_client(
        "outsider", "--project", other_project, "-c", "functionsAcl:READ,WRITE", "-c", "filesAcl:READ"
    )
    token = bearer_token(outsider)
    headers = {"Authorization": f"Bearer {token}"}
    # its own project works
    r = httpx.post(_api(server, other_project, "/functions/list"), json={}, headers=headers)
    assert r.status_code == 200, r.text
    # the SDK: 401 becomes CogniteProjectAccessError, listing the project it has
    foreign = sdk_client({**outsider, "project": "default"})
    with pytest.raises(CogniteProjectAccessError) as err:
        foreign.functions.list()
    assert other_project in str(err.value)
    file_id = client.functions.retrieve(id=deployed.id).file_id

    # an existing and a missing object of the other project answer exactly alike
    def probe(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        r = httpx.request(method, _api(server, "default", path), json=body, headers=headers)
        return r.status_code, r.json()

    for method, real, fake, body_of in [
        ("POST", "/functions/byids", "/functions/byids", lambda i: {"items": [{"id": i}]}),
        ("GET", f"/functions/{deployed.id}", "/functions/987654321", lambda i: None),
        ("POST", "/files/byids", "/files/byids", lambda i: {"items": [{"id": i}]}),
        ("POST", "/sessions/byids", "/sessions/byids", lambda i: {"items": [{"id": i}]}),
        ("GET", f"/functions/{deployed.id}/calls", "/functions/987654321/calls", lambda i: None),
    ]:
        real_id = file_id if "files" in real else deployed.id
        got_real = probe(method, real, body_of(real_id))
        got_fake = probe(method, fake, body_of(987654321))
        assert got_real == got_fake, (real, got_real, got_fake)
        assert got_real[0] == 401
        assert "don't have access" in got_real[1]["error"]["message"]
    # and a project that does not exist at all answers the same way
    r = httpx.post(_api(server, "no-such-project", "/functions/list"), json={}, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["message"].replace("no-such-project", "default") == probe(
        "POST", "/functions/list", {}
    )[1]["error"]["message"]
    # project listing shows only its own
    r = httpx.get(f"{server.base_url}/api/v1/projects", headers=headers)
    assert r.json() == {"items": [{"projectUrlName": other_project}]}


def test_groups_api_with_the_sdk(server: LiveServer, client: CogniteClient) -> None:
    member = server.create_client("grouped", "--no-admin")
    as_member = sdk_client(member)
    with pytest.raises(CogniteProjectAccessError):
        as_member.functions.list()  # no group yet: no access to the project at all
    group = client.iam.groups.create(
        GroupWrite(
            name="fn-readers",
            capabilities=[
                FunctionsAcl([FunctionsAcl.Action.Read], FunctionsAcl.Scope.All()),
                SessionsAcl([SessionsAcl.Action.List], SessionsAcl.Scope.All()),
            ],
            members=[member["client_id"]],
        )
    )
    assert group.id and group.name == "fn-readers"
    assert group.members == [member["client_id"]]
    assert group.id in [g.id for g in client.iam.groups.list(all=True)]
    as_member.functions.list()
    as_member.iam.sessions.list()
    # a member lists its own groups without groupsAcl
    assert [g.id for g in as_member.iam.groups.list()] == [group.id]
    with pytest.raises(CogniteAPIError) as err:
        as_member.iam.groups.create(GroupWrite(name="escalate", capabilities=[], members=[]))
    assert err.value.code == 403 and "groupsAcl:CREATE" in err.value.message
    client.iam.groups.delete(group.id)
    assert group.id not in [g.id for g in client.iam.groups.list(all=True)]
    with pytest.raises(CogniteProjectAccessError):
        as_member.functions.list()


def test_group_with_unknown_capability_is_refused(server: LiveServer, admin_creds: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {bearer_token(admin_creds)}"}
    for cap, needle in [
        ({"timeMachineAcl": {"actions": ["READ"], "scope": {"all": {}}}}, "timeMachineAcl"),
        ({"functionsAcl": {"actions": ["FLY"], "scope": {"all": {}}}}, "FLY"),
    ]:
        r = httpx.post(
            _api(server, "default", "/groups"),
            json={"items": [{"name": "bad", "capabilities": [cap]}]},
            headers=headers,
        )
        assert r.status_code == 400
        assert needle in r.json()["error"]["message"]
    out = server.cli("admin", "groups", "create", "bad", "-c", "nopeAcl:READ", check=False)
    assert out.returncode == 1 and "nopeAcl" in out.stderr


def test_sessions_create_list_retrieve_revoke(
    server: LiveServer, client: CogniteClient, admin_creds: dict[str, Any]
) -> None:
    by_creds = client.iam.sessions.create(
        ClientCredentials(admin_creds["client_id"], admin_creds["client_secret"]),
        session_type="CLIENT_CREDENTIALS",
    )
    exchanged = client.iam.sessions.create(session_type="TOKEN_EXCHANGE")
    oneshot = client.iam.sessions.create(session_type="ONESHOT_TOKEN_EXCHANGE")
    assert by_creds.nonce and exchanged.nonce and oneshot.nonce
    assert len({by_creds.nonce, exchanged.nonce, oneshot.nonce}) == 3
    assert client.iam.sessions.retrieve(exchanged.id).type == "TOKEN_EXCHANGE"
    ready = {s.id for s in client.iam.sessions.list(status="READY", limit=-1)}
    assert {by_creds.id, exchanged.id, oneshot.id} <= ready
    # the status filter is case-insensitive on the wire
    r = httpx.get(
        _api(server, "default", "/sessions"),
        params={"status": "ready", "limit": 1000},
        headers={"Authorization": f"Bearer {bearer_token(admin_creds)}"},
    )
    assert r.status_code == 200 and oneshot.id in [s["id"] for s in r.json()["items"]]
    revoked = client.iam.sessions.revoke(oneshot.id)
    assert revoked.id == oneshot.id
    assert client.iam.sessions.retrieve(oneshot.id).status == "REVOKED"
    assert oneshot.id in {s.id for s in client.iam.sessions.list(status="REVOKED", limit=-1)}
    # wrong client secret: refused without saying which half was wrong
    with pytest.raises(CogniteProjectAccessError):
        client.iam.sessions.create(
            ClientCredentials(admin_creds["client_id"], "wrong"), session_type="CLIENT_CREDENTIALS"
        )


def test_session_for_a_client_without_access_to_the_project(
    server: LiveServer, client: CogniteClient, other_project: str
) -> None:
    stranger = server.create_client("stranger", "--project", other_project, "-c", "functionsAcl:READ")
    with pytest.raises(CogniteAPIError) as err:
        client.iam.sessions.create(
            ClientCredentials(stranger["client_id"], stranger["client_secret"]),
            session_type="CLIENT_CREDENTIALS",
        )
    assert err.value.code == 403
    assert "no access to project" in err.value.message


def test_deleted_client_loses_access_at_once(server: LiveServer) -> None:
    gone = server.create_client("short-lived")
    c = sdk_client(gone)
    c.functions.list()
    listed = server.cli("admin", "clients", "list", "--json").stdout
    assert gone["client_id"] in listed and gone["client_secret"] not in listed
    server.cli("admin", "clients", "delete", gone["client_id"])
    with pytest.raises(CogniteProjectAccessError):
        c.functions.list()  # the SDK still holds a token that has not expired
    r = httpx.post(
        gone["token_url"],
        data={"grant_type": "client_credentials", "client_id": gone["client_id"], "client_secret": gone["client_secret"]},
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_admin_cli_projects_clients_groups(server: LiveServer) -> None:
    server.cli("admin", "projects", "create", "cli-proj")
    assert "cli-proj" in server.cli("admin", "projects", "list").stdout
    bad = server.cli("admin", "projects", "create", "Bad Name", check=False)
    assert bad.returncode == 1
    import json

    out = server.cli(
        "admin", "groups", "create", "ext-ops", "--project", "cli-proj",
        "--source-id", "idp-ops", "-c", "functionsAcl:READ,RUN", "--json",
    )
    (group,) = json.loads(out.stdout)
    assert group["sourceId"] == "idp-ops"
    assert group["capabilities"] == [{"functionsAcl": {"actions": ["READ", "RUN"], "scope": {"all": {}}}}]
    listed = json.loads(server.cli("admin", "groups", "list", "--project", "cli-proj", "--json").stdout)
    assert [g["id"] for g in listed] == [group["id"]]
    server.cli("admin", "groups", "delete", str(group["id"]), "--project", "cli-proj")
    assert json.loads(server.cli("admin", "groups", "list", "--project", "cli-proj", "--json").stdout) == []
    missing = server.cli("admin", "groups", "delete", str(group["id"]), "--project", "cli-proj", check=False)
    assert missing.returncode == 1


def test_secrets_are_not_readable_in_the_database(
    server: LiveServer, deployed: Any, admin_creds: dict[str, Any]
) -> None:
    assert deployed.secrets is None or "s3cr3t" not in str(deployed.secrets)
    raw = b""
    for path in server.home.glob("fnhost.db*"):  # the database, its WAL and shm files
        raw += path.read_bytes()
    assert raw, "no database file found"
    assert b"s3cr3t-VALUE-never-on-disk-7f3a" not in raw
    assert admin_creds["client_secret"].encode() not in raw
    assert b"apikey" in raw  # the names are kept (they are listed), only values are sealed
    key = server.home / "keys" / "secrets.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_secret_key_from_settings_and_rotation(start_server: Any, tmp_path: Path) -> None:
    """An operator-given key encrypts; after rotation (new key first) old secrets still decrypt."""
    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    home = tmp_path / "rot"
    live = start_server(env={"FNHOST_SECRET_KEY": old}, home=home)
    c = live.client(live.create_client("rot"))
    fn = c.functions.create(name="rot", function_handle=handle, secrets={"k": "rotated-value-91"})
    live.stop()
    assert not (home / "keys" / "secrets.key").exists()
    live2 = start_server(env={"FNHOST_SECRET_KEY": f"{new},{old}"}, home=home)
    out = live2.cli("admin", "rotate-secrets", check=False)
    assert out.returncode == 0, out.stderr
    live2.stop()
    # only the new key now: the secret must still be readable by the server
    live3 = start_server(env={"FNHOST_SECRET_KEY": new}, home=home)
    c3 = live3.client(live3.create_client("rot3"))
    assert c3.functions.retrieve(id=fn.id) is not None
    r = live3.cli("admin", "check-secrets", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"rotated-value-91" not in b"".join(p.read_bytes() for p in home.glob("fnhost.db*"))


# -- groups as a project has them in CDF ------------------------------------------------------------
def _caps(capabilities: Any) -> set[tuple[str, str]]:
    """(acl, action) pairs of SDK capabilities, whatever their order."""
    out = set()
    for cap in capabilities:
        ((acl, body),) = cap.dump().items()
        out |= {(acl, action) for action in body["actions"]}
    return out


def test_a_fresh_server_lists_its_admin_group(start_server: Any) -> None:
    """Code written against CDF starts from the project's groups; the first admin is in one."""
    live = start_server()
    creds = json.loads((live.home / "admin-client.json").read_text())
    admin = live.client(creds)
    listed = admin.iam.groups.list(all=True)
    assert [g.name for g in listed] == ["fnhost-admins"]
    (group,) = listed
    assert group.members == [creds["client_id"]] and group.is_managed_in_cdf
    # the group holds what the admin client uses: token inspect's capabilities in the project
    inspected = admin.iam.token.inspect()
    used = {(acl, a) for c in inspected.capabilities for acl, body in c.capability.dump().items()
            for a in body["actions"]}  # fmt: skip
    assert _caps(group.capabilities) == used
    assert {"functionsAcl", "filesAcl", "sessionsAcl", "groupsAcl"} <= {acl for acl, _ in used}
    assert [p.groups for p in inspected.projects if p.url_name == "default"] == [[group.id]]
    assert [g.id for g in admin.iam.groups.list()] == [group.id]  # its own groups too
    # and an admin made later joins the same group rather than holding rights of its own
    second = live.create_client("second-admin")
    (again,) = admin.iam.groups.list(all=True)
    assert again.id == group.id and again.members == [creds["client_id"], second["client_id"]]
    live.cli("admin", "clients", "delete", second["client_id"])
    assert admin.iam.groups.list(all=True)[0].members == [creds["client_id"]]


def test_groups_dump_load_and_round_trip_through_the_sdk(client: CogniteClient) -> None:
    made = client.iam.groups.create(
        GroupWrite(
            name="round-trip",
            capabilities=[
                FunctionsAcl([FunctionsAcl.Action.Read, FunctionsAcl.Action.Run], FunctionsAcl.Scope.All()),
                SessionsAcl([SessionsAcl.Action.Create], SessionsAcl.Scope.All()),
            ],
            metadata={"team": "ops", "origin": "test"},
            members=["someone-else"],
        )
    )
    listed = client.iam.groups.list(all=True)
    dumped = listed.dump(camel_case=True)
    assert GroupList.load(dumped).dump(camel_case=True) == dumped
    (mine,) = [g for g in listed if g.id == made.id]
    assert mine.dump(camel_case=True) == made.dump(camel_case=True)
    assert Group.load(mine.dump(camel_case=True)) == mine
    assert mine.metadata == {"team": "ops", "origin": "test"} and mine.members == ["someone-else"]
    assert all(isinstance(c, Capability) and type(c).__name__ != "UnknownAcl" for c in mine.capabilities)
    # the write form of a listed group creates an equal group
    copy = client.iam.groups.create(mine.as_write())
    assert copy.id != mine.id
    assert {**copy.dump(), "id": mine.id} == mine.dump()
    # as does the admin group's: every capability it holds is one the SDK parses
    (admins,) = [g for g in listed if g.name == "fnhost-admins"]
    assert all(type(c).__name__ != "UnknownAcl" for c in admins.capabilities)
    assert GroupWrite.load(admins.as_write().dump()).dump() == admins.as_write().dump()
    client.iam.groups.delete([made.id, copy.id])
    assert {made.id, copy.id}.isdisjoint(g.id for g in client.iam.groups.list(all=True))


def test_create_client_with_capabilities_joins_the_group_of_those_capabilities(
    server: LiveServer, client: CogniteClient
) -> None:
    first = server.create_client("cap-a", "-c", "functionsAcl:READ,RUN", "-c", "filesAcl:READ")
    second = server.create_client("cap-b", "-c", "filesAcl:READ", "-c", "functionsAcl:RUN,READ")
    other = server.create_client("cap-c", "-c", "functionsAcl:READ")
    groups = {g.name: g for g in client.iam.groups.list(all=True)}
    both = groups["filesAcl:READ functionsAcl:READ,RUN"]
    assert both.members == [first["client_id"], second["client_id"]]
    assert _caps(both.capabilities) == {("filesAcl", "READ"), ("functionsAcl", "READ"), ("functionsAcl", "RUN")}
    assert groups["functionsAcl:READ"].members == [other["client_id"]]
    # the client's rights are the group's: its own groups list shows it
    assert [g.id for g in sdk_client(first).iam.groups.list()] == [both.id]
    assert not any(g.name.startswith("client:") for g in groups.values())


OLD_SCHEMA = (  # what a database made before the admin group held
    "DELETE FROM groups",
    "UPDATE alembic_version SET version_num = '0002'",
    "ALTER TABLE groups DROP COLUMN metadata",
)


def latest_migration() -> str:
    from fnhost.store.db import MIGRATIONS_DIR

    return max(p.name.split("_")[0] for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_an_existing_database_migrates_its_admin_clients_into_the_admin_group(
    start_server: Any, tmp_path: Path, backend: str
) -> None:
    """A database from before the admin group: admin clients without a group join it."""
    env: dict[str, str] = {}
    if backend == "postgres":
        import psycopg

        from tests.pg import create_database, drop_database, require_postgres

        require_postgres("the migration test")
        name, url = create_database()
        env["FNHOST_DATABASE_URL"] = url
    home = tmp_path / "old"
    live = start_server(env=env, home=home)
    try:
        creds = json.loads((home / "admin-client.json").read_text())
        later = live.create_client("later-admin")
        live.stop()
        if backend == "postgres":
            with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
                for sql in OLD_SCHEMA:
                    conn.execute(sql)
        else:
            db = sqlite3.connect(home / "fnhost.db")
            with db:
                for sql in OLD_SCHEMA:
                    db.execute(sql)
            db.close()
        live.start()
        listed = live.client(creds).iam.groups.list(all=True)
        assert [(g.name, g.members) for g in listed] == [
            ("fnhost-admins", [creds["client_id"], later["client_id"]])
        ]
        assert json.loads(live.cli("admin", "migrate", "--json").stdout)["to"] == latest_migration()
    finally:
        live.stop()
        if backend == "postgres":
            drop_database(name)
