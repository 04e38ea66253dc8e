"""Encryption of result payloads with AES-256-GCM, with key ids for rotation.

A blob is ``nonce (12 random bytes) + ciphertext + tag (16 bytes)``; the id of the key that encrypted it is kept
next to it (in the pointer), so after a rotation older blobs still decrypt as long as their key stays configured.

Key material never leaves a process: :class:`EncryptionKeys` pickles (into the Ray tasks that write and read
results) as a reference to where its keys come from, an environment variable, a file or a named provider, and
each process reads them there. Keys given as bytes stay in the process that was given them.

Needs ``pip install "dramatiq-ray[crypto]"``; ``cryptography`` is imported only when a key is used.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigurationError, DecryptionError, MissingDependencyError
from .key_sources import (
    DEFAULT_KEYS_VARIABLE,
    KEY_BYTES,
    ON_A_CLUSTER,
    PROVIDER_NAME,
    call_provider,
    check_keys,
    parse_keys,
    read_source,
    register_provider,
)

__all__ = ["DEFAULT_KEYS_VARIABLE", "KEY_BYTES", "NONCE_BYTES", "TAG_BYTES", "EncryptionKeys"]

NONCE_BYTES = 12
TAG_BYTES = 16


def _aesgcm_class() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise MissingDependencyError("Encrypting results", "crypto", "cryptography") from None
    return AESGCM


class EncryptionKeys:
    """AES-256-GCM keys by id, with the id used for new writes (``current``).

    Keys are 32 bytes each; ids are 1 to 64 characters among letters, digits, ``.``, ``_`` and ``-``. To rotate,
    add the new key, make it ``current``, and keep the old ones for as long as blobs encrypted with them must be
    readable.

    Where the keys come from decides where they can be used. Built from bytes (``EncryptionKeys({...},
    current=...)``) they stay in this process: they refuse to pickle, so they serve actor bodies that run in the
    worker and readers, not bodies on Ray. Built with :meth:`from_env`, :meth:`from_file` or
    :meth:`from_provider`, they pickle as that reference only (never key bytes) and every process that unpickles
    them (a Ray task) reads its keys there, at first use::

        keys = EncryptionKeys.from_env("DRAMATIQ_RAY_KEYS")   # "2026-12:<base64>,2026-11:<base64>"
        broker.add_middleware(Results(backend=backend, store=store, encryption=keys))

    ``repr`` shows the ids only, never key bytes.

    Raises:
      ConfigurationError: a key is not 32 bytes, an id is malformed, or ``current`` is not one of the ids.
    """

    def __init__(self, keys: Mapping[str, bytes], *, current: str) -> None:
        self._keys: dict[str, bytes] | None = check_keys(keys, current)
        self._current = current
        #: Where the keys come from: ``None`` (bytes given here), or ``(kind, reference)``.
        self._source: tuple[str, str] | None = None
        self._ciphers: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- where keys come from ------------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> EncryptionKeys:
        """Keys from their text form: ``<key id>:<base64 key>`` entries separated by commas or newlines, the
        current (newest) one first, e.g. ``"2026-12:q83v...=,2026-11:3q2+...="``. Such keys stay in this process
        (they do not pickle); see :meth:`from_env` to use the same text on a cluster.

        Raises:
          ConfigurationError: the text holds no key, or an entry is malformed (never shown).
        """
        keys, current = parse_keys(text, "EncryptionKeys.parse()")
        return cls(keys, current=current)

    @classmethod
    def from_env(cls, name: str = DEFAULT_KEYS_VARIABLE) -> EncryptionKeys:
        """Keys read from the environment variable ``name`` (in the text form of :meth:`parse`), here and in
        every process they are pickled to. On Ray, set the variable on the nodes, or in the ``runtime_env``'s
        ``env_vars`` (which Ray keeps in the cluster's metadata: prefer the nodes' environment or
        :meth:`from_file` in production).

        Raises:
          ConfigurationError: the variable is not set or is malformed in this process (its value is never shown).
        """
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"EncryptionKeys.from_env() needs a variable name, got {name!r}.")
        return cls._from_source("env", name, load=True)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> EncryptionKeys:
        """Keys read from the file at ``path`` (an absolute path, in the text form of :meth:`parse`), here and
        in every process they are pickled to: mount the same secret file on every node.

        Raises:
          ConfigurationError: the path is relative, or the file cannot be read or is malformed in this process.
        """
        location = os.fspath(path)
        if not os.path.isabs(location):
            raise ConfigurationError(
                f"EncryptionKeys.from_file() needs an absolute path, got {location!r}: Ray workers run in other "
                "working directories."
            )
        return cls._from_source("file", location, load=True)

    @classmethod
    def from_provider(cls, name: str) -> EncryptionKeys:
        """Keys returned by a provider function (no arguments, returning an ``EncryptionKeys``), found by ``name``
        here and in every process they are pickled to: either registered under that name with
        :meth:`register_provider` (in a module those processes import, such as the actors' module), or named
        ``"package.module:function"``, imported where it is needed.

        Raises:
          ConfigurationError: no such provider in this process, or it did not return an ``EncryptionKeys``.
        """
        if not isinstance(name, str) or not PROVIDER_NAME.fullmatch(name):
            raise ConfigurationError(
                f"EncryptionKeys.from_provider() needs a registered name or 'module:function', got {name!r}."
            )
        return cls._from_source("provider", name, load=True)

    @staticmethod
    def register_provider(name: str, provider: Callable[[], EncryptionKeys]) -> None:
        """Register ``provider`` (called with no arguments, returning an ``EncryptionKeys``) under ``name`` in
        this process, for :meth:`from_provider`. Register it in every process that uses the keys (a module Ray
        workers import), or name it ``"module:function"`` instead.

        Raises:
          ConfigurationError: ``name`` is not a dotted name, or ``provider`` is not callable.
        """
        register_provider(name, provider)

    @classmethod
    def _from_source(cls, kind: str, reference: str, load: bool = False) -> EncryptionKeys:
        keys = cls.__new__(cls)
        keys._keys = None
        keys._current = ""
        keys._source = (kind, reference)
        keys._ciphers = {}
        keys._lock = threading.Lock()
        if load:
            keys._load()
        return keys

    def _load(self) -> dict[str, bytes]:
        """The keys, read from their source the first time in this process."""
        if self._keys is not None:
            return self._keys
        with self._lock:
            if self._keys is None:
                assert self._source is not None
                kind, reference = self._source
                if kind == "provider":
                    loaded = call_provider(reference)
                    if not isinstance(loaded, EncryptionKeys) or loaded._source is not None:
                        raise ConfigurationError(
                            f"EncryptionKeys.from_provider({reference!r}): the provider must return EncryptionKeys "
                            "built from key bytes (EncryptionKeys({...}, current=...) or EncryptionKeys.parse(text)), "
                            f"not {type(loaded).__name__}."
                        )
                    keys, current = loaded._load(), loaded.current
                else:
                    keys, current = read_source(kind, reference)
                self._current = current
                self._keys = keys
        return self._keys

    # --- pickling: a reference, never key material -----------------------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        if self._source is None:
            raise ConfigurationError(
                f"{self!r} was built from key bytes, which never leave this process, so it cannot be sent to "
                f"another one (such as a Ray task that writes or reads encrypted results). {ON_A_CLUSTER}"
            )
        return (EncryptionKeys._from_source, self._source)

    # --- the keys --------------------------------------------------------------------------------------------

    @property
    def current(self) -> str:
        """The id of the key new blobs are encrypted with."""
        self._load()
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The configured key ids, sorted."""
        return tuple(sorted(self._load()))

    def __repr__(self) -> str:
        if self._source is not None:
            kind, reference = self._source
            method = {"env": "from_env", "file": "from_file", "provider": "from_provider"}[kind]
            return f"EncryptionKeys.{method}({reference!r})"
        return f"EncryptionKeys(key_ids={list(self.key_ids)!r}, current={self.current!r})"

    def _cipher(self, key_id: str) -> Any:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            cipher = self._ciphers[key_id] = _aesgcm_class()(self._load()[key_id])
        return cipher

    def encrypt(self, data: bytes | memoryview, *, associated_data: bytes = b"") -> tuple[str, bytes]:
        """Encrypt ``data`` with the current key; return (key id, nonce + ciphertext + tag).

        ``associated_data`` is authenticated but not encrypted: the same bytes must be given to ``decrypt``.
        """
        key_id = self.current
        nonce = os.urandom(NONCE_BYTES)
        sealed: bytes = self._cipher(key_id).encrypt(nonce, data, associated_data or None)
        return key_id, nonce + sealed

    def decrypt(self, key_id: str, blob: bytes | memoryview, *, associated_data: bytes = b"") -> bytes:
        """Decrypt a blob written by ``encrypt`` with the key ``key_id``.

        Raises:
          DecryptionError: ``key_id`` is not configured, or authentication failed (the blob was altered,
            truncated, or encrypted with another key, or ``associated_data`` differs). Nothing is returned then.
        """
        if key_id not in self._load():
            raise DecryptionError(
                f"The result was encrypted with key id {key_id!r}, which is not configured "
                f"(configured ids: {', '.join(repr(known) for known in self.key_ids)}). "
                "Add that key to EncryptionKeys to read it.",
                key_id=key_id,
            )
        view = memoryview(blob).cast("B") if isinstance(blob, memoryview) else memoryview(blob)
        if view.nbytes < NONCE_BYTES + TAG_BYTES:
            raise DecryptionError(
                f"Decryption with key id {key_id!r} failed: the blob is {view.nbytes} bytes, shorter than a nonce "
                "and a tag (truncated).",
                key_id=key_id,
            )
        cipher = self._cipher(key_id)
        from cryptography.exceptions import InvalidTag

        try:
            plain: bytes = cipher.decrypt(view[:NONCE_BYTES], view[NONCE_BYTES:], associated_data or None)
        except InvalidTag:
            raise DecryptionError(
                f"Decryption with key id {key_id!r} failed: authentication failed: altered, truncated, or "
                "encrypted with another key.",
                key_id=key_id,
            ) from None
        return plain
