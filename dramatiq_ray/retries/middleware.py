"""``dramatiq_ray.Retries``: the middleware, its options and its retry decision (see the package's docstring)."""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, Final

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.common import compute_backoff
from dramatiq.errors import Retry
from dramatiq.middleware import Retries as StockRetries
from dramatiq.middleware.retries import DEFAULT_MAX_BACKOFF, DEFAULT_MIN_BACKOFF

from .. import metrics
from ..callpath.lookup import lookup_option
from ..errors import ConfigurationError, MessageCancelledError, MissingArgumentError
from .rules import (
    UNSET,
    Unset,
    candidate_names,
    check_backoff_options,
    check_jitter,
    check_retry_options,
    lookup_max_retries,
    normalize_denylist,
    option_denylist,
    original_exception,
    resolve_max_retries,
    type_name,
)
from .takeover import Takeover

__all__ = ["DEFAULT_JITTER", "Retries"]

logger = logging.getLogger("dramatiq_ray.retries")  # one logger for the package, as docs/retries.md says

#: Default jitter: each delay is drawn uniformly from ``[delay / 2, delay]``.
DEFAULT_JITTER: Final = 0.5

#: Default number of retries, as in Dramatiq: 20 retries, so 21 attempts.
DEFAULT_MAX_RETRIES: Final = 20


