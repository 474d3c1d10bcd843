"""Files: metadata rows plus bytes in the blob store. Functions are deployed from these."""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fnhost.auth.capabilities import Principal
from fnhost.blobs.abc import BlobStore
from fnhost.clock import now_ms
from fnhost.errors import Duplicated, InvalidRequest, NotFound, Unauthenticated
from fnhost.services.access import Access
from fnhost.services.identifiers import Identifier, resolve_all
from fnhost.settings import Settings
from fnhost.store import files as store
from fnhost.store.db import Database
from fnhost.store.files import FileRow

MAX_NAME = 512


@dataclass(frozen=True)
class FileSpec:
    """A file's metadata, as created (its bytes come after, by its upload URL)."""

    name: str
    external_id: str | None = None
    mime_type: str | None = None
    directory: str | None = None
    source: str | None = None
    data_set_id: int | None = None
    metadata: dict[str, str] | None = None


@dataclass(frozen=True)
class FileFilter:
    name: str | None = None
    external_id_prefix: str | None = None
    uploaded: bool | None = None
    mime_type: str | None = None


class Files:
    def __init__(self, db: Database, blobs: BlobStore, access: Access, settings: Settings) -> None:
        self.db = db
        self.blobs = blobs
        self.access = access
        self.max_upload = settings.max_upload_bytes

    def create(self, project: str, caller: Principal, spec: FileSpec, *, overwrite: bool) -> FileRow:
        self.access.require(caller, project, "filesAcl", "WRITE")
        name, external_id = spec.name, spec.external_id
        if not name or len(name) > MAX_NAME:
            raise InvalidRequest(
                f"name is required: a string of 1 to {MAX_NAME} characters.", field="name"
            )
        if external_id is not None and len(external_id) > 255:
            raise InvalidRequest(
                "externalId must be a string of at most 255 characters.", field="external_id"
            )
        now = now_ms()
        token = secrets.token_urlsafe(24)
        with self.db.write() as s:
            row = store.by_external_id(project, external_id, session=s) if external_id else None
            if row is not None and not overwrite:
                raise Duplicated(
                    f"A file with the external id {external_id!r} exists; pass overwrite=true "
                    "to replace it.",
                    duplicated=[Identifier(external_id=external_id).entry()],
                    field="external_id",
                )
            if row is None:
                row = FileRow(project=project, external_id=external_id, created_time=now)
                s.add(row)
            elif row.blob_key:
                self.blobs.delete(row.blob_key)
            row.name = name
            row.mime_type = spec.mime_type
            row.directory = spec.directory
            row.source = spec.source
            row.data_set_id = spec.data_set_id
            row.metadata_ = spec.metadata
            row.uploaded = False
            row.uploaded_time = None
            row.size = None
            row.blob_key = None
            row.upload_token = token
            row.last_updated_time = now
            s.flush()
            return row

    def upload(self, project: str, caller: Principal, file_id: int, token: str, chunks: Iterator[bytes]) -> FileRow:
        self.access.require(caller, project, "filesAcl", "WRITE")
        with self.db.read() as s:
            row = store.get(project, file_id, session=s)
        if row is None:
            raise NotFound(f"File {file_id} does not exist.", missing=[{"id": file_id}])
        # bytes: compare_digest refuses str with non-ASCII characters (a 500 the fuzzer found)
        if not row.upload_token or not secrets.compare_digest(row.upload_token.encode(), token.encode()):
            raise Unauthenticated("The upload URL is not valid (expired or already used).")
        key = f"files/{project}/{file_id}-{secrets.token_hex(4)}"
        size = self.blobs.put(key, chunks, max_bytes=self.max_upload)
        with self.db.write() as s:
            row = store.get(project, file_id, session=s)
            if row is None:  # deleted while uploading
                self.blobs.delete(key)
                raise NotFound(f"File {file_id} was deleted during the upload.", missing=[{"id": file_id}])
            old = row.blob_key
            now = now_ms()
            row.blob_key = key
            row.size = size
            row.uploaded = True
            row.uploaded_time = now
            row.last_updated_time = now
            row.upload_token = None
        if old:
            self.blobs.delete(old)
        return row

    def resolve(self, project: str, ident: Identifier, *, session: Any) -> FileRow | None:
        if ident.id is not None:
            return store.get(project, ident.id, session=session)
        return store.by_external_id(project, ident.external_id or "", session=session)

    def by_ids(
        self, project: str, caller: Principal, idents: builtins.list[Identifier], ignore_unknown: bool
    ) -> builtins.list[FileRow]:
        self.access.require(caller, project, "filesAcl", "READ")
        with self.db.read() as s:
            rows = [self.resolve(project, i, session=s) for i in idents]
        return resolve_all(
            idents, rows, what="Files", ignore_unknown=ignore_unknown, entry=Identifier.entry,
            dedupe=False,
        )

    def list(
        self, project: str, caller: Principal, *, limit: int, cursor: int, filt: FileFilter | None = None
    ) -> builtins.list[FileRow]:
        self.access.require(caller, project, "filesAcl", "READ")
        filt = filt or FileFilter()
        with self.db.read() as s:
            return store.list_page(
                project,
                session=s,
                limit=limit,
                after_id=cursor,
                name=filt.name,
                external_id_prefix=filt.external_id_prefix,
                uploaded=filt.uploaded,
                mime_type=filt.mime_type,
            )

    def delete(
        self, project: str, caller: Principal, idents: builtins.list[Identifier], ignore_unknown: bool
    ) -> None:
        self.access.require(caller, project, "filesAcl", "WRITE")
        keys: builtins.list[str] = []
        with self.db.write() as s:
            rows = [self.resolve(project, i, session=s) for i in idents]
            found = resolve_all(
                idents, rows, what="Files", ignore_unknown=ignore_unknown, entry=Identifier.entry
            )
            for r in found:
                if r.blob_key:
                    keys.append(r.blob_key)
                s.delete(r)
        for k in keys:
            self.blobs.delete(k)

    def content(self, project: str, file_id: int) -> bytes:
        """The bytes of an uploaded file (internal: the builder reads function zips)."""
        with self.db.read() as s:
            row = store.get(project, file_id, session=s)
        if row is None or not row.uploaded or not row.blob_key:
            raise NotFound(f"File {file_id} does not exist or has no content.", missing=[{"id": file_id}])
        return self.blobs.get(row.blob_key)

    def download(self, project: str, caller: Principal, file_id: int) -> tuple[FileRow, bytes]:
        self.access.require(caller, project, "filesAcl", "READ")
        with self.db.read() as s:
            row = store.get(project, file_id, session=s)
        if row is None:
            raise NotFound(f"File {file_id} does not exist.", missing=[{"id": file_id}])
        return row, self.content(project, file_id)
