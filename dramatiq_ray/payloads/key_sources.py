"""Where encryption keys come from: their text form, an environment variable, a file, or a provider function
registered by name. Only references to these travel between processes; each process reads its keys itself."""

from __future__ import annotations

import base64
import binascii
import importlib
import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigurationError

__all__ = ["DEFAULT_KEYS_VARIABLE", "KEY_BYTES", "call_provider", "check_keys", "parse_keys", "read_source"]

KEY_BYTES = 32
#: The environment variable ``EncryptionKeys.from_env`` reads by default.
DEFAULT_KEYS_VARIABLE = "DRAMATIQ_RAY_KEYS"

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ENTRY_SEPARATORS = re.compile(r"[\s,]+")
PROVIDER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*(:[A-Za-z_][A-Za-z0-9_.]*)?")

#: Providers registered in this process by name (see :meth:`EncryptionKeys.register_provider`).
_providers: dict[str, Callable[[], Any]] = {}
_providers_lock = threading.Lock()

ON_A_CLUSTER = (
    "Give the keys to every process that reads or writes results from where it runs: "
    "EncryptionKeys.from_env('DRAMATIQ_RAY_KEYS') (set the variable on the Ray nodes, or in the runtime_env's "
    "env_vars), EncryptionKeys.from_file(path) (a secret file mounted on every node), or "
    "EncryptionKeys.from_provider(name) with a function registered under that name, or named 'module:function', "
    "importable where the bodies run."
)


def check_keys(keys: object, current: object) -> dict[str, bytes]:
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


def parse_keys(text: str, where: str) -> tuple[dict[str, bytes], str]:
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
        return check_keys(keys, current), current
    except ConfigurationError as error:
        raise ConfigurationError(f"{where}: {error.message}", error.problems) from None


def read_source(kind: str, reference: str) -> tuple[dict[str, bytes], str]:
    """The keys and the current key id from an ``"env"`` variable or a ``"file"``, read in this process.

    Raises:
      ConfigurationError: the variable is not set, the file cannot be read, or the text is malformed.
    """
    if kind == "env":
        text = os.environ.get(reference)
        if text is None:
            raise ConfigurationError(
                f"EncryptionKeys.from_env({reference!r}): the environment variable {reference} is not "
                f"set in this process (pid {os.getpid()}). Set it wherever results are written or read: "
                "on every Ray node, or in the runtime_env's env_vars."
            )
        return parse_keys(text, f"The environment variable {reference}")
    try:
        with open(reference, encoding="ascii") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(
            f"EncryptionKeys.from_file({reference!r}) cannot read its keys in this process (pid "
            f"{os.getpid()}): {type(error).__name__}. Mount the key file at that path on every node "
            "that writes or reads results."
        ) from None
    return parse_keys(text, f"The key file {reference}")


def register_provider(name: str, provider: Callable[[], Any]) -> None:
    """Register ``provider`` under ``name`` in this process (see ``EncryptionKeys.register_provider``).

    Raises:
      ConfigurationError: ``name`` is not a dotted name, or ``provider`` is not callable.
    """
    if not isinstance(name, str) or not PROVIDER_NAME.fullmatch(name) or ":" in name:
        raise ConfigurationError(f"EncryptionKeys.register_provider(): invalid name {name!r}.")
    if not callable(provider):
        raise ConfigurationError(f"EncryptionKeys.register_provider({name!r}): the provider must be callable.")
    with _providers_lock:
        _providers[name] = provider


def call_provider(name: str) -> Any:
    """What the provider ``name`` returns (checked by the caller): a registered one, else ``module:function``
    imported.

    Raises:
      ConfigurationError: there is no such provider here.
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
    return provider()
