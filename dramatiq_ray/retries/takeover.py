"""Taking the place of Dramatiq's stock ``Retries`` on a broker, once, so that only one middleware requeues.

Every broker has Dramatiq's ``Retries`` by default, and two retry middlewares on one broker would both requeue a
failed message. ``dramatiq_ray.Retries`` calls :meth:`Takeover.take_over` from its declaration and boot hooks:
``add_middleware`` calls ``after_declare_actor`` / ``after_declare_queue`` for what the broker already has, and a
message can only be processed once its actor is declared and a worker consumes its queue, so one of these always
comes first.
"""

from __future__ import annotations

import logging
import threading
import weakref

import dramatiq
from dramatiq.middleware import Middleware
from dramatiq.middleware import Retries as StockRetries

__all__ = ["Takeover"]

logger = logging.getLogger("dramatiq_ray.retries")  # one logger for the package, as docs/retries.md says


class Takeover:
    """Puts ``ours`` in the place of the stock ``Retries`` on each broker it is installed on, once per broker.

    Parameters:
      ours: The middleware that takes the stock one's place.
      kind: Its class: middleware of that class are never taken for the stock one.
    """

    def __init__(self, ours: Middleware, kind: type[StockRetries]) -> None:
        self._ours = ours
        self._kind = kind
        self._lock = threading.Lock()
        self._taken_over: weakref.WeakSet[dramatiq.Broker] = weakref.WeakSet()  # brokers already taken over

    def take_over(self, broker: dramatiq.Broker) -> None:
        """Take the place of Dramatiq's stock Retries on ``broker``, once, so that only one middleware requeues."""
        if broker in self._taken_over:
            return
        ours = self._ours
        with self._lock:
            if broker in self._taken_over:
                return
            current = list(broker.middleware)
            if not any(m is ours for m in current):
                return  # not installed on this broker: leave its middleware alone
            stock = [m for m in current if self._is_stock(m)]
            if stock:
                position = next(i for i, m in enumerate(current) if m is stock[0])
                replaced = [m for m in current if m is not ours and not self._is_stock(m)]
                replaced.insert(sum(1 for m in current[:position] if m is not ours and not self._is_stock(m)), ours)
                # A new list, not an in-place edit: a hook loop running over the old list is not disturbed.
                broker.middleware = replaced
            self._taken_over.add(broker)
        if stock:
            logger.info("Replaced %s on the broker with %r.", ", ".join(repr(m) for m in stock), ours)

    def _is_stock(self, middleware: object) -> bool:
        return isinstance(middleware, StockRetries) and not isinstance(middleware, self._kind)
