"""The pointer grammar: the small strings a result backend keeps in place of a spilled result.

The formats are those of django-ray 0.7, so tools can read both::

    oversize://sha256/<hex>?bytes=<n>                                  (nothing persisted, digest only)
    resultfs://sha256/<hex>?rel=<hex[0:2]>/<hex[2:4]>/<hex>.json&bytes=<n>
    s3://<bucket>/<prefix>/<hex[0:2]>/<hex[2:4]>/<hex>.json?bytes=<n>
    gs://<bucket>/<prefix>/<hex[0:2]>/<hex[2:4]>/<hex>.json?bytes=<n>

``<hex>`` is the lowercase SHA-256 of the encoded payload and ``<n>`` its size in bytes. The parser is strict:
anything else, including ``..`` segments, absolute paths, percent-escapes or extra query parameters, is refused
with ``InvalidPointerError``. This module knows nothing of store clients.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..errors import InvalidPointerError

__all__ = [
    "SCHEMES",
    "Pointer",
    "blob_name",
    "digest_of",
    "digest_pointer",
    "looks_like_pointer",
    "object_pointer",
    "parse_pointer",
    "resultfs_pointer",
]

#: Every scheme a pointer may start with.
SCHEMES = ("oversize://", "resultfs://", "s3://", "gs://")

_HEX = r"[0-9a-f]{64}"
_SIZE = r"(?:0|[1-9][0-9]{0,17})"
_BUCKET = r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]"
# Prefix segments: safe characters only, never "." or ".." on their own.
_SEGMENT = r"(?!\.{1,2}/)[A-Za-z0-9._-]+"
_OVERSIZE = re.compile(rf"oversize://sha256/(?P<digest>{_HEX})\?bytes=(?P<size>{_SIZE})")
_RESULTFS = re.compile(
    rf"resultfs://sha256/(?P<digest>{_HEX})\?rel=(?P<rel>[0-9a-f]{{2}}/[0-9a-f]{{2}}/(?P=digest)\.json)"
    rf"&bytes=(?P<size>{_SIZE})"
)
_OBJECT = re.compile(
    rf"(?P<scheme>s3|gs)://(?P<bucket>{_BUCKET})/(?P<key>(?P<prefix>(?:{_SEGMENT}/)*)"
    rf"(?P<d0>[0-9a-f]{{2}})/(?P<d1>[0-9a-f]{{2}})/(?P<digest>{_HEX})\.json)\?bytes=(?P<size>{_SIZE})"
)


@dataclass(frozen=True)
class Pointer:
    """A parsed pointer.

    ``scheme`` is one of ``oversize``, ``resultfs``, ``s3``, ``gs``; ``location`` is the relative path
    (``resultfs``) or object key (``s3``/``gs``), empty for ``oversize``; ``bucket`` is set for ``s3``/``gs``;
    ``prefix`` is the key prefix without its trailing slash.
    """

    raw: str
    scheme: str
    digest: str
    size: int
    location: str = ""
    bucket: str = ""
    prefix: str = ""


def blob_name(digest: str) -> str:
    """The content-addressed relative name of a blob: ``ab/cd/<digest>.json``."""
    return f"{digest[0:2]}/{digest[2:4]}/{digest}.json"


def digest_pointer(digest: str, size: int) -> str:
    """``oversize://sha256/<digest>?bytes=<size>``: a result of which only the digest was kept."""
    return f"oversize://sha256/{digest}?bytes={size}"


def resultfs_pointer(digest: str, size: int) -> str:
    """``resultfs://sha256/<digest>?rel=<aa>/<bb>/<digest>.json&bytes=<size>``: a blob under a filesystem root."""
    return f"resultfs://sha256/{digest}?rel={blob_name(digest)}&bytes={size}"


def object_pointer(scheme: str, bucket: str, key: str, size: int) -> str:
    """``<scheme>://<bucket>/<key>?bytes=<size>``: an object in an S3 (``s3``) or GCS (``gs``) bucket."""
    return f"{scheme}://{bucket}/{key}?bytes={size}"


def digest_of(data: bytes) -> str:
    """The lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def looks_like_pointer(value: object) -> bool:
    """True when ``value`` is a string starting with a pointer scheme (valid or not)."""
    return isinstance(value, str) and value.startswith(SCHEMES)


def parse_pointer(raw: str) -> Pointer:
    """Parse a pointer string.

    Raises:
      InvalidPointerError: ``raw`` does not follow the grammar exactly.
    """
    if not isinstance(raw, str) or len(raw) > 2048:
        raise InvalidPointerError(f"Not a result pointer: {_shorten(raw)}. Pointers are short strings.")
    if match := _OVERSIZE.fullmatch(raw):
        return Pointer(raw, "oversize", match["digest"], int(match["size"]))
    if (match := _RESULTFS.fullmatch(raw)) and match["rel"] == blob_name(match["digest"]):
        return Pointer(raw, "resultfs", match["digest"], int(match["size"]), location=match["rel"])
    if (match := _OBJECT.fullmatch(raw)) and match["d0"] + match["d1"] == match["digest"][:4]:
        return Pointer(
            raw,
            match["scheme"],
            match["digest"],
            int(match["size"]),
            location=match["key"],
            bucket=match["bucket"],
            prefix=match["prefix"].rstrip("/"),
        )
    raise InvalidPointerError(
        f"Not a valid result pointer: {_shorten(raw)}. Expected one of oversize://sha256/<hex>?bytes=<n>, "
        "resultfs://sha256/<hex>?rel=<aa>/<bb>/<hex>.json&bytes=<n>, s3://<bucket>/<key>?bytes=<n> or "
        "gs://<bucket>/<key>?bytes=<n>, with <key> ending in <aa>/<bb>/<hex>.json."
    )


def _shorten(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
