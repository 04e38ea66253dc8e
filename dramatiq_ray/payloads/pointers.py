"""The pointer grammar: the small strings a result backend keeps in place of a spilled result.

The formats are those of django-ray 0.7, so tools can read both::

    oversize://sha256/<hex>?bytes=<n>                                  (nothing persisted, digest only)
    resultfs://sha256/<hex>?rel=<hex[0:2]>/<hex[2:4]>/<hex>.<ext>&bytes=<n>
    s3://<bucket>/<prefix>/<hex[0:2]>/<hex[2:4]>/<hex>.<ext>?bytes=<n>
    gs://<bucket>/<prefix>/<hex[0:2]>/<hex[2:4]>/<hex>.<ext>?bytes=<n>

``<hex>`` is the lowercase SHA-256 of the stored bytes and ``<n>`` their size. After ``bytes=<n>``, a pointer
names how to read those bytes, in this order and each at most once::

    &codec=raw|npy|arrow|pickle     how the value was serialized (absent: JSON, the result backend's encoder)
    &z=zstd|gzip|lzma               how the serialized bytes were compressed (absent: not compressed)
    &k=<key id>                     the id of the AES-256-GCM key they were encrypted with (absent: not encrypted)

so a pointer without them (every django-ray pointer) means JSON, as before.

A blob's name says what it holds (:func:`blob_extension`): ``.json``, ``.bin`` (raw bytes), ``.npy``, ``.arrow``
or ``.pkl``, then ``.zst``, ``.gz`` or ``.xz`` when compressed, then ``.enc`` when encrypted; e.g.
``<hex>.npy.zst.enc``. Blobs written before names said so are all ``<hex>.json`` whatever their parameters: a
``.json`` name is read with any parameters; any other name must be the one its parameters give.

The digest and size are those of the bytes as stored (after compression and encryption): integrity is checked
before anything is decrypted, decompressed or decoded. The parser is strict: anything else, including ``..``
segments, absolute paths, percent-escapes, unknown parameters or values, is refused with ``InvalidPointerError``.
This module knows nothing of store clients, codecs or keys.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..errors import InvalidPointerError
from ._safe import shorten

__all__ = [
    "SCHEMES",
    "Pointer",
    "as_pointer",
    "blob_extension",
    "blob_name",
    "digest_of",
    "digest_pointer",
    "looks_like_pointer",
    "object_pointer",
    "parse_pointer",
    "resultfs_pointer",
    "with_reading",
]

#: Every scheme a pointer may start with.
SCHEMES = ("oversize://", "resultfs://", "s3://", "gs://")

_HEX = r"[0-9a-f]{64}"
_SIZE = r"(?:0|[1-9][0-9]{0,17})"
_BUCKET = r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]"
# Prefix segments: safe characters only, never "." or ".." on their own.
_SEGMENT = r"(?!\.{1,2}/)[A-Za-z0-9._-]+"
#: What a blob's name ends with, by what it holds (see :func:`blob_extension`).
CODEC_EXTENSIONS = {"json": "json", "raw": "bin", "npy": "npy", "arrow": "arrow", "pickle": "pkl"}
COMPRESSION_EXTENSIONS = {"zstd": "zst", "gzip": "gz", "lzma": "xz"}
ENCRYPTED_EXTENSION = "enc"
_EXT = (
    rf"(?:{'|'.join(CODEC_EXTENSIONS.values())})(?:\.(?:{'|'.join(COMPRESSION_EXTENSIONS.values())}))?"
    rf"(?:\.{ENCRYPTED_EXTENSION})?"
)
#: The extensions a blob's name may end with.
EXTENSION_PATTERN = re.compile(_EXT)
_OVERSIZE = re.compile(rf"oversize://sha256/(?P<digest>{_HEX})\?bytes=(?P<size>{_SIZE})")
_RESULTFS = re.compile(
    rf"resultfs://sha256/(?P<digest>{_HEX})\?rel=(?P<rel>[0-9a-f]{{2}}/[0-9a-f]{{2}}/(?P=digest)\.(?P<ext>{_EXT}))"
    rf"&bytes=(?P<size>{_SIZE})"
)
_OBJECT = re.compile(
    rf"(?P<scheme>s3|gs)://(?P<bucket>{_BUCKET})/(?P<key>(?P<prefix>(?:{_SEGMENT}/)*)"
    rf"(?P<d0>[0-9a-f]{{2}})/(?P<d1>[0-9a-f]{{2}})/(?P<digest>{_HEX})\.(?P<ext>{_EXT}))\?bytes=(?P<size>{_SIZE})"
)


#: The codecs a pointer may name (JSON, the default, is named by no parameter).
POINTER_CODECS = ("raw", "npy", "arrow", "pickle")
#: The compressions a pointer may name.
POINTER_COMPRESSIONS = ("zstd", "gzip", "lzma")
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_WITH_PARAMS = re.compile(r"(?P<base>.*?bytes=[0-9]+)(?P<params>(?:&[^&]*)*)", re.DOTALL)
_PARAM_ORDER = ("codec", "z", "k")


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
    #: How the value was serialized: ``json`` (no parameter), ``raw``, ``npy``, ``arrow`` or ``pickle``.
    codec: str = "json"
    #: How the serialized bytes were compressed, or ``None``.
    compression: str | None = None
    #: The id of the encryption key, or ``None`` when not encrypted.
    key_id: str | None = None


def blob_extension(codec: str = "json", compression: str | None = None, key_id: str | None = None) -> str:
    """What the name of a blob holding this ends with: ``json``, ``bin``, ``npy``, ``arrow`` or ``pkl``, then
    ``.zst``, ``.gz`` or ``.xz`` when compressed, then ``.enc`` when encrypted (``npy.zst.enc``)."""
    extension = CODEC_EXTENSIONS[codec]
    if compression is not None:
        extension += "." + COMPRESSION_EXTENSIONS[compression]
    if key_id is not None:
        extension += "." + ENCRYPTED_EXTENSION
    return extension


def blob_name(digest: str, extension: str = "json") -> str:
    """The content-addressed relative name of a blob: ``ab/cd/<digest>.<extension>``.

    Raises:
      InvalidPointerError: ``extension`` is not one :func:`blob_extension` gives.
    """
    if not isinstance(extension, str) or not EXTENSION_PATTERN.fullmatch(extension):
        raise InvalidPointerError(
            f"Invalid blob extension {_shorten(extension)}: use one blob_extension() gives (json, bin, npy, arrow, "
            "pkl, then .zst, .gz or .xz, then .enc)."
        )
    return f"{digest[0:2]}/{digest[2:4]}/{digest}.{extension}"


def digest_pointer(digest: str, size: int) -> str:
    """``oversize://sha256/<digest>?bytes=<size>``: a result of which only the digest was kept."""
    return f"oversize://sha256/{digest}?bytes={size}"


