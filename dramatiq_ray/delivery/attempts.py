"""The POSTs of one message's webhook: take the lease, sign, POST, then settle it, stop, or schedule the next
attempt as a delayed message (backoff with jitter) until attempts or age run out.

::

    settled? -> take the lease -> sign -> POST
      2xx: settled (delivered)   410: settled (gone)   redirect elsewhere: given up
      anything else: the next attempt is a delayed message, until max_attempts or max_age (ERROR, counted)
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import dramatiq

from .. import metrics
from .._version import __version__
from .ledger import Ledger
from .payload import payload_body
from .signing import signed_headers

if TYPE_CHECKING:
    from .webhooks import Webhooks

__all__ = ["ATTEMPT_HEADER", "Attempts", "now_ms", "shown"]

# The logger users set for webhooks (the middleware's module), whichever module logs a delivery.
logger = logging.getLogger("dramatiq_ray.delivery.webhooks")

#: The header carrying the attempt number (1 for the first POST).
ATTEMPT_HEADER = "Dramatiq-Ray-Attempt"
#: Added to the longest POST to make the lease that keeps other workers from posting at the same time (ms): it
#: covers building the body (a presign is local) and recording the answer.
LEASE_MARGIN_MS = 2_000


def now_ms() -> int:
    return int(time.time() * 1000)


def shown(url: str) -> str:
    """The URL for logs: scheme, host and path only (query strings often carry tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


class Attempts:
    """Delivers the webhooks of one :class:`~dramatiq_ray.delivery.webhooks.Webhooks`, with its settings (attempts,
    backoff, age, signing secrets, HTTP sender) and its delivery actor."""

    def __init__(self, webhooks: Webhooks, rng: random.Random) -> None:
        self.webhooks = webhooks
        self._rng = rng
        self._lock = threading.Lock()

    @property
    def lease_ms(self) -> int:
        """How long one attempt holds the message's lease, in milliseconds: its longest possible POST."""
        return int(self.webhooks._sender.request_bound * 1000) + LEASE_MARGIN_MS

    def compute_delay(self, attempt: int) -> int:
        """The delay in milliseconds before the POST that follows failed attempt number ``attempt``: the backoff
        doubled per attempt, capped, less up to ``jitter`` of it at random."""
        hooks = self.webhooks
        ceiling = min(hooks.backoff * 2 ** min(attempt - 1, 32), hooks.max_backoff)
        with self._lock:
            share = self._rng.random()
        return int(ceiling - ceiling * hooks.jitter * share)

    def deliver(self, broker: dramatiq.Broker, ledger: Ledger, delivery: dict[str, Any]) -> None:
        """One POST of one message's webhook, then settle, stop or schedule the next."""
        hooks = self.webhooks
        event, url, attempt = delivery["event"], delivery["url"], delivery["attempt"]
        message_id = event["message_id"]
        if ledger.settled(message_id):
            logger.debug("The webhook of message %r is already settled; nothing to do.", message_id)
            return
        token = ledger.claim(message_id, self.lease_ms)
        if token is None:
            # Another worker is posting it now (or died doing so): look again when its lease ends.
            self._schedule(delivery, max(ledger.lease_left(message_id), 50), url, "another POST is in flight")
            return
        try:
            if ledger.settled(message_id):
                ledger.release(message_id, token)
                return
            body = payload_body(broker, event, hooks.presign_expires_in)
            answer = hooks._sender.post(url, body, self.headers(body, message_id, attempt))
        except BaseException:
            ledger.release(message_id, token)
            raise
        metrics.record_webhook_attempt(answer.label)
        if answer.kind in ("delivered", "gone"):
            ledger.settle(message_id, token, answer.kind)
            metrics.record_webhook_outcome(answer.kind)
            if answer.kind == "delivered":
                logger.info("Delivered the webhook of message %r to %s (attempt %d).", message_id, shown(url), attempt)
            else:
                logger.warning(
                    "The receiver %s answered 410 Gone to the webhook of message %r: not retried.",
                    shown(url),
                    message_id,
                )
            return
        ledger.release(message_id, token)
        if answer.kind == "refused":
            logger.error(
                "Gave up the webhook of message %r to %s: it %s. Point the webhook at its final URL.",
                message_id,
                shown(url),
                answer.detail,
            )
            metrics.record_webhook_outcome("refused")
            return
        if attempt >= hooks.max_attempts:
            self._give_up(message_id, url, attempt, answer.detail, f"after {attempt} attempt(s)")
            return
        self._schedule({**delivery, "attempt": attempt + 1}, self.compute_delay(attempt), url, answer.detail)

    def _schedule(self, delivery: dict[str, Any], delay: int, url: str, why: str) -> None:
        hooks = self.webhooks
        message_id = delivery["event"]["message_id"]
        if now_ms() + delay - delivery["created"] > hooks.max_age:
            self._give_up(message_id, url, delivery["attempt"], why, f"at max_age ({hooks.max_age} ms)")
            return
        logger.info(
            "The webhook of message %r to %s: %s; next attempt (%d of %d) in %d ms.",
            message_id,
            shown(url),
            why,
            delivery["attempt"],
            hooks.max_attempts,
            delay,
        )
        assert hooks._actor is not None
        hooks._actor.send_with_options(args=(delivery,), delay=delay)

    def _give_up(self, message_id: str, url: str, attempt: int, why: str, when: str) -> None:
        logger.error(
            "Gave up the webhook of message %r to %s %s; the last attempt (%d): %s.",
            message_id,
            shown(url),
            when,
            attempt,
            why,
        )
        metrics.record_webhook_outcome("failed")

    def headers(self, body: bytes, webhook_id: str, attempt: int) -> dict[str, str]:
        """The headers of one POST: JSON, the signature of ``body`` under ``webhook_id``, the attempt number."""
        return {
            "Content-Type": "application/json",
            "User-Agent": f"dramatiq-ray/{__version__}",
            **signed_headers(body, self.webhooks.secrets, webhook_id, int(time.time())),
            ATTEMPT_HEADER: str(attempt),
        }

    def deliver_progress(self, ledger: Ledger, delivery: dict[str, Any]) -> None:
        """One POST of one progress event, never retried (the next event supersedes it); none once the message's
        completion webhook is settled."""
        event, url = delivery["event"], delivery["url"]
        message_id = event["message_id"]
        if ledger.settled(message_id):
            logger.debug("A progress event of message %r came after its completion webhook: dropped.", message_id)
            metrics.record_webhook_progress("stale")
            return
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=True).encode()
        answer = self.webhooks._sender.post(url, body, self.headers(body, delivery["webhook_id"], 1))
        metrics.record_webhook_attempt(answer.label)
        if answer.kind == "delivered":
            metrics.record_webhook_progress("delivered")
            logger.debug("Delivered a progress event of message %r to %s.", message_id, shown(url))
            return
        metrics.record_webhook_progress("dropped")
        logger.info(
            "A progress event of message %r to %s was not delivered (%s): not retried, the next one supersedes it.",
            message_id,
            shown(url),
            answer.detail,
        )
