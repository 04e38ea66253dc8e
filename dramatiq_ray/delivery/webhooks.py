"""Webhooks: POST a signed JSON payload when a message is done, from a delivery queue the workers consume.

::

    message done (acked, or failed after its last retry)
      -> Webhooks enqueues a delivery message on its queue (the same workers consume it)
      -> the delivery actor: settled? -> take the lease -> sign -> POST
           2xx: settled (delivered)   410: settled (gone)   redirect elsewhere: given up
           anything else: the next attempt is a delayed message (backoff with jitter), until attempts or age
           run out (ERROR, counted)

A worker thread never waits between attempts: a retry is a delayed message, like Dramatiq's own retries.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from .. import metrics
from ..callpath.lookup import lookup_option
from ..errors import MessageCancelledError
from . import checks
from .attempts import ATTEMPT_HEADER, Attempts
from .attempts import now_ms as _now_ms
from .attempts import shown as _shown
from .http import HttpSender, check_url
from .ledger import Ledger, choose_ledger
from .payload import completion_event, completion_result, error_section
from .progress_events import PROGRESS_EVENT, PROGRESS_OPTION, ProgressWatch, check_progress_option
from .signing import check_secrets
from .tracking import Tracking

__all__ = ["ATTEMPT_HEADER", "DELIVERY_ACTOR", "DELIVERY_QUEUE", "PROGRESS_OPTION", "WEBHOOK_OPTION", "Webhooks"]

logger = logging.getLogger(__name__)

#: The actor and message option naming a message's webhook URL.
WEBHOOK_OPTION = "webhook"
#: The name of the actor that delivers webhooks, declared on the broker by every worker that has Webhooks.
DELIVERY_ACTOR = "dramatiq_ray_deliver_webhook"
#: The default queue of delivery messages.
DELIVERY_QUEUE = "dramatiq_ray_webhooks"


class Webhooks(Middleware):
    """POST a signed JSON payload to a URL when a message is done: succeeded, or failed after its last retry.

    The URL is the message's ``webhook`` option, else the actor's, else ``url``::

        broker.add_middleware(Webhooks(secrets=[os.environ["WEBHOOK_SECRET"]]))

        @dramatiq.actor(store_results=True, webhook="https://app.example.com/hooks/render")
        def render(frame): ...

        render.send_with_options(args=(1,), webhook="https://other.example.com/hook")

    The body carries ``message_id``, ``actor``, ``queue``, ``status`` (``succeeded`` or ``failed``),
    ``attempts``, ``enqueued_at``, ``started_at``, ``finished_at`` (ISO 8601, UTC), then ``result`` (the value
    when it is JSON and at most ``max_value_bytes``; the pointer and a presigned URL when it was spilled to a
    store that can sign) or ``error`` (type and message). It is signed as the Standard Webhooks specification
    (v1.0) says: ``webhook-id`` (the message id), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
    (``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, one per secret, space-separated); the
    ``Dramatiq-Ray-Attempt`` header counts POSTs. Receivers check them with :func:`dramatiq_ray.webhooks.verify`
    or any Standard Webhooks library (``standardwebhooks`` on PyPI and npm).

    Delivery is a message on ``queue_name``, run by the same workers (a ``dramatiq`` worker started with
    ``--queues`` must list it). 2xx settles it; 410 stops it; a redirect to another origin is refused; anything
    else (another status, a timeout, a refused connection) is retried after ``backoff * 2**(n-1)`` milliseconds
    (capped at ``max_backoff``, less up to ``jitter`` of it at random) until ``max_attempts`` POSTs were made or
    the next would start more than ``max_age`` after the message finished; then it is logged at ERROR and
    counted in ``dramatiq_ray_webhook_deliveries_total{outcome="failed"}``.

    Exactly-once: a ledger (Redis: the broker's own for a ``RedisBroker``, else a Redis result backend's, else
    ``ledger=``) records each settled message id and leases the POST, so one POST at most is in flight per
    message and none starts after a 2xx was recorded, even when the message, or its delivery, runs again after
    a worker restart. A worker that dies after the receiver answered 2xx but before recording it leaves one
    duplicate POST, with the same ``webhook-id``: receivers that must act once deduplicate on it.

    Parameters:
      secrets: The signing secrets, each ``whsec_<base64 of a 24 to 64 byte key>`` (make one with
        :func:`dramatiq_ray.webhooks.new_secret`); every one signs (a ``v1,`` entry each), so receivers accept
        either while a secret rotates.
      url: The default webhook URL for messages whose actor and message name none (``None``: no webhook).
      allow_http: Allow plain ``http://`` URLs (a trusted network, tests). Default: https only.
      max_attempts: Most POSTs per message (>= 1).
      backoff: Delay before the second POST, in milliseconds; doubles with each further attempt.
      max_backoff: Cap of any delay, in milliseconds.
      jitter: Share of each delay that may be taken off at random, in ``[0, 1]``.
      max_age: No POST starts more than this many milliseconds after the message finished.
      connect_timeout: Connect timeout of each POST, in milliseconds.
      read_timeout: Read timeout of each POST, in milliseconds (the whole POST is bounded by connect + read).
      max_value_bytes: The largest JSON-encoded value carried in the body, in bytes; a larger one is referred
        to by its pointer when it was spilled, else omitted (``{"omitted": "too_large"}``).
      presign_expires_in: How long the presigned URL of a spilled result stays valid, in seconds (as
        :func:`dramatiq_ray.get_result_url`).
      queue_name: The queue of delivery messages.
      ledger: A ``redis.Redis`` client, a ``redis://`` URL, or ``None`` to choose as above (falling back to this
        process's memory, with a WARNING, when the broker and result backend are not Redis).
      rng: Random source for jitter.
      progress: Send progress events too (see below) for messages whose actor and message do not say
        (``webhook_progress=True`` or ``False``, as an actor or message option). Default: off.
      progress_every: How often a running message's progress is looked at for a progress event, in milliseconds:
        at most one event per message per this long, and none while its progress does not change.

    Progress events (docs/delivery.md shows their body): while a message with progress events on runs, each new
    value its body reported with ``report_progress`` is POSTed, signed the same way, with ``"type": "progress"``
    and the ``webhook-id`` ``<message id>.progress.<n>``: one POST each, never retried, none after the completion.
    They need ``dramatiq_ray.Results`` with a Redis result backend or an ``SQLBackend`` (where progress is kept).

    Raises:
      ConfigurationError: a secret (not in the ``whsec_`` form, not base64, under 24 bytes), URL or number is
        invalid.
    """

    def __init__(
        self,
        *,
        secrets: list[str],
        url: str | None = None,
        allow_http: bool = False,
        max_attempts: int = 10,
        backoff: int = 5_000,
        max_backoff: int = 3_600_000,
        jitter: float = 0.5,
        max_age: int = 86_400_000,
        connect_timeout: int = 5_000,
        read_timeout: int = 30_000,
        max_value_bytes: int = 64 * 1024,
        presign_expires_in: int = 3600,
        queue_name: str = DELIVERY_QUEUE,
        ledger: Any = None,
        rng: random.Random | None = None,
        progress: bool = False,
        progress_every: int = 5_000,
    ) -> None:
        self.secrets = check_secrets(secrets, "Webhooks")
        self.allow_http = checks.flag("allow_http", allow_http)
        self.url = None if url is None else check_url(url, allow_http=allow_http, where="Webhooks(url=...)")
        self.max_attempts = checks.integer("max_attempts", max_attempts)
        self.backoff = checks.integer("backoff", backoff, minimum=0)
        self.max_backoff = checks.integer("max_backoff", max_backoff, minimum=0)
        self.jitter = checks.share("jitter", jitter)
        self.max_age = checks.integer("max_age", max_age)
        self.connect_timeout = checks.integer("connect_timeout", connect_timeout)
        self.read_timeout = checks.integer("read_timeout", read_timeout)
        self.max_value_bytes = checks.integer("max_value_bytes", max_value_bytes, minimum=0)
        self.presign_expires_in = checks.integer("presign_expires_in", presign_expires_in)
        self.queue_name = checks.name("queue_name", queue_name)
        self.progress = checks.flag("progress", progress)
        self.progress_every = checks.integer("progress_every", progress_every)
        self._ledger_spec = ledger
        self._ledger: Ledger | None = None
        self._lock = threading.Lock()
        self._sender = HttpSender(
            connect_timeout=connect_timeout / 1000, read_timeout=read_timeout / 1000, allow_http=allow_http
        )
        self._actor: dramatiq.Actor[Any, Any] | None = None
        self._attempts = Attempts(self, rng or random.Random())
        self._progress = ProgressWatch(every=self.progress_every, send=self._send_progress)
        # Per message id, between the hooks of one processing: (started ms, attempt) and (finished ms, result);
        # bounded (see tracking.MAX_TRACKED) and cleared at worker shutdown.
        self._tracking = Tracking()

    def __repr__(self) -> str:
        shown = _shown(self.url) if self.url else None
        return f"Webhooks(url={shown!r}, secrets=<{len(self.secrets)}>, queue_name={self.queue_name!r})"

    @property
    def actor_options(self) -> set[str]:
        return {WEBHOOK_OPTION, PROGRESS_OPTION}

    # --- declaring and sending -------------------------------------------------------------------------------

    def before_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        if actor.options.get(WEBHOOK_OPTION) is not None:
            check_url(actor.options[WEBHOOK_OPTION], allow_http=self.allow_http, where=f"Actor {actor.actor_name!r}")
        check_progress_option(actor.options, f"Actor {actor.actor_name!r}")

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int) -> None:
        if message.options.get(WEBHOOK_OPTION) is not None:
            where = f"The webhook option of a message to {message.actor_name!r}"
            check_url(message.options[WEBHOOK_OPTION], allow_http=self.allow_http, where=where)
        check_progress_option(message.options, f"A message to {message.actor_name!r}")

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        self.declare(broker)

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Worker.start reads the declared queues after this hook: declaring here makes the worker consume ours.
        self.declare(broker)
        logger.debug("Webhooks deliver from queue %r with %r.", self.queue_name, self._ledger_for(broker))

    def declare(self, broker: dramatiq.Broker) -> dramatiq.Actor[Any, Any]:
        """Declare the delivery actor on ``broker`` (once), so that workers consume its queue; return it."""
        with self._lock:
            existing = broker.actors.get(DELIVERY_ACTOR)
            if existing is None:
                # ray=False: delivery runs in the worker thread even with RayExecutionMiddleware; its own retries
                # are delayed messages, so Dramatiq's Retries only sees unexpected errors (a Redis outage).
                existing = dramatiq.Actor(
                    self.deliver,
                    broker=broker,
                    actor_name=DELIVERY_ACTOR,
                    queue_name=self.queue_name,
                    priority=0,
                    options={"ray": False, "store_results": False, "max_retries": 3},
                )
            self._actor = existing
            return existing

    # --- noticing that a message is done ---------------------------------------------------------------------

    def url_for(self, broker: dramatiq.Broker, message: dramatiq.Message[Any] | dramatiq.MessageProxy) -> str | None:
        """The webhook URL of ``message``: its option, else its actor's, else the default."""
        if message.actor_name == DELIVERY_ACTOR:
            return None
        actor = broker.actors.get(message.actor_name)
        url = lookup_option(message.options, actor.options if actor else {}, (WEBHOOK_OPTION,), self.url)
        return url if isinstance(url, str) and url else None

    def progress_for(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> bool:
        """Whether ``message``'s webhook reports progress: its ``webhook_progress`` option, else its actor's, else
        ``progress``."""
        actor = broker.actors.get(message.actor_name)
        return bool(lookup_option(message.options, actor.options if actor else {}, (PROGRESS_OPTION,), self.progress))

    def _send_progress(self, delivery: dict[str, Any]) -> None:
        assert self._actor is not None
        self._actor.send_with_options(args=(delivery,))

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if message.actor_name != DELIVERY_ACTOR:
            attempt = int(message.options.get("retries", 0)) + 1
            self._tracking.start(message.message_id, _now_ms(), attempt)
            url = self.url_for(broker, message)
            if url and self.progress_for(broker, message):
                self._progress.watch(broker, message, url, attempt)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None and not message.failed and self.url_for(broker, message):
            completed = (_now_ms(), completion_result(result, self.max_value_bytes))
            self._tracking.succeed(message.message_id, *completed)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if not message.failed:  # a failed one is reported by after_nack
            self._take(message.message_id)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Every worker thread has stopped: a message still tracked here was never acked nor nacked by this worker
        # (its broker delivers it again), so nothing will report it from this process.
        self._tracking.clear()
        self._progress.stop()

    def _take(self, message_id: str) -> tuple[tuple[int, int] | None, tuple[int, dict[str, Any]] | None]:
        self._progress.forget(message_id)
        return self._tracking.take(message_id)

    def after_ack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        # Acked, so every after_process_message hook (Results storing the result) has run.
        running, succeeded = self._take(message.message_id)
        url = self.url_for(broker, message)
        if succeeded is not None and url:
            finished, result = succeeded
            self._enqueue(broker, message, url, running, finished, status="succeeded", result=result)

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        running, _ = self._take(message.message_id)
        url = self.url_for(broker, message)
        if message.failed and url:
            # As Dramatiq's Results does: the exception that failed the message is on the proxy until after nack.
            error = error_section(getattr(message, "_exception", None))
            exception = getattr(message, "_exception", None)
            status = "cancelled" if isinstance(exception, MessageCancelledError) else "failed"
            self._enqueue(broker, message, url, running, _now_ms(), status=status, error=error)

    def _enqueue(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        url: str,
        running: tuple[int, int] | None,
        finished: int,
        *,
        status: str,
        result: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
    ) -> None:
        started, attempts = running if running else (None, int(message.options.get("retries", 0)) + 1)
        event = completion_event(message, status, attempts, started, finished, result=result, error=error)
        delivery = {"event": event, "url": url, "created": finished, "attempt": 1}
        try:
            (self._actor or self.declare(broker)).send_with_options(args=(delivery,))
        except Exception:
            logger.error(
                "Could not enqueue the webhook of message %r to %s: it is lost.",
                message.message_id,
                _shown(url),
                exc_info=True,
            )
            metrics.record_webhook_outcome("failed")

    # --- delivering (attempts.py) -----------------------------------------------------------------------------

    def deliver(self, delivery: dict[str, Any]) -> None:
        """The delivery actor's body: one POST of one message's webhook, then settle, stop or schedule the next."""
        broker = self._actor.broker if self._actor is not None else dramatiq.get_broker()
        if delivery.get("kind") == PROGRESS_EVENT:
            self._attempts.deliver_progress(self._ledger_for(broker), delivery)
        else:
            self._attempts.deliver(broker, self._ledger_for(broker), delivery)

    # --- the ledger ----------------------------------------------------------------------------------------------

    def _ledger_for(self, broker: dramatiq.Broker) -> Ledger:
        with self._lock:
            if self._ledger is None:
                self._ledger = choose_ledger(self._ledger_spec, broker)
            return self._ledger
