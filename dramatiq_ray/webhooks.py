"""Webhooks, for senders and receivers: the :class:`Webhooks` middleware, and :func:`verify` for the receiving end.

A receiver needs only this module (and the shared secret)::

    from dramatiq_ray.webhooks import verify

    event = verify(request.body, request.headers, secrets=[SECRET])   # raises WebhookSignatureError

See the delivery docs for the payload, the headers and verification in other languages.
"""

from __future__ import annotations

from .delivery.signing import DEFAULT_TOLERANCE, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign, verify
from .delivery.webhooks import ATTEMPT_HEADER, DELIVERY_ACTOR, DELIVERY_QUEUE, WEBHOOK_OPTION, Webhooks
from .errors import WebhookSignatureError

__all__ = [
    "ATTEMPT_HEADER",
    "DEFAULT_TOLERANCE",
    "DELIVERY_ACTOR",
    "DELIVERY_QUEUE",
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "WEBHOOK_OPTION",
    "WebhookSignatureError",
    "Webhooks",
    "sign",
    "verify",
]
