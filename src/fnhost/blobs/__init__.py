"""Blob storage: the bytes of uploaded files, behind one interface (``abc.BlobStore``)."""
