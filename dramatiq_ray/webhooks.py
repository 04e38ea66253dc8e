"""Webhooks, for senders and receivers: the :class:`Webhooks` middleware, and :func:`verify` for the receiving end.

Requests are signed as the Standard Webhooks specification (v1.0) says, so any of its libraries verifies them
(``standardwebhooks`` on PyPI and npm, and others). With this package, a receiver needs only this module and the
shared ``whsec_`` secret::

    from dramatiq_ray.webhooks import verify

    event = verify(request.body, request.headers, secrets=[SECRET])   # raises WebhookSignatureError

See the delivery docs for the payload, the headers and verification in other languages.
"""

from __future__ import annotations

from .delivery.signing import (
    DEFAULT_TOLERANCE,
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    new_secret,
    sign,
    verify,
)
from .delivery.webhooks import (
    ATTEMPT_HEADER,
    DELIVERY_ACTOR,
    DELIVERY_QUEUE,
    PROGRESS_OPTION,
    WEBHOOK_OPTION,
    Webhooks,
)
from .errors import WebhookSignatureError

__all__ = [
    "ATTEMPT_HEADER",
    "DEFAULT_TOLERANCE",
    "DELIVERY_ACTOR",
    "DELIVERY_QUEUE",
    "ID_HEADER",
    "PROGRESS_OPTION",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WEBHOOK_OPTION",
    "WebhookSignatureError",
    "Webhooks",
    "new_secret",
    "sign",
    "verify",
]