def resultfs_pointer(digest: str, size: int, extension: str = "json") -> str:
    """``resultfs://sha256/<digest>?rel=<aa>/<bb>/<digest>.<extension>&bytes=<size>``: a blob under a filesystem
    root."""
    return f"resultfs://sha256/{digest}?rel={blob_name(digest, extension)}&bytes={size}"


def object_pointer(scheme: str, bucket: str, key: str, size: int) -> str:
    """``<scheme>://<bucket>/<key>?bytes=<size>``: an object in an S3 (``s3``) or GCS (``gs``) bucket."""
    return f"{scheme}://{bucket}/{key}?bytes={size}"


def with_reading(
    pointer: str, *, codec: str = "json", compression: str | None = None, key_id: str | None = None
) -> str:
    """``pointer`` with the parameters that say how to read it (none for plain JSON)."""
    params = [("codec", None if codec == "json" else codec), ("z", compression), ("k", key_id)]
    return pointer + "".join(f"&{name}={value}" for name, value in params if value is not None)


def digest_of(data: bytes | memoryview) -> str:
    """The lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def looks_like_pointer(value: object) -> bool:
    """True when ``value`` is a string starting with a pointer scheme (valid or not)."""
    return isinstance(value, str) and value.startswith(SCHEMES)


def parse_pointer(raw: str) -> Pointer:
    """Parse a pointer string.

    Raises:
      InvalidPointerError: ``raw`` is not a string, or does not follow the grammar exactly.
    """
    if not isinstance(raw, str):
        raise InvalidPointerError(
            f"Not a result pointer: a {type(raw).__name__}. Pointers are strings such as "
            "'resultfs://sha256/<hex>?rel=...&bytes=<n>'."
        )
    if len(raw) > 2048:
        raise InvalidPointerError(f"Not a result pointer: {_shorten(raw)}. Pointers are short strings.")
    split = _WITH_PARAMS.fullmatch(raw)
    base, reading = (split["base"], _reading(raw, split["params"])) if split else (raw, {})
    if match := _OVERSIZE.fullmatch(base):
        return Pointer(raw, "oversize", match["digest"], int(match["size"]), **reading)
    if (
        (match := _RESULTFS.fullmatch(base))
        and match["rel"] == blob_name(match["digest"], match["ext"])
        and _named_as_read(raw, match["ext"], reading)
    ):
        return Pointer(raw, "resultfs", match["digest"], int(match["size"]), location=match["rel"], **reading)
    if (
        (match := _OBJECT.fullmatch(base))
        and match["d0"] + match["d1"] == match["digest"][:4]
        and _named_as_read(raw, match["ext"], reading)
    ):
        return Pointer(
            raw,
            match["scheme"],
            match["digest"],
            int(match["size"]),
            location=match["key"],
            bucket=match["bucket"],
            prefix=match["prefix"].rstrip("/"),
            **reading,
        )
    raise InvalidPointerError(
        f"Not a valid result pointer: {_shorten(raw)}. Expected one of oversize://sha256/<hex>?bytes=<n>, "
        "resultfs://sha256/<hex>?rel=<aa>/<bb>/<hex>.<ext>&bytes=<n>, s3://<bucket>/<key>?bytes=<n> or "
        "gs://<bucket>/<key>?bytes=<n>, with <key> ending in <aa>/<bb>/<hex>.<ext>."
    )


def as_pointer(value: object) -> Pointer:
    """``value`` as a :class:`Pointer`: a ``Pointer`` as it is, a string parsed. Every public entry that takes a
    pointer goes through here, so any other input gets the same error.

    Raises:
      InvalidPointerError: ``value`` is neither a ``Pointer`` nor a string that follows the grammar.
    """
    if isinstance(value, Pointer):
        return value
    return parse_pointer(value)  # type: ignore[arg-type]


def _named_as_read(raw: str, extension: str, reading: dict[str, str]) -> bool:
    """Whether a blob's extension fits the pointer's parameters: ``json`` (every blob written before names said
    what they hold) fits any; another must be the one the parameters give.

    Raises:
      InvalidPointerError: it does not fit.
    """
    if extension == "json":
        return True
    expected = blob_extension(reading.get("codec", "json"), reading.get("compression"), reading.get("key_id"))
    if extension != expected:
        raise InvalidPointerError(
            f"Not a valid result pointer: {_shorten(raw)}: its blob is named .{extension} but its parameters say "
            f"the blob holds .{expected}."
        )
    return True


def _reading(raw: str, params: str) -> dict[str, str]:
    """The ``codec``, ``compression`` and ``key_id`` a pointer's trailing parameters name.

    Raises:
      InvalidPointerError: a parameter is unknown, repeated, out of order, or has a value this reader does not know.
    """
    found: dict[str, str] = {}
    last = -1
    for part in filter(None, params.split("&")):
        name, sep, value = part.partition("=")
        if not sep or name not in _PARAM_ORDER:
            raise InvalidPointerError(
                f"Not a valid result pointer: {_shorten(raw)}: unknown parameter {_shorten(name)} (known: codec, z, k)."
            )
        if _PARAM_ORDER.index(name) <= last:
            raise InvalidPointerError(
                f"Not a valid result pointer: {_shorten(raw)}: parameters must appear once, in the order codec, z, k."
            )
        last = _PARAM_ORDER.index(name)
        if name == "codec" and value not in POINTER_CODECS:
            raise InvalidPointerError(
                f"The result pointer {_shorten(raw)} names codec {_shorten(value)}, which this reader does not know "
                f"(known: json, {', '.join(POINTER_CODECS)}); read it with the dramatiq-ray version that wrote it."
            )
        if name == "z" and value not in POINTER_COMPRESSIONS:
            raise InvalidPointerError(
                f"The result pointer {_shorten(raw)} names compression {_shorten(value)}, which this reader does not "
                f"know (known: {', '.join(POINTER_COMPRESSIONS)})."
            )
        if name == "k" and not _KEY_ID.fullmatch(value):
            raise InvalidPointerError(f"The result pointer {_shorten(raw)} names an invalid key id {_shorten(value)}.")
        found[{"codec": "codec", "z": "compression", "k": "key_id"}[name]] = value
    return found


def _shorten(value: object) -> str:
    return shorten(repr(value))
