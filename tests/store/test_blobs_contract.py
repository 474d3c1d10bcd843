"""Every blob store backend behaves the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fnhost.blobs.abc import BlobStore
from fnhost.blobs.database import DatabaseBlobStore
from fnhost.blobs.local import LocalBlobStore
from fnhost.errors import PayloadTooLarge
from fnhost.store.db import Database


@pytest.fixture(params=["local", "database-sqlite", "database-postgresql"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    if request.param == "database-sqlite":
        url = f"sqlite:///{tmp_path / 'blobs.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    database = Database(url)
    database.migrate()
    yield DatabaseBlobStore(database, max_blob_bytes=1024 * 1024)
    database.dispose()


def test_put_get_delete(blobs: BlobStore) -> None:
    size = blobs.put("files/p/1-a", iter([b"hello ", b"world"]), max_bytes=100)
    assert size == 11
    assert blobs.exists("files/p/1-a")
    assert blobs.get("files/p/1-a") == b"hello world"
    blobs.put("files/p/1-a", iter([b"again"]), max_bytes=100)
    assert blobs.get("files/p/1-a") == b"again"
    blobs.delete("files/p/1-a")
    blobs.delete("files/p/1-a")
    assert not blobs.exists("files/p/1-a")
    with pytest.raises(KeyError):
        blobs.get("files/p/1-a")


def test_size_limit_keeps_nothing(blobs: BlobStore) -> None:
    with pytest.raises(PayloadTooLarge):
        blobs.put("files/p/big", iter([b"x" * 60, b"y" * 60]), max_bytes=100)
    assert not blobs.exists("files/p/big")
