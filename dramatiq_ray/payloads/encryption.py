"""Encryption of result payloads with AES-256-GCM, with key ids for rotation.

A blob is ``nonce (12 random bytes) + ciphertext + tag (16 bytes)``; the id of the key that encrypted it is kept
next to it (in the pointer), so after a rotation older blobs still decrypt as long as their key stays configured.

Key material never leaves a process: :class:`EncryptionKeys` pickles (into the Ray tasks that write and read
results) as a reference to where its keys come from, an environment variable, a file or a named provider, and
each process reads them there. Keys given as bytes stay in the process that was given them.

Needs ``pip install "dramatiq-ray[crypto]"``; ``cryptography`` is imported only when a key is used.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigurationError, DecryptionError, MissingDependencyError

__all__ = ["DEFAULT_KEYS_VARIABLE", "KEY_BYTES", "NONCE_BYTES", "TAG_BYTES", "EncryptionKeys"]

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
#: The environment variable :meth:`EncryptionKeys.from_env` reads by default.
DEFAULT_KEYS_VARIABLE = "DRAMATIQ_RAY_KEYS"

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ENTRY_SEPARATORS = re.compile(r"[\s,]+")
_PROVIDER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*(:[A-Za-z_][A-Za-z0-9_.]*)?")

#: Providers registered in this process by name (see :meth:`EncryptionKeys.register_provider`).
_providers: dict[str, Callable[[], EncryptionKeys]] = {}
_providers_lock = threading.Lock()

_ON_A_CLUSTER = (
    "Give the keys to every process that reads or writes results from where it runs: "
    "EncryptionKeys.from_env('DRAMATIQ_RAY_KEYS') (set the variable on the Ray nodes, or in the runtime_env's "
    "env_vars), EncryptionKeys.from_file(path) (a secret file mounted on every node), or "
    "EncryptionKeys.from_provider(name) with a function registered under that name, or named 'module:function', "
    "importable where the bodies run."
)


def _aesgcm_class() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise MissingDependencyError("Encrypting results", "crypto", "cryptography") from None
    return AESGCM


def _check_keys(keys: object, current: object) -> dict[str, bytes]:
    """The keys as ``{id: bytes}`` when they and ``current`` are valid.

    Raises:
      ConfigurationError: listing every problem (ids and sizes, never key bytes).
    """
    problems: list[str] = []
    checked: dict[str, bytes] = {}
    if not isinstance(keys, Mapping) or not keys:
        problems.append("EncryptionKeys needs a non-empty mapping of key id to 32-byte key.")
    else:
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
                problems.append(
                    f"EncryptionKeys: key id {key_id!r} must be 1 to 64 characters among letters, digits, "
                    "'.', '_' and '-'."
                )
                continue
            if not isinstance(key, bytes | bytearray | memoryview):
                problems.append(f"EncryptionKeys: key {key_id!r} must be bytes, not {type(key).__name__}.")
                continue
            material = bytes(key)
            if len(material) != KEY_BYTES:
                problems.append(
                    f"EncryptionKeys: key {key_id!r} must be {KEY_BYTES} bytes (AES-256), not {len(material)}."
                )
                continue
            checked[key_id] = material
    if not isinstance(current, str) or current not in (keys if isinstance(keys, Mapping) else {}):
        ids = sorted(str(key_id) for key_id in keys) if isinstance(keys, Mapping) else []
        problems.append(
            f"EncryptionKeys: current={current!r} must be one of the configured key ids "
            f"({', '.join(repr(key_id) for key_id in ids)})."
        )
    if problems:
        raise ConfigurationError(" ".join(problems), problems)
    return checked


def _parse_keys(text: str, where: str) -> tuple[dict[str, bytes], str]:
    """Keys from their text form: entries ``<key id>:<base64 of the 32-byte key>`` separated by commas or
    whitespace (newlines), the first one current.

    Raises:
      ConfigurationError: the text is empty or an entry is malformed; the message names the entry by its position
        and key id, never its key.
    """
    entries = [entry for entry in _ENTRY_SEPARATORS.split(text.strip()) if entry]
    if not entries:
        raise ConfigurationError(
            f"{where} holds no key: write entries '<key id>:<base64 of a 32-byte key>' separated by commas or "
            "newlines, the current key first."
        )
    keys: dict[str, Any] = {}
    for position, entry in enumerate(entries, 1):
        key_id, sep, encoded = entry.partition(":")
        try:
            if not sep:
                raise ValueError
            material: Any = base64.b64decode(encoded.replace("-", "+").replace("_", "/"), validate=True)
        except (ValueError, binascii.Error):
            shown = repr(key_id) if sep and _KEY_ID.fullmatch(key_id) else "(unnamed)"
            raise ConfigurationError(
                f"{where}: entry {position} {shown} is not '<key id>:<base64 of a 32-byte key>'."
            ) from None
        if key_id in keys:
            raise ConfigurationError(f"{where}: key id {key_id!r} appears twice.")
        keys[key_id] = material
    current = entries[0].partition(":")[0]
    try:
        return _check_keys(keys, current), current
    except ConfigurationError as error:
        raise ConfigurationError(f"{where}: {error.message}", error.problems) from None


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
        self._keys: dict[str, bytes] | None = _check_keys(keys, current)
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
        keys, current = _parse_keys(text, "EncryptionKeys.parse()")
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
        if not isinstance(name, str) or not _PROVIDER_NAME.fullmatch(name):
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
        if not isinstance(name, str) or not _PROVIDER_NAME.fullmatch(name) or ":" in name:
            raise ConfigurationError(f"EncryptionKeys.register_provider(): invalid name {name!r}.")
        if not callable(provider):
            raise ConfigurationError(f"EncryptionKeys.register_provider({name!r}): the provider must be callable.")
        with _providers_lock:
            _providers[name] = provider

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
                if kind == "env":
                    text = os.environ.get(reference)
                    if text is None:
                        raise ConfigurationError(
                            f"EncryptionKeys.from_env({reference!r}): the environment variable {reference} is not "
                            f"set in this process (pid {os.getpid()}). Set it wherever results are written or read: "
                            "on every Ray node, or in the runtime_env's env_vars."
                        )
                    keys, current = _parse_keys(text, f"The environment variable {reference}")
                elif kind == "file":
                    try:
                        with open(reference, encoding="ascii") as file:
                            text = file.read()
                    except (OSError, UnicodeDecodeError) as error:
                        raise ConfigurationError(
                            f"EncryptionKeys.from_file({reference!r}) cannot read its keys in this process (pid "
                            f"{os.getpid()}): {type(error).__name__}. Mount the key file at that path on every node "
                            "that writes or reads results."
                        ) from None
                    keys, current = _parse_keys(text, f"The key file {reference}")
                else:
                    loaded = _call_provider(reference)
                    keys, current = loaded._load(), loaded.current
                self._current = current
                self._keys = keys
        return self._keys

    # --- pickling: a reference, never key material -----------------------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        if self._source is None:
            raise ConfigurationError(
                f"{self!r} was built from key bytes, which never leave this process, so it cannot be sent to "
                f"another one (such as a Ray task that writes or reads encrypted results). {_ON_A_CLUSTER}"
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


def _call_provider(name: str) -> EncryptionKeys:
    """The keys the provider ``name`` returns: a registered one, else ``module:function`` imported.

    Raises:
      ConfigurationError: there is no such provider here, or it returned something else than an
        ``EncryptionKeys``.
    """
    with _providers_lock:
        provider = _providers.get(name)
    if provider is None and ":" in name:
        module, _, attribute = name.partition(":")
        try:
            found: Any = importlib.import_module(module)
            for part in attribute.split("."):
                found = getattr(found, part)
            provider = found
        except (ImportError, AttributeError) as error:
            raise ConfigurationError(
                f"EncryptionKeys.from_provider({name!r}): cannot import it in this process (pid {os.getpid()}): "
                f"{type(error).__name__}: {error}. Make the module importable where results are written or read."
            ) from None
    if provider is None:
        raise ConfigurationError(
            f"EncryptionKeys.from_provider({name!r}): no provider is registered under that name in this process "
            f"(pid {os.getpid()}). Call EncryptionKeys.register_provider({name!r}, ...) in a module every such "
            "process imports (the actors' module), or name the provider 'module:function'."
        )
    loaded = provider()
    if not isinstance(loaded, EncryptionKeys) or loaded._source is not None:
        raise ConfigurationError(
            f"EncryptionKeys.from_provider({name!r}): the provider must return EncryptionKeys built from key bytes "
            f"(EncryptionKeys({{...}}, current=...) or EncryptionKeys.parse(text)), not {type(loaded).__name__}."
        )
    return loaded
