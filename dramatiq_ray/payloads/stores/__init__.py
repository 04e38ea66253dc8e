"""Blob stores for spilled results."""

from __future__ import annotations

from .base import BlobInfo, BlobStore, verify_blob
from .digest import DigestStore
from .filesystem import FilesystemStore
from .gcs import GCSStore
from .s3 import S3Store

__all__ = ["BlobInfo", "BlobStore", "DigestStore", "FilesystemStore", "GCSStore", "S3Store", "verify_blob"]
