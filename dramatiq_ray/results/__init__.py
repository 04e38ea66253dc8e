"""Results that spill: keep small results in the result backend, write large ones to a blob store."""

from __future__ import annotations

from ..payloads.encryption import EncryptionKeys
from ..payloads.gc import GCReport, gc_blobs
from ..payloads.marker import SpilledResult
from ..payloads.plan import DEFAULT_MAX_INLINE_BYTES, SpillPlan
from ..payloads.pointers import Pointer, parse_pointer
from ..payloads.stores import BlobInfo, BlobStore, DigestStore, FilesystemStore, GCSStore, S3Store
from .access import find_spilling_backend, get_pointer
from .backend import SpillingBackend
from .middleware import Results

__all__ = [
    "DEFAULT_MAX_INLINE_BYTES",
    "BlobInfo",
    "BlobStore",
    "DigestStore",
    "EncryptionKeys",
    "FilesystemStore",
    "GCReport",
    "GCSStore",
    "Pointer",
    "Results",
    "S3Store",
    "SpillPlan",
    "SpilledResult",
    "SpillingBackend",
    "find_spilling_backend",
    "gc_blobs",
    "get_pointer",
    "parse_pointer",
]
