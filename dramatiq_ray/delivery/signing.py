"""Signing webhook bodies, and verifying them on the receiving side.

The signature is an HMAC-SHA256, keyed by a shared secret, over ``<timestamp>.<body>``: the Unix time in whole
seconds, a dot, and the raw request body. One header carries the timestamp and one signature per secret::

    Dramatiq-Ray-Signature: t=1767225600,v1=5257a8...,v1=9f86d0...

so a receiver configured with either the old or the new secret accepts requests while secrets rotate. A receiver
recomputes the HMAC over the body exactly as received (before any JSON parsing), compares it in constant time,
and refuses timestamps too far from its clock, which bounds replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigurationError, WebhookSignatureError

__all__ = [
    "DEFAULT_TOLERANCE",
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "check_secrets",
    "sign",
    "signature_header",
    "verify",
]

#: The header carrying ``t=<timestamp>`` and one ``v1=<hex HMAC-SHA256>`` per secret.
SIGNATURE_HEADER = "Dramatiq-Ray-Signature"
#: The header carrying the idempotency key: the id of the message the webhook reports on.
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: How far a request's timestamp may be from the receiver's clock, in seconds.
DEFAULT_TOLERANCE = 300


def check_secrets(secrets: Iterable[str | bytes], where: str) -> tuple[bytes, ...]:
    """The secrets as bytes (strings are UTF-8 encoded), in the order given.

    Raises:
      ConfigurationError: ``secrets`` is a single string, empty, or holds an empty or non-string secret.
    """
    if isinstance(secrets, str | bytes) or not isinstance(secrets, Iterable):
        raise ConfigurationError(
            f"{where}: secrets must be a list of strings (one per secret, several while rotating), got "
            f"{type(secrets).__name__}."
        )
    found: list[bytes] = []
    for secret in secrets:
        if not isinstance(secret, str | bytes) or not secret:
            raise ConfigurationError(f"{where}: every secret must be a non-empty string, got {type(secret).__name__}.")
        found.append(secret.encode() if isinstance(secret, str) else bytes(secret))
    if not found:
        raise ConfigurationError(f"{where}: give at least one secret (e.g. secrets=[os.environ['WEBHOOK_SECRET']]).")
    return tuple(found)


def sign(body: bytes, secret: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``."""
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(body: bytes, secrets: Iterable[bytes], timestamp: int) -> str:
    """The value of the signature header: ``t=<timestamp>,v1=<hmac>`` with one ``v1`` per secret."""
    return ",".join([f"t={timestamp}", *(f"v1={sign(body, secret, timestamp)}" for secret in secrets)])


def verify(
    body: bytes | str,
    headers: Mapping[str, str] | str,
    secrets: Iterable[str | bytes],
    tolerance: float | None = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a webhook request's signature and return its parsed JSON payload.

    Example (any web framework)::

        from dramatiq_ray.webhooks import verify
        from dramatiq_ray import WebhookSignatureError

        try:
            event = verify(request.body, request.headers, secrets=[SECRET])
        except WebhookSignatureError:
            return Response(status=400)
        record(event["message_id"], event["status"])   # idempotent on event["message_id"]

    Parameters:
      body: The raw request body, exactly as received (a ``str`` is UTF-8 encoded).
      headers: The request headers (any mapping; names are matched case-insensitively), or the value of the
        ``Dramatiq-Ray-Signature`` header itself.
      secrets: The secrets this receiver accepts (several while rotating).
      tolerance: How far the signed timestamp may be from ``now``, in seconds (default 300); ``None`` does not
        check the time (replays are then not bounded).
      now: The current Unix time in seconds (default: the clock).

    Returns:
      The payload: ``message_id``, ``actor``, ``queue``, ``status``, ``attempts``, the times, and ``result`` or
      ``error`` (see the delivery docs).

    Raises:
      WebhookSignatureError: the header is missing or malformed, the timestamp is outside the tolerance, no
        signature matches a secret, or the signed body is not a JSON object.
      ConfigurationError: ``secrets`` is empty or not a list of strings.
    """
    keys = check_secrets(secrets, "verify")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    header = headers if isinstance(headers, str) else _header(headers, SIGNATURE_HEADER)
    if header is None:
        raise WebhookSignatureError(f"The request has no {SIGNATURE_HEADER} header: it was not sent by dramatiq-ray.")
    timestamp, signatures = _parse(header)
    if tolerance is not None:
        current = time.time() if now is None else now
        if abs(current - timestamp) > tolerance:
            raise WebhookSignatureError(
                f"The request was signed at {timestamp}, {abs(current - timestamp):.0f} s from this clock (tolerance "
                f"{tolerance:g} s): a replay, or a clock out of sync; check NTP on both hosts."
            )
    expected = [sign(raw, key, timestamp) for key in keys]
    if not any(hmac.compare_digest(given, wanted) for given in signatures for wanted in expected):
        raise WebhookSignatureError(
            "No signature of the request matches a configured secret: the body was altered, or the sender signs "
            "with a secret this receiver does not have (add it while rotating)."
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
    wanted = name.lower()
    for key, found in headers.items():
        if str(key).lower() == wanted:
            return str(found)
    return None


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise WebhookSignatureError(
            f"The {SIGNATURE_HEADER} header is malformed: expected 't=<unix seconds>,v1=<hex>[,v1=<hex>...]'."
        )
    return timestamp, signatures
