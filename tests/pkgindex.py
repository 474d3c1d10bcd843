"""A PEP 503 package index on 127.0.0.1 serving hand-written wheels (tests and benchmarks
install requirements from it, so nothing depends on the public index)."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def make_wheel(name: str, version: str, files: dict[str, str]) -> tuple[str, bytes]:
    """A pure-Python wheel, written by hand (no build tools, no network)."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    contents = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: fnhost-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in contents.items():
            data = text.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
            zf.writestr(path, data)
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return f"{dist}-{version}-py3-none-any.whl", buf.getvalue()


def make_sdist(name: str, version: str, files: dict[str, str]) -> tuple[str, bytes]:
    """A source distribution (``.tar.gz``) of ``files`` (a ``setup.py``, say): installing it
    runs its build, which is what the escape tests need a package to do."""
    dist = f"{name.replace('-', '_')}-{version}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        contents = {**files, "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"}
        for path, text in contents.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{dist}/{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return f"{dist}.tar.gz", buf.getvalue()


# setuptools for builds that need it (setup.py), fetched once by scripts/setup: the index
# must serve it, because a build sees only the indexes its function names
TEST_WHEELS = Path(__file__).resolve().parents[1] / ".test-wheels"


def setuptools_wheel() -> tuple[str, bytes]:
    found = sorted(TEST_WHEELS.glob("setuptools-*.whl"))
    if not found:
        raise RuntimeError(f"no setuptools wheel in {TEST_WHEELS}: run ./scripts/setup")
    return found[-1].name, found[-1].read_bytes()


class PackageIndex:
    """A PEP 503 simple index on 127.0.0.1, served from a thread."""

    def __init__(self) -> None:
        # project name -> its files (filename, bytes): wheels, sdists
        self.files: dict[str, list[tuple[str, bytes]]] = {}
        self.requested: list[str] = []  # paths asked for, to tell what a build fetched
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requested.append(self.path)
                parts = [p for p in self.path.split("?")[0].split("/") if p]
                if len(parts) == 2 and parts[0] == "simple" and parts[1] in index.files:
                    links = "".join(
                        f'<a href="/files/{filename}#sha256={hashlib.sha256(data).hexdigest()}">{filename}</a>'
                        for filename, data in index.files[parts[1]]
                    )
                    self._send(200, f"<html><body>{links}</body></html>".encode(), "text/html")
                elif len(parts) == 2 and parts[0] == "files":
                    for files in index.files.values():
                        for filename, data in files:
                            if filename == parts[1]:
                                self._send(200, data, "application/octet-stream")
                                return
                    self._send(404, b"not found", "text/plain")
                else:
                    self._send(404, b"not found", "text/plain")

            def do_HEAD(self) -> None:
                self._head_only = True
                try:
                    self.do_GET()
                finally:
                    self._head_only = False

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not getattr(self, "_head_only", False):
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/simple"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, name: str, version: str, files: dict[str, str]) -> None:
        """A wheel of ``files`` (the project's only file)."""
        self.files[name] = [make_wheel(name, version, files)]

    def add_file(self, name: str, filename: str, data: bytes) -> None:
        self.files.setdefault(name, []).append((filename, data))

    def add_sdist(self, name: str, version: str, files: dict[str, str]) -> None:
        """Only a source distribution: installing it means building it."""
        self.files[name] = [make_sdist(name, version, files)]

    def add_setuptools(self) -> None:
        self.add_file("setuptools", *setuptools_wheel())

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
