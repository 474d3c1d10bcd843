"""A PEP 503 package index on 127.0.0.1 serving hand-written wheels (tests and benchmarks
install requirements from it, so nothing depends on the public index)."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class PackageIndex:
    """A PEP 503 simple index on 127.0.0.1, served from a thread."""

    def __init__(self) -> None:
        self.wheels: dict[str, tuple[str, bytes]] = {}  # project name -> (filename, bytes)
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = [p for p in self.path.split("?")[0].split("/") if p]
                if len(parts) == 2 and parts[0] == "simple" and parts[1] in index.wheels:
                    filename, data = index.wheels[parts[1]]
                    sha = hashlib.sha256(data).hexdigest()
                    body = (
                        f'<html><body><a href="/files/{filename}#sha256={sha}">{filename}</a>'
                        "</body></html>"
                    ).encode()
                    self._send(200, body, "text/html")
                elif len(parts) == 2 and parts[0] == "files":
                    for filename, data in index.wheels.values():
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
        self.wheels[name] = make_wheel(name, version, files)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
