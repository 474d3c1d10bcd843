"""The pure validators of build/: zip safety, handler checks, requirement normalisation."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from fnhost.build import handler, zips
from fnhost.build.envs import normalise_requirements
from fnhost.build.zips import CodeError, ZipLimits

LIMITS = ZipLimits(max_entries=100, max_bytes=10_000_000, max_ratio=200)


def zip_of(files: dict[str, str | bytes], *, stored: bool = False) -> bytes:
    buf = io.BytesIO()
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            zf.writestr(info, content)
    return buf.getvalue()


def test_extract_sdk_style_zip(tmp_path: Path) -> None:
    # the SDK zips folders with "./" and directory entries, stored
    data = zip_of(
        {"./": "", "handler.py": "def handle():\n    pass\n", "sub/": "", "sub/util.py": "X = 1\n"},
        stored=True,
    )
    handler.check_zip(data, "handler.py", LIMITS)
    zips.extract_atomic(data, tmp_path / "code", LIMITS)
    assert (tmp_path / "code" / "sub" / "util.py").read_text() == "X = 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code"]  # no temp dir left


def test_extract_replaces_an_old_copy(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "stale.py").write_text("")
    zips.extract_atomic(zip_of({"handler.py": "def handle(): pass\n"}), tmp_path / "code", LIMITS)
    assert [p.name for p in (tmp_path / "code").iterdir()] == ["handler.py"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../x.py", "outside the zip root"),
        ("a/../../x.py", "outside the zip root"),
        ("..\\x.py", "outside the zip root"),
        ("/abs.py", "absolute path"),
        ("C:/abs.py", "absolute path"),
    ],
)
def test_escaping_names_are_refused(tmp_path: Path, name: str, message: str) -> None:
    data = zip_of({"handler.py": "def handle(): pass\n", name: "x = 1\n"})
    with pytest.raises(CodeError, match=message):
        zips.extract(data, tmp_path / "code", LIMITS)
    assert not (tmp_path / "code").exists()
    assert not (tmp_path / "x.py").exists()


def test_links_and_special_files_are_refused(tmp_path: Path) -> None:
    for kind, message in ((stat.S_IFLNK, "symbolic link"), (stat.S_IFIFO, "not a regular file")):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            info = zipfile.ZipInfo("odd")
            info.external_attr = (kind | 0o644) << 16
            zf.writestr(info, "target")
        with pytest.raises(CodeError, match=message):
            zips.extract(buf.getvalue(), tmp_path / "code", LIMITS)


def test_limits() -> None:
    small = ZipLimits(max_entries=3, max_bytes=1000, max_ratio=10)
    with pytest.raises(CodeError, match="holds 4 entries; at most 3"):
        handler.check_zip(zip_of({f"{i}.py": "" for i in range(4)}), "0.py", small)
    with pytest.raises(CodeError, match="more than 1000 bytes"):
        handler.check_zip(zip_of({"handler.py": "#" * 1001}), "handler.py", small)
    bomb = zip_of({"handler.py": "def handle(): pass\n", "z": b"\0" * (2 * 1024 * 1024)})
    with pytest.raises(CodeError, match="compression ratio over 200:1"):
        handler.check_zip(bomb, "handler.py", LIMITS)


def test_lying_headers_are_caught_while_extracting(tmp_path: Path) -> None:
    data = bytearray(zip_of({"handler.py": "#" * 5000}, stored=True))
    # shrink the declared size in the central directory: extraction must still count bytes
    limits = ZipLimits(max_entries=10, max_bytes=4000, max_ratio=200)
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.infolist()[0]
        assert info.file_size == 5000
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24 : cd + 28] = (100).to_bytes(4, "little")
    with pytest.raises(CodeError):
        zips.extract(bytes(data), tmp_path / "code", limits)


@pytest.mark.parametrize(
    "source",
    [
        "def handle(client, data, secrets, function_call_info):\n    pass\n",
        "def handle(*, data=None, client=None):\n    pass\n",
        "def handle():\n    pass\n",
        "def _impl(data):\n    pass\n\nhandle = _impl\n",
        "from typing import Callable\nhandle: Callable = lambda data: data\n",
        "from .impl import handle\n",
        "def handle(client: CogniteClient | None, data: dict):\n    pass\n",
        "def handle(foo):\n    pass\n\ndef handle(data):\n    pass\n",  # the last one counts
    ],
)
def test_valid_handlers(source: str) -> None:
    handler.check_source(source.encode(), "handler.py")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def handle(data):\n    pass\n\ndef handle(foo):\n    pass\n", r"argument\(s\) \['foo'\]"),
        ("def handler(data):\n    pass\n", "does not define a function named 'handle'"),
        ("class A:\n    def handle(self):\n        pass\n", "does not define"),
        ("handle: int\n", "does not define"),
        ("def handle(data)\n    pass\n", r"syntax error: .* \(line 1\)"),
        ("async def handle():\n    pass\n", "synchronous"),
    ],
)
def test_invalid_handlers(source: str, message: str) -> None:
    with pytest.raises(CodeError, match=message):
        handler.check_source(source.encode(), "handler.py")


def test_missing_handler_messages() -> None:
    with pytest.raises(CodeError, match="single top-level folder 'proj'"):
        handler.check_zip(zip_of({"proj/handler.py": "def handle(): pass\n"}), "handler.py", LIMITS)
    with pytest.raises(CodeError, match=r"include: a\.py"):
        handler.check_zip(zip_of({"a.py": ""}), "handler.py", LIMITS)
    with pytest.raises(CodeError, match="not a zip file"):
        handler.check_zip(b"PK not really", "handler.py", LIMITS)


def test_normalise_requirements() -> None:
    text = "# c\n\nrequests==2.0  # pin\n  numpy\n"
    assert normalise_requirements(text) == "requests==2.0\nnumpy"
    assert normalise_requirements("# only comments\n\n") == ""
