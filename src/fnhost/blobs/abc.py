"""The blob store interface. Backends: ``local.LocalBlobStore`` (a directory)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator


class BlobStore(ABC):
    @abstractmethod
    def put(self, key: str, chunks: Iterator[bytes], *, max_bytes: int) -> int:
        """Store the chunks under ``key``; return the size. Raise ``PayloadTooLarge`` past max."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole blob. Raise ``KeyError`` when absent."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob; absent keys are ignored."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...
