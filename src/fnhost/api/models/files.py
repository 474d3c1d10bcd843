"""``/files`` bodies: create (the file's metadata), list (filter); byids, delete and
downloadlink are ``common.ByIds``."""

from __future__ import annotations

from fnhost.api.models.common import Cursor, Id, Limit
from fnhost.api.wire import WireModel
from fnhost.services.files import FileFilter, FileSpec


class FileWrite(WireModel):
    """A file, as ``client.files.create`` (and ``functions.create(folder=…)``) sends it."""

    name: str
    external_id: str | None = None
    mime_type: str | None = None
    directory: str | None = None
    source: str | None = None
    data_set_id: Id | None = None
    metadata: dict[str, str] | None = None

    def spec(self) -> FileSpec:
        return FileSpec(
            name=self.name,
            external_id=self.external_id,
            mime_type=self.mime_type,
            directory=self.directory,
            source=self.source,
            data_set_id=self.data_set_id,
            metadata=self.metadata,
        )


class FileFilterIn(WireModel):
    name: str | None = None
    external_id_prefix: str | None = None
    uploaded: bool | None = None
    mime_type: str | None = None

    def filter(self) -> FileFilter:
        return FileFilter(
            name=self.name,
            external_id_prefix=self.external_id_prefix,
            uploaded=self.uploaded,
            mime_type=self.mime_type,
        )


class FilesList(WireModel):
    filter: FileFilterIn | None = None
    limit: Limit | None = None
    cursor: Cursor | None = None
