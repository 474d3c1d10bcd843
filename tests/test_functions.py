"""Deploying functions with the official cognite-sdk: the three modes of the user docs,
list/retrieve/delete, a private package index, and every kind of bad input.

The server is real (its own home on a free port); environments are shared through the
test env cache, so the cognite-sdk baseline is built once per machine.
"""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cognite.client import CogniteClient
from cognite.client.data_classes import Function
from cognite.client.exceptions import CogniteAPIError, CogniteFileUploadError

from tests.live import SHARED_ENV_DIR, LiveServer, wait_for
from tests.pkgindex import PackageIndex


# The handle of the user docs ("Create a function from a Jupyter Notebook"), verbatim.
def handle(client, data):
    asset_no = data["assetNo"]
    print("Returning asset number {}".format(asset_no))  # noqa: UP032
    assets = client.assets.list()
    return {"assetName": assets[asset_no].name}


def annotated_handle() -> Any:
    # Real users annotate handles; only the function's own source is uploaded, so the
    # names in these annotations are undefined where the handler is imported.
    def handle(client: CogniteClient | None = None, data: dict[str, Any] | None = None) -> dict:
        return {"ok": client is not None, "data": data}

    return handle


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("deploy-home")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(live: LiveServer) -> CogniteClient:
    return live.client(live.create_client("deployer"))


@pytest.fixture(scope="module")
def index() -> Iterator[PackageIndex]:
    idx = PackageIndex()
    idx.add("fnhost-localpkg", "1.0.0", {"fnhost_localpkg/__init__.py": "VALUE = 42\n"})
    yield idx
    idx.close()


# -- helpers -----------------------------------------------------------------------------------
def zip_of(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)  # keeps odd names such as "/abs.py" as they are
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return buf.getvalue()


def upload(client: CogniteClient, content: bytes, name: str = "code.zip") -> int:
    return client.files.upload_bytes(content, name=name).id


def wait_done(fn: Function, timeout: float = 120) -> Function:
    def done() -> bool:
        fn.update()
        return fn.status in ("Ready", "Failed")

    wait_for(done, timeout=timeout, interval=0.05, what=f"function {fn.id} to be Ready or Failed")
    return fn


def assert_ready(fn: Function) -> None:
    wait_done(fn)
    assert fn.status == "Ready", fn.error


def create_error(client: CogniteClient, **kwargs: Any) -> CogniteAPIError:
    with pytest.raises(CogniteAPIError) as info:
        client.functions.create(**kwargs)
    return info.value


GOOD = {"handler.py": "def handle(data):\n    return data\n"}


# -- the three modes of the user docs ------------------------------------------------------------
def test_deploy_from_function_handle(client: CogniteClient) -> None:
    # Create the function
    func = client.functions.create(
    name="my-function",
    external_id="my-function",
    function_handle=handle
    )
    try:
        assert func.status == "Queued"
        assert_ready(func)
        assert func.error is None
        got = client.functions.retrieve(external_id="my-function")
        assert got is not None and got.id == func.id and got.status == "Ready"
        assert got.runtime == "py311" and got.runtime_version.startswith("Python 3.11")
    finally:
        client.functions.delete(external_id="my-function")
    assert client.functions.retrieve(external_id="my-function") is None


def test_annotated_handle_deploys(client: CogniteClient) -> None:
    func = client.functions.create(name="annotated", function_handle=annotated_handle())
    assert_ready(func)
    client.functions.delete(id=func.id)


def test_deploy_from_folder(client: CogniteClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "path" / "to" / "folder"
    (folder / "helpers" / "deep").mkdir(parents=True)
    (folder / "handler.py").write_text(
        "from helpers.deep.util import greet\n\n"
        "def handle(client, data):\n    return {'greeting': greet(data['name'])}\n"
    )
    (folder / "helpers" / "__init__.py").write_text("")
    (folder / "helpers" / "deep" / "__init__.py").write_text("")
    (folder / "helpers" / "deep" / "util.py").write_text(
        "from .words import HELLO\n\ndef greet(name):\n    return f'{HELLO} {name}'\n"
    )
    (folder / "helpers" / "deep" / "words.py").write_text("HELLO = 'hello'\n")
    monkeypatch.chdir(tmp_path)

    func = client.functions.create(
    name="my-function",
    external_id="my-function",
    folder="path/to/folder"
    )
    try:
        assert_ready(func)
        assert func.function_path == "handler.py"
    finally:
        client.functions.delete(external_id="my-function")


def test_deploy_folder_with_handler_in_subfolder(client: CogniteClient, tmp_path: Path) -> None:
    (tmp_path / "app" / "jobs").mkdir(parents=True)
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "jobs" / "__init__.py").write_text("")
    (tmp_path / "app" / "common.py").write_text("FACTOR = 3\n")
    (tmp_path / "app" / "jobs" / "handler.py").write_text(
        "from ..common import FACTOR\nfrom app.common import FACTOR as F2\n\n"
        "def handle(data, secrets, function_call_info):\n    return FACTOR * F2\n"
    )
    func = client.functions.create(
        name="nested", folder=str(tmp_path), function_path="app/jobs/handler.py", secrets={"key": "v"}
    )
    assert_ready(func)
    assert client.functions.retrieve(id=func.id).function_path == "app/jobs/handler.py"
    client.functions.delete(id=func.id)


