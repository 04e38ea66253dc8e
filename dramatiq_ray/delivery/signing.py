"""Signing webhook requests as the Standard Webhooks specification (v1.0) says, and verifying them.

Three headers carry the signature::

    webhook-id: 4b7c2c34-69a0-4e43-9f0c-1c9b0e7f6a52          the message id: also the idempotency key
    webhook-timestamp: 1767225600                              Unix time, whole seconds
    webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1,Fx0m...

Each ``v1,<base64>`` entry is the HMAC-SHA256 of ``<webhook-id>.<webhook-timestamp>.<body>`` under one secret; the
sender signs with every secret it has, so a receiver holding either the old or the new one accepts requests while
secrets rotate. Secrets are written ``whsec_<base64 of the key>``, as the specification's reference libraries
(``standardwebhooks`` on PyPI and npm, and the Go, Rust, Ruby, PHP, C#, Java and Elixir ones) read them. A receiver
recomputes the HMAC over the body exactly as received (before any JSON parsing), compares in constant time, and
refuses timestamps too far from its clock, which bounds replays.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets as _random
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigurationError, WebhookSignatureError

__all__ = [
    "DEFAULT_TOLERANCE",
    "ID_HEADER",
    "MIN_SECRET_BYTES",
    "SECRET_PREFIX",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "check_secrets",
    "new_secret",
    "secret_problem",
    "sign",
    "signed_headers",
    "verify",
]

#: The header carrying the message id: unique per message, the same on every attempt; deduplicate on it.
ID_HEADER = "webhook-id"
#: The header carrying the time of signing, in whole seconds since the Unix epoch.
TIMESTAMP_HEADER = "webhook-timestamp"
#: The header carrying space-separated ``v1,<base64 HMAC-SHA256>`` signatures, one per secret.
SIGNATURE_HEADER = "webhook-signature"
#: How far a request's timestamp may be from the receiver's clock, in seconds.
DEFAULT_TOLERANCE = 300
#: Secrets are written ``whsec_`` then the key in standard base64.
SECRET_PREFIX = "whsec_"
#: The shortest key accepted, in bytes: the specification asks for 24 to 64.
MIN_SECRET_BYTES = 24

_MAKE_ONE = "make one with dramatiq_ray.webhooks.new_secret()"


def new_secret(size: int = 32) -> str:
    """A new random secret in the ``whsec_`` form, holding a key of ``size`` bytes (24 to 64).

    From a shell: ``python -c "from dramatiq_ray.webhooks import new_secret; print(new_secret())"``.
    """
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SECRET_BYTES <= size <= 64:
        raise ConfigurationError(f"new_secret: size must be an integer from {MIN_SECRET_BYTES} to 64, got {size!r}.")
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(size)).decode("ascii")


def secret_problem(secret: object) -> str | None:
    """Why ``secret`` is not a usable ``whsec_`` secret (one sentence that never shows the secret), or ``None``.

    Constructors, :func:`verify` and the settings check secrets with this one function.
    """
    if not isinstance(secret, str):
        return (
            f"a secret must be a string in the {SECRET_PREFIX}<base64> form, got {type(secret).__name__}; {_MAKE_ONE}"
        )
    if not secret.startswith(SECRET_PREFIX):
        # A raw secret would be read as base64 by the reference verifiers: theirs and ours would disagree.
        return (
            f"a secret must be written {SECRET_PREFIX}<base64 of the key>, as Standard Webhooks verifiers read it; "
            f"got one without the {SECRET_PREFIX} prefix ({len(secret)} characters); {_MAKE_ONE}"
        )
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return (
            f"the part after {SECRET_PREFIX} must be standard base64 with its '=' padding; got {len(encoded)} "
            f"characters that are not; {_MAKE_ONE}"
        )
    if len(key) < MIN_SECRET_BYTES:
        return (
            f"a secret's key must be at least {MIN_SECRET_BYTES} bytes (Standard Webhooks asks for 24 to 64); got "
            f"{len(key)}; {_MAKE_ONE}"
        )
    return None


def check_secrets(secrets: Iterable[str], where: str) -> tuple[bytes, ...]:
    """The keys of ``secrets`` (each ``whsec_<base64>``), in the order given.

    Raises:
      ConfigurationError: ``secrets`` is a single string, empty, or holds a secret that is not in the ``whsec_``
        form, is not base64, or is shorter than 24 bytes.
    """
    if isinstance(secrets, str | bytes) or not isinstance(secrets, Iterable):
        raise ConfigurationError(
            f"{where}: secrets must be a list of strings (one per secret, several while rotating), got "
            f"{type(secrets).__name__}."
        )
    keys: list[bytes] = []
    for position, secret in enumerate(secrets):
        problem = secret_problem(secret)
        if problem is not None:
            raise ConfigurationError(f"{where}: secret number {position + 1}: {problem}.")
        keys.append(base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True))
    if not keys:
        raise ConfigurationError(
            f"{where}: give at least one secret (e.g. secrets=[os.environ['WEBHOOK_SECRET']]); {_MAKE_ONE}."
        )
    return tuple(keys)


def _signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> bytes:
    return hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def signed_headers(body: bytes, keys: Iterable[bytes], message_id: str, timestamp: int) -> dict[str, str]:
    """The three Standard Webhooks headers of ``body``, signed with each of ``keys`` (already decoded)."""
    signatures = " ".join(
        "v1," + base64.b64encode(_signature(key, message_id, timestamp, body)).decode("ascii") for key in keys
    )
    return {ID_HEADER: message_id, TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signatures}


def sign(body: bytes | str, *, message_id: str, secrets: Iterable[str], timestamp: int | None = None) -> dict[str, str]:
    """The ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers of a request with ``body``.

    What :class:`~dramatiq_ray.Webhooks` sends; handy to test a receiver::

        headers = sign(body, message_id="m-1", secrets=[SECRET])
        assert verify(body, headers, secrets=[SECRET]) == json.loads(body)

    Parameters:
      body: The request body (a ``str`` is UTF-8 encoded).
      message_id: The ``webhook-id``.
      secrets: ``whsec_`` secrets; each adds one ``v1,`` signature.
      timestamp: The Unix time in seconds (default: the clock).

    Raises:
      ConfigurationError: a secret is invalid (see :func:`check_secrets`).
    """
    keys = check_secrets(secrets, "sign")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    return signed_headers(raw, keys, message_id, int(time.time()) if timestamp is None else timestamp)


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secrets: Iterable[str],
    tolerance: float | None = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a webhook request's Standard Webhooks signature and return its parsed JSON payload.

    Example (any web framework)::

        from dramatiq_ray import WebhookSignatureError
        from dramatiq_ray.webhooks import verify

        try:
            event = verify(request.body, request.headers, secrets=[SECRET])
        except WebhookSignatureError:
            return Response(status=400)
        record(event["message_id"], event["status"])   # idempotent on event["message_id"] (= webhook-id)

    Parameters:
      body: The raw request body, exactly as received (a ``str`` is UTF-8 encoded).
      headers: The request headers (any mapping; names are matched case-insensitively).
      secrets: The ``whsec_`` secrets this receiver accepts (several while rotating).
      tolerance: How far ``webhook-timestamp`` may be from ``now``, either way, in seconds (default 300);
        ``None`` does not check the time (replays are then not bounded).
      now: The current Unix time in seconds (default: the clock).

    Returns:
      The payload: ``message_id``, ``actor``, ``queue``, ``status``, ``attempts``, the times, and ``result`` or
      ``error`` (see the delivery docs).

    Raises:
      WebhookSignatureError: a header is missing or malformed, the timestamp is outside the tolerance, no ``v1``
        signature matches a secret, or the signed body is not a JSON object.
      ConfigurationError: ``secrets`` is empty, not a list, or holds a secret not in the ``whsec_`` form.
    """
    keys = check_secrets(secrets, "verify")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    found = {name: _header(headers, name) or "" for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)}
    missing = [name for name, value in found.items() if not value]
    if missing:
        raise WebhookSignatureError(
            f"The request has no {', '.join(missing)} header: it is not a Standard Webhooks request."
        )
    message_id, stamp, signatures = found[ID_HEADER], found[TIMESTAMP_HEADER], found[SIGNATURE_HEADER]
    if not stamp.isascii() or not stamp.isdigit():
        raise WebhookSignatureError(f"The {TIMESTAMP_HEADER} header is not whole Unix seconds.")
    timestamp = int(stamp)
    if tolerance is not None:
        current = time.time() if now is None else now
        if abs(current - timestamp) > tolerance:
            raise WebhookSignatureError(
                f"The request was signed at {timestamp}, {abs(current - timestamp):.0f} s from this clock (tolerance "
                f"{tolerance:g} s): a replay, or a clock out of sync; check NTP on both hosts."
            )
    given = _v1_signatures(signatures)
    expected = [_signature(key, message_id, timestamp, raw) for key in keys]
    if not any(hmac.compare_digest(one, wanted) for one in given for wanted in expected):
        raise WebhookSignatureError(
            "No v1 signature of the request matches a configured secret: the body or a header was altered, or the "
            "sender signs with a secret this receiver does not have (add it while rotating)."
        )
    try:
        payload = json.loads(raw)
    except ValueError as error:
        raise WebhookSignatureError(f"The signed body is not JSON: {error}.") from error
    if not isinstance(payload, dict):
        raise WebhookSignatureError("The signed body is not a JSON object.")
    return payload


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return str(value)
    for key, found in headers.items():
        if str(key).lower() == name:
            return str(found)
    return None


def _v1_signatures(header: str) -> list[bytes]:
    """The decoded ``v1`` signatures of a ``webhook-signature`` value; other versions are skipped, as the
    specification says, so a sender may add schemes receivers do not know yet."""
    found: list[bytes] = []
    for entry in header.split(" "):
        version, sep, encoded = entry.partition(",")
        if version != "v1" or not sep:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not found:
        raise WebhookSignatureError(
            f"The {SIGNATURE_HEADER} header holds no v1 signature: expected 'v1,<base64>[ v1,<base64>...]'."
        )
    return found
