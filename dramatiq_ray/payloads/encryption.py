"""Encryption of result payloads with AES-256-GCM, with key ids for rotation.

A blob is ``nonce (12 random bytes) + ciphertext + tag (16 bytes)``; the id of the key that encrypted it is kept
next to it (in the pointer), so after a rotation older blobs still decrypt as long as their key stays configured.

Needs ``pip install "dramatiq-ray[crypto]"``; ``cryptography`` is imported only when a key is used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError, DecryptionError, MissingDependencyError

__all__ = ["KEY_BYTES", "NONCE_BYTES", "TAG_BYTES", "EncryptionKeys"]

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


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

    ``repr`` shows the ids only, never key bytes. Instances pickle *with their keys*: that is intended, so they can
    travel into the Ray tasks that write results; treat a pickled ``EncryptionKeys`` as secret.

    Raises:
      ConfigurationError: a key is not 32 bytes, an id is malformed, or ``current`` is not one of the ids.
    """

    current: str

    def __init__(self, keys: Mapping[str, bytes], *, current: str) -> None:
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
            problems.append(
                f"EncryptionKeys: current={current!r} must be one of the configured key ids "
                f"({', '.join(repr(key_id) for key_id in self._ids(keys))})."
            )
        if problems:
            raise ConfigurationError(" ".join(problems), problems)
        self._keys = checked
        self.current = current
        self._ciphers: dict[str, Any] = {}

    @staticmethod
    def _ids(keys: object) -> list[str]:
        return sorted(str(key_id) for key_id in keys) if isinstance(keys, Mapping) else []

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The configured key ids, sorted."""
        return tuple(sorted(self._keys))

    def __repr__(self) -> str:
        return f"EncryptionKeys(key_ids={list(self.key_ids)!r}, current={self.current!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"keys": self._keys, "current": self.current}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._keys = dict(state["keys"])
        self.current = state["current"]
        self._ciphers = {}

    def _cipher(self, key_id: str) -> Any:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            cipher = self._ciphers[key_id] = _aesgcm_class()(self._keys[key_id])
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
        if key_id not in self._keys:
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