def test_deploy_from_uploaded_zip_then_list_retrieve_delete(client: CogniteClient) -> None:
    file_id = client.files.upload_bytes(zip_of(GOOD), name="my-function.zip").id

    func = client.functions.create(
    name="my-function",
    external_id="my-function",
    file_id=file_id
    )
    try:
        assert_ready(func)
        listed = client.functions.list(limit=None)
        assert func.id in [f.id for f in listed]
        assert [f.status for f in listed if f.id == func.id] == ["Ready"]
        assert client.functions.list(status="Ready", name="my-function")[0].id == func.id
        assert client.functions.retrieve(id=func.id).file_id == file_id
        both = client.functions.retrieve_multiple(ids=[func.id], external_ids=["my-function"])
        assert [f.id for f in both] == [func.id]
    finally:
        client.functions.delete(external_id="my-function")
    assert client.functions.retrieve(id=func.id) is None
    assert func.id not in [f.id for f in client.functions.list(limit=None)]


# -- requirements from a private index ----------------------------------------------------------
def _req_dirs_with(package: str) -> set[str]:
    return {p.name for p in SHARED_ENV_DIR.glob("req-*") if (p / "site" / package).is_dir()}


def test_requirements_from_own_index_are_installed_and_cached(
    client: CogniteClient, index: PackageIndex
) -> None:
    code = zip_of(
        {
            "handler.py": "import fnhost_localpkg\n\ndef handle():\n    return fnhost_localpkg.VALUE\n",
            "requirements.txt": "# pinned\nfnhost-localpkg==1.0.0\n",
        }
    )
    before = _req_dirs_with("fnhost_localpkg")
    first = client.functions.create(name="with-reqs", file_id=upload(client, code), index_url=index.url)
    assert_ready(first)  # the import check imported fnhost_localpkg inside the environment
    built = _req_dirs_with("fnhost_localpkg") - before
    assert len(built) == 1

    # same requirements (comments and blank lines aside), same index: the environment is shared
    code2 = zip_of(
        {
            "handler.py": "from fnhost_localpkg import VALUE\n\ndef handle(data):\n    return VALUE\n",
            "requirements.txt": "\nfnhost-localpkg==1.0.0   # same\n",
        }
    )
    second = client.functions.create(name="with-reqs-2", file_id=upload(client, code2), index_url=index.url)
    assert_ready(second)
    assert _req_dirs_with("fnhost_localpkg") - before == built
    client.functions.delete(id=[first.id, second.id])


def test_unresolvable_requirement_fails_with_installer_output(
    client: CogniteClient, index: PackageIndex
) -> None:
    code = zip_of({**GOOD, "requirements.txt": "fnhost-no-such-package==1.0\n"})
    func = client.functions.create(name="bad-reqs", file_id=upload(client, code), index_url=index.url)
    wait_done(func)
    assert func.status == "Failed"
    assert func.error["message"].startswith("Installing requirements.txt failed:")
    assert "fnhost-no-such-package" in func.error["message"]
    assert "fnhost-no-such-package" in func.error["trace"]
    client.functions.delete(id=func.id)


def test_import_error_fails_with_traceback(client: CogniteClient) -> None:
    code = zip_of({"handler.py": "import fnhost_missing_module\n\ndef handle():\n    return 1\n"})
    func = client.functions.create(name="import-error", file_id=upload(client, code))
    wait_done(func)
    assert func.status == "Failed"
    assert "ModuleNotFoundError" in func.error["message"]
    assert "fnhost_missing_module" in func.error["message"]
    assert "Traceback" in func.error["trace"]
    client.functions.delete(id=func.id)


def test_env_vars_are_visible_to_the_import_check(client: CogniteClient) -> None:
    code = zip_of({"handler.py": "import os\nMODE = os.environ['MODE']\n\ndef handle():\n    return MODE\n"})
    func = client.functions.create(name="env", file_id=upload(client, code), env_vars={"MODE": "x"})
    assert_ready(func)
    client.functions.delete(id=func.id)


