"""Blobs stored in the database (``FNHOST_BLOB_STORE=database``).

Function zips are small (a size cap applies), and keeping them in the database gives every
replica the same artifacts with no extra service. Large media belong in an object store.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import delete, select

from fnhost.blobs.abc import BlobStore
from fnhost.clock import now_ms
from fnhost.errors import PayloadTooLarge
from fnhost.store.blobs import BlobRow
from fnhost.store.db import Database


class DatabaseBlobStore(BlobStore):
    def __init__(self, db: Database, max_blob_bytes: int) -> None:
        self.db = db
        self.max_blob_bytes = max_blob_bytes

    def put(self, key: str, chunks: Iterator[bytes], *, max_bytes: int) -> int:
        limit = min(max_bytes, self.max_blob_bytes)
        parts: list[bytes] = []
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"Upload is larger than the limit of {limit} bytes for database blob storage."
                )
            parts.append(chunk)
        content = b"".join(parts)
        with self.db.write() as s:
            row = s.get(BlobRow, key)
            if row is None:
                s.add(BlobRow(key=key, size=size, content=content, created_time=now_ms()))
            else:
                row.size, row.content = size, content
        return size

    def get(self, key: str) -> bytes:
        with self.db.read() as s:
            content = s.scalar(select(BlobRow.content).where(BlobRow.key == key))
        if content is None:
            raise KeyError(key)
        return bytes(content)

    def delete(self, key: str) -> None:
        with self.db.write() as s:
            s.execute(delete(BlobRow).where(BlobRow.key == key))

    def exists(self, key: str) -> bool:
        with self.db.read() as s:
            return s.scalar(select(BlobRow.key).where(BlobRow.key == key)) is not None
