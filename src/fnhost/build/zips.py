"""Safe reading and extraction of function zips.

A zip is checked before anything is written: every entry must be a regular file or a
directory under the zip root (no absolute paths, no ``..``, no symlinks or device files),
and the entry count, total unpacked size and per-entry compression ratio must stay under
the limits in ``Settings``. Extraction streams each entry and counts the bytes actually
written, because the sizes in a zip's headers may lie.

Everything here raises ``CodeError`` with a message meant for the user who uploaded the zip.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

# A small file may compress very well (a long run of spaces); the ratio guard applies only
# to entries at least this large, where a high ratio means a zip bomb.
RATIO_MIN_BYTES = 1024 * 1024
_CHUNK = 1024 * 1024


class CodeError(Exception):
    """The uploaded code cannot be deployed; ``message`` says why, ``trace`` gives detail."""

    def __init__(self, message: str, trace: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.trace = trace


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int
    max_bytes: int
    max_ratio: int


@dataclass(frozen=True)
class Entry:
    info: zipfile.ZipInfo
    path: str  # normalised relative POSIX path, "" never
    is_dir: bool


def open_zip(data: bytes) -> zipfile.ZipFile:
    if not data:
        raise CodeError("The code file is empty; upload a zip file.")
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise CodeError(
            "The code file is not a zip file. Upload a zip whose root holds the function's "
            "code (handler.py at the root unless functionPath says otherwise)."
        ) from None


def _normalise(name: str) -> str | None:
    """The entry's relative path, ``None`` for the root itself; raise for paths that escape."""
    cleaned = name.replace("\\", "/")
    if cleaned.startswith("/") or (len(cleaned) > 1 and cleaned[1] == ":"):
        raise CodeError(
            f"The zip entry {name!r} has an absolute path; entries must be relative to the zip root."
        )
    parts = [p for p in cleaned.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise CodeError(
            f"The zip entry {name!r} points outside the zip root ('..' is not allowed)."
        )
    if any("\x00" in p for p in parts):
        raise CodeError(f"The zip entry {name!r} has a NUL character in its name.")
    return "/".join(parts) or None


def entries(zf: zipfile.ZipFile, limits: ZipLimits) -> list[Entry]:
    """Every entry, checked against the limits and for path escapes and links."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise CodeError(
            f"The zip holds {len(infos)} entries; at most {limits.max_entries} are allowed."
        )
    out: list[Entry] = []
    total = 0
    for info in infos:
        path = _normalise(info.filename)
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise CodeError(
                f"The zip entry {info.filename!r} is a symbolic link; links are not allowed."
            )
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise CodeError(f"The zip entry {info.filename!r} is not a regular file or directory.")
        if info.flag_bits & 0x1:
            raise CodeError(
                f"The zip entry {info.filename!r} is encrypted; upload an unencrypted zip."
            )
        if path is None:
            continue
        is_dir = info.is_dir() or kind == stat.S_IFDIR
        if not is_dir:
            total += info.file_size
            if total > limits.max_bytes:
                raise CodeError(
                    f"The zip unpacks to more than {limits.max_bytes} bytes, the most allowed for a function's code."
                )
            if info.file_size >= RATIO_MIN_BYTES and info.file_size > limits.max_ratio * max(
                info.compress_size, 1
            ):
                raise CodeError(
                    f"The zip entry {info.filename!r} has a compression ratio over {limits.max_ratio}:1 "
                    "(refused as a possible zip bomb)."
                )
        out.append(Entry(info, path, is_dir))
    return out


def read_member(zf: zipfile.ZipFile, found: list[Entry], path: str, limit: int) -> bytes | None:
    """The bytes of the file at ``path`` (normalised), or None when the zip has no such file."""
    for e in reversed(found):  # a later duplicate wins, as it does on extraction
        if e.path == path and not e.is_dir:
            with zf.open(e.info) as src:
                data = src.read(limit + 1)
            if len(data) > limit:
                raise CodeError(f"{path} is larger than {limit} bytes.")
            return data
    return None


def missing_file_message(found: list[Entry], function_path: str) -> str:
    """Explain a missing handler, pointing at the usual mistake (an extra root folder)."""
    msg = f"The function file {function_path!r} was not found in the zip."
    tops = {e.path.split("/", 1)[0] for e in found}
    files = [e.path for e in found if not e.is_dir]
    if len(tops) == 1 and files and all("/" in f for f in files):
        top = tops.pop()
        if any(f == f"{top}/{function_path}" for f in files):
            msg += (
                f" The zip has a single top-level folder {top!r} that holds it: zip the folder's "
                "contents, not the folder, or set functionPath to "
                f"'{top}/{function_path}'."
            )
            return msg
    py = sorted(f for f in files if f.endswith(".py"))[:5]
    if py:
        msg += f" Python files at hand include: {', '.join(py)}. Set functionPath to the file that defines handle."
    return msg


def extract(data: bytes, dest: Path, limits: ZipLimits) -> None:
    """Extract ``data`` into ``dest`` (created; must not exist), enforcing the limits."""
    with open_zip(data) as zf:
        found = entries(zf, limits)
        dest.mkdir(parents=True)
        root = dest.resolve()
        written = 0
        for e in found:
            target = root.joinpath(*e.path.split("/"))
            # belt and braces: the normalised path can only stay below root
            if os.path.commonpath([root, target.resolve()]) != str(root):
                raise CodeError(f"The zip entry {e.info.filename!r} points outside the zip root.")
            try:
                if e.is_dir:
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                executable = bool((e.info.external_attr >> 16) & 0o111)
                with zf.open(e.info) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > limits.max_bytes:
                            raise CodeError(
                                f"The zip unpacks to more than {limits.max_bytes} bytes, the most "
                                "allowed for a function's code."
                            )
                        out.write(chunk)
                os.chmod(target, 0o755 if executable else 0o644)
            except (OSError, zipfile.BadZipFile, EOFError, RuntimeError) as exc:
                raise CodeError(
                    f"The zip entry {e.info.filename!r} could not be extracted: {exc}"
                ) from None


def extract_atomic(data: bytes, dest: Path, limits: ZipLimits) -> None:
    """Extract into a sibling temp dir and rename it to ``dest`` (replacing an old copy)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name}-{os.getpid()}-{os.urandom(3).hex()}"
    try:
        extract(data, tmp, limits)
        if dest.exists():
            old = dest.parent / f".old-{dest.name}-{os.urandom(3).hex()}"
            try:
                dest.rename(old)
            except OSError:
                pass
            else:
                shutil.rmtree(old, ignore_errors=True)
        try:
            tmp.rename(dest)
        except OSError:
            if not dest.is_dir():  # another thread put the same code in place: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