class Retries(StockRetries):
    """Retry failed messages a bounded number of times, with capped exponential backoff and an exception denylist.

    A subclass of Dramatiq's ``Retries`` that keeps every one of its options (``max_retries``, ``min_backoff``,
    ``max_backoff``, ``retry_when``, and the actor options ``throws`` and ``on_retry_exhausted``; raising
    ``dramatiq.Retry(delay=...)`` still picks the next delay) and changes three things:

    * ``max_attempts`` counts the first run: ``max_attempts=3`` means at most 3 runs (``max_retries=2``).
    * The delay after the n-th failed attempt is ``min(backoff * 2**(n-1), max_backoff)`` milliseconds, reduced by
      a random share of at most ``jitter``: uniform in ``[(1 - jitter) * delay, delay]``.
    * An exception matching the denylist fails the message at once: no requeue, no ``on_retry_exhausted``;
      the failure is stored by a Results middleware as usual. Entries are exception classes or full dotted
      names (``"myapp.errors.PermanentError"``; builtins may be bare: ``"ValueError"``) and match the exception's
      class or any base class. Exceptions from Ray are matched on their original type, and Ray system failures
      (``RaySystemError`` and Ray's own worker/node/memory/object failures) are only denied by an entry naming
      such a failure class, never by a broad one like ``Exception``.

    Actor and message options, looked up message -> actor -> middleware: ``max_attempts``, ``max_retries``,
    ``backoff`` (alias ``min_backoff``), ``max_backoff``, ``retry_jitter``, ``throws``, ``on_retry_exhausted``,
    ``retry_when`` (actor only) and ``retry_denylist`` (added to the middleware's ``denylist``).

    Adding this middleware to a broker that has Dramatiq's stock ``Retries`` (every broker does by default)
    replaces the stock instance in place, at its position in ``broker.middleware``, once per broker: inside
    ``add_middleware`` when the broker already has actors or queues, else when the first actor or queue is
    declared or a worker boots, and so always before any message is processed.

    Example::

        broker.add_middleware(Retries(max_attempts=3, backoff=60_000, max_backoff=3_600_000,
                                      denylist=["myapp.errors.PermanentError", ValueError]))

    Parameters:
      max_attempts: Most runs of a message, the first included (>= 1). Give it or ``max_retries``, not two
        values that disagree.
      max_retries: Dramatiq's count of retries after the first run (``max_attempts - 1``); ``None`` for no
        limit. Defaults to 20.
      backoff: Delay after the first failed attempt, in milliseconds; doubles with each further attempt.
        Defaults to 15 000 (15 s). ``0`` retries at once.
      min_backoff: Dramatiq's name for ``backoff``.
      max_backoff: Cap on any delay, in milliseconds (at most 7 days, the default).
      jitter: Share of each delay that may be randomly taken off, in ``[0, 1]``; 0.5 by default.
      denylist: Exception classes or dotted names that are never retried.
      retry_when: Dramatiq's predicate ``(retries_so_far, exception) -> bool``; when set it decides instead of
        the attempt count (the denylist and ``throws`` still apply first).
      rng: Random source for jitter (a seeded ``random.Random`` makes delays reproducible).

    Raises:
      ConfigurationError: An option is out of range, ``max_attempts`` and ``max_retries`` (or ``backoff`` and
        ``min_backoff``) disagree, or a denylist entry is neither an exception class nor a dotted name.
    """

    def __init__(
        self,
        *,
        max_attempts: int | None = None,
        max_retries: int | Unset | None = UNSET,
        backoff: int | None = None,
        min_backoff: int | None = None,
        max_backoff: int | None = None,
        jitter: float = DEFAULT_JITTER,
        denylist: Iterable[type[BaseException] | str] | None = None,
        retry_when: Callable[[int, BaseException], bool] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        where = "Retries"
        options: dict[str, Any] = {}
        if max_attempts is not None:
            options["max_attempts"] = max_attempts
        if not isinstance(max_retries, Unset):
            options["max_retries"] = max_retries
        resolved = resolve_max_retries(options, where, strict=True)
        for name, value in (("backoff", backoff), ("min_backoff", min_backoff), ("max_backoff", max_backoff)):
            if value is not None:
                options[name] = value
        check_backoff_options(options, where)
        check_jitter(jitter, f"{where}: jitter")
        super().__init__(retry_when=retry_when)
        # Set after the stock constructor, whose annotations do not admit None (no limit) although its code does.
        self.max_retries = DEFAULT_MAX_RETRIES if isinstance(resolved, Unset) else resolved  # type: ignore[assignment]
        # The stock constructor treats 0 as "use the default"; here 0 means no delay.
        self.min_backoff = next((v for v in (backoff, min_backoff) if v is not None), DEFAULT_MIN_BACKOFF)
        self.max_backoff = DEFAULT_MAX_BACKOFF if max_backoff is None else max_backoff
        self.jitter = float(jitter)
        self.denylist: tuple[str, ...] = normalize_denylist(denylist, f"{where}: denylist")
        self.logger = logger
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._takeover = Takeover(self, Retries)

    @property
    def backoff(self) -> int:
        """Delay after the first failed attempt, in milliseconds (Dramatiq's ``min_backoff``)."""
        return int(self.min_backoff)

    @property
    def max_attempts(self) -> int | None:
        """Most runs of a message, the first included; ``None`` when unlimited."""
        return None if self.max_retries is None else self.max_retries + 1

    @property
    def actor_options(self) -> set[str]:
        """Dramatiq's retry options plus ``max_attempts``, ``backoff``, ``retry_jitter`` and ``retry_denylist``."""
        return set(super().actor_options) | {"max_attempts", "backoff", "retry_jitter", "retry_denylist"}

    # --- computing delays ------------------------------------------------------------------------------------

    def compute_delay(self, attempt: int, *, backoff: int, max_backoff: int, jitter: float) -> int:
        """The delay in milliseconds before the run that follows failed attempt number ``attempt`` (1 = first).

        ``min(backoff * 2**(attempt-1), max_backoff)``, less a uniform random share of at most ``jitter``.
        """
        # Dramatiq's compute_backoff(k) without jitter is min(factor * 2**k, max_backoff); its exponent stops at 32,
        # where any backoff of 1 ms or more is already past the 7-day cap.
        _, ceiling = compute_backoff(
            max(attempt - 1, 0), factor=backoff, jitter=False, max_backoff=min(max_backoff, DEFAULT_MAX_BACKOFF)
        )
        with self._rng_lock:
            share = self._rng.random()
        return int(ceiling - ceiling * jitter * share)

    # --- the denylist ----------------------------------------------------------------------------------------

    def denied_by(self, exception: BaseException, extra: Iterable[str] = ()) -> str | None:
        """The denylist entry that ``exception`` matches, or ``None`` when it may be retried.

        ``extra`` holds more entries (already dotted names), e.g. an actor's ``retry_denylist``.
        """
        if isinstance(exception, Retry):
            return None
        entries = set(self.denylist).union(extra)
        if not entries:
            return None
        for name in candidate_names(original_exception(exception)):
            if name in entries:
                return name
        return None

    # --- hooks -----------------------------------------------------------------------------------------------
    # Taking the stock Retries' place happens in the declaration and boot hooks only: add_middleware calls
    # after_declare_actor / after_declare_queue for what the broker already has, and a message can only be
    # processed once its actor is declared and a worker consumes its queue, so one of these always comes first.

    def before_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        self._take_over(broker)
        check_retry_options(actor.options, f"actor {actor.actor_name!r}")

    def after_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        self._take_over(broker)

    def after_declare_queue(self, broker: dramatiq.Broker, queue_name: str) -> None:
        self._take_over(broker)

    def after_declare_delay_queue(self, broker: dramatiq.Broker, queue_name: str) -> None:
        self._take_over(broker)

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        self._take_over(broker)

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._take_over(broker)

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None) -> None:
        if message.options.get("retries"):
            return  # a requeue: the options were checked when the message was first sent
        check_retry_options(message.options, f"message to {message.actor_name!r}")

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        # Not super(): Dramatiq's after_process_message computes its delay inline (with its own jitter) and knows
        # only max_retries and min_backoff, so the steps ours shares with it (throws, the retry bookkeeping,
        # exhaustion and on_retry_exhausted) are repeated here, as Dramatiq does them.
        if exception is None:
            return
        actor = broker.get_actor(message.actor_name)
        if self._fails_at_once(message, actor, exception):
            message.fail()
            return

        retries = message.options.setdefault("retries", 0)
        message.options["retries"] += 1
        message.options["traceback"] = traceback.format_exc(limit=30)
        message.options["requeue_timestamp"] = int(time.time() * 1000)

        max_retries = lookup_max_retries(message.options, actor.options, self.max_retries)
        retry_when = actor.options.get("retry_when", self.retry_when)
        if (retry_when is not None and not retry_when(retries, exception)) or (
            retry_when is None and max_retries is not None and retries >= max_retries
        ):
            self.logger.warning(
                "Retries exceeded for message %r of actor %r after %d attempts.",
                message.message_id,
                message.actor_name,
                retries + 1,
            )
            message.fail()
            target_actor_name = message.options.get("on_retry_exhausted") or actor.options.get("on_retry_exhausted")
            if target_actor_name:
                target_actor = broker.get_actor(target_actor_name)
                target_actor.send(message.asdict(), {"retries": retries, "max_retries": max_retries})
            return

        if isinstance(exception, Retry) and exception.delay is not None:
            delay = exception.delay
        else:
            delay = self.compute_delay(
                retries + 1,
                backoff=lookup_option(message.options, actor.options, ("backoff", "min_backoff"), self.min_backoff),
                max_backoff=lookup_option(message.options, actor.options, ("max_backoff",), self.max_backoff),
                jitter=lookup_option(message.options, actor.options, ("retry_jitter",), self.jitter),
            )
        self.logger.info("Retrying message %r in %d milliseconds.", message.message_id, delay)
        metrics.record_retry(message.actor_name, original_exception(exception))
        broker.enqueue(message, delay=delay)  # type: ignore[arg-type]  # a proxy, as Dramatiq's Retries passes

    # --- helpers ---------------------------------------------------------------------------------------------

    def _fails_at_once(self, message: MessageProxy, actor: dramatiq.Actor[Any, Any], exception: BaseException) -> bool:
        """Whether ``exception`` fails the message with no retry (``throws``, a configuration error, the denylist);
        logs why."""
        throws = message.options.get("throws") or actor.options.get("throws")
        if throws and isinstance(exception, throws):
            self.logger.info("Aborting message %r.", message.message_id)
            return True
        if isinstance(exception, MessageCancelledError):
            # dramatiq_ray.cancel: skipped and failed by the call path before Retries sees it; never retried.
            return True
        if isinstance(exception, ConfigurationError):
            # Bad ray_options, an actor Ray cannot import: running it again fails the same way.
            self.logger.error(
                "Not retrying message %r of actor %r: it cannot run as configured (%s). Fix the configuration, then "
                "send the message again.",
                message.message_id,
                message.actor_name,
                exception,
            )
            return True
        if isinstance(exception, MissingArgumentError):
            # An argument sent by reference is gone from the store: no retry can bring it back.
            self.logger.error(
                "Not retrying message %r of actor %r: %s", message.message_id, message.actor_name, exception
            )
            return True
        denied = self.denied_by(exception, option_denylist(message.options, actor.options))
        if denied is None:
            return False
        self.logger.warning(
            "Not retrying message %r of actor %r: %s matches retry denylist entry %r. The message failed.",
            message.message_id,
            message.actor_name,
            type_name(original_exception(exception)),
            denied,
        )
        metrics.record_retry_denied(message.actor_name, original_exception(exception))
        return True

    def _take_over(self, broker: dramatiq.Broker) -> None:
        """Take the place of Dramatiq's stock Retries on ``broker``, once (see ``takeover.py``)."""
        self._takeover.take_over(broker)