# -- bad input refused at create time ----------------------------------------------------------
def _symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("handler.py", GOOD["handler.py"])
        link = zipfile.ZipInfo("data.txt")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return buf.getvalue()


def _bomb_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("handler.py", GOOD["handler.py"])
        zf.writestr("zeros.bin", b"\0" * (4 * 1024 * 1024))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (b"this is not a zip", {}, "is not a zip file"),
        (b"", {}, "is empty"),
        (zip_of({**GOOD, "../evil.py": "x = 1\n"}), {}, "points outside the zip root"),
        (zip_of({**GOOD, "/etc/evil.py": "x = 1\n"}), {}, "has an absolute path"),
        (_symlink_zip(), {}, "is a symbolic link"),
        (_bomb_zip(), {}, "compression ratio over"),
        (zip_of({"main.py": "def handle():\n    pass\n"}), {}, "'handler.py' was not found in the zip"),
        (zip_of({"fn/handler.py": GOOD["handler.py"]}), {}, "single top-level folder 'fn'"),
        (zip_of(GOOD), {"function_path": "src/handler.py"}, "'src/handler.py' was not found"),
        (zip_of({"handler.py": "def run(data):\n    pass\n"}), {}, "does not define a function named 'handle'"),
        (zip_of({"handler.py": "x = 1\n\ndef handle(data:\n    pass\n"}), {}, "syntax error"),
        (zip_of({"handler.py": "def handle(data, context):\n    pass\n"}), {}, "argument(s) ['context']"),
        (zip_of({"handler.py": "async def handle(data):\n    pass\n"}), {}, "must be a synchronous function"),
        (zip_of(GOOD), {"runtime": "py39"}, "Runtime 'py39' is unknown"),
        (zip_of(GOOD), {"runtime": "py314"}, "Available runtimes: py311"),
        (zip_of(GOOD), {"name": "n" * 141}, "name must be a string of 1 to 140 characters"),
        (zip_of(GOOD), {"secrets": {"Bad_Key": "v"}}, "Invalid secret key(s) ['Bad_Key']"),
        (zip_of(GOOD), {"metadata": {str(i): "v" for i in range(17)}}, "metadata may have at most 16 keys"),
        (zip_of(GOOD), {"env_vars": {"FNHOST_HOME": "/"}}, "reserved prefix"),
        (zip_of(GOOD), {"index_url": "ftp://example"}, "indexUrl must be an http(s) URL"),
    ],
    ids=[
        "not-zip", "empty", "dotdot", "absolute", "symlink", "bomb", "no-handler", "extra-root",
        "no-handler-path", "no-handle", "syntax", "bad-args", "async", "unknown-runtime",
        "absent-runtime", "long-name", "bad-secret", "metadata", "reserved-env", "bad-index",
    ],
)
def test_bad_input_is_refused_at_create(
    client: CogniteClient, content: bytes, kwargs: dict[str, Any], message: str
) -> None:
    file_id = upload(client, content)
    args = {"name": "bad", **kwargs, "file_id": file_id}
    err = create_error(client, **args)
    assert err.code == 400
    assert message in err.message
    if "syntax" in message:
        assert "(line 3)" in err.message
    assert client.functions.list(name=args["name"]) == []


def test_server_keeps_serving_after_bad_input(client: CogniteClient) -> None:
    create_error(client, name="bad", file_id=upload(client, b"junk"))
    func = client.functions.create(name="still-fine", file_id=upload(client, zip_of(GOOD)))
    assert_ready(func)
    client.functions.delete(id=func.id)


def test_size_limits(tmp_path: Path) -> None:
    live = LiveServer(
        tmp_path / "limited",
        env={
            "FNHOST_MAX_UPLOAD_BYTES": "60000",
            "FNHOST_MAX_CODE_BYTES": "50000",
            "FNHOST_MAX_ZIP_ENTRIES": "20",
        },
    ).start()
    try:
        client = live.client(live.create_client("limited"))
        with pytest.raises(CogniteFileUploadError) as upload_info:
            client.files.upload_bytes(b"x" * 70000, name="big.zip")
        assert upload_info.value.code == 413
        assert "larger than the limit of 60000 bytes" in upload_info.value.message

        unpacked = zip_of({**GOOD, "data.txt": "y" * 60000})  # small zip, large code
        err = create_error(client, name="big", file_id=upload(client, unpacked))
        assert err.code == 400 and "unpacks to more than 50000 bytes" in err.message

        many = zip_of({**GOOD, **{f"m{i}.py": "" for i in range(25)}})
        err = create_error(client, name="many", file_id=upload(client, many))
        assert err.code == 400 and "holds 26 entries; at most 20" in err.message
    finally:
        live.stop()
