"""Blob stores for spilled results."""

from __future__ import annotations

from .base import BlobInfo, BlobStore
from .digest import DigestStore
from .filesystem import FilesystemStore
from .gcs import GCSStore
from .integrity import verify_blob
from .s3 import S3Store

__all__ = ["BlobInfo", "BlobStore", "DigestStore", "FilesystemStore", "GCSStore", "S3Store", "verify_blob"]
