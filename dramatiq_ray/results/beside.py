"""A stock Dramatiq Results that keeps nothing, standing right after ``dramatiq_ray.Results`` on a broker.

Dramatiq's worker recognises the Results middleware with ``type(m) is Results`` (not ``isinstance``), and warns
"you haven't added the Results middleware" for every value returned on a broker without one. :func:`stand_beside`
makes that check true without changing Dramatiq.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from dramatiq.results import ResultBackend
from dramatiq.results import Results as DramatiqResults
from dramatiq.results.backend import Missing

__all__ = ["stand_beside"]


class _NullBackend(ResultBackend):
    """Keeps nothing: the backend of the stock Results that stands beside ours (see :func:`stand_beside`)."""

    def store_result(self, message: Any, result: Any, ttl: int) -> None:
        return None

    def store_exception(self, message: Any, exception: Exception, ttl: int) -> None:
        return None

    def _get(self, message_key: str) -> Any:
        return Missing

    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        return None


_beside_lock = threading.Lock()


def stand_beside(broker: dramatiq.Broker, ours: Middleware) -> None:
    """Put one stock ``dramatiq.results.Results`` with a backend that keeps nothing right after ours, once.

    Standing after ours, the stock instance is never the broker's results backend
    (``broker.get_results_backend()`` returns the first), and it stores nothing. It also logs Dramatiq's own
    "store_results is not set" warning, so ours does not repeat it.
    """
    if any(type(m) is DramatiqResults for m in broker.middleware):
        return
    with _beside_lock:
        if any(type(m) is DramatiqResults for m in broker.middleware) or not any(m is ours for m in broker.middleware):
            return
        stock = DramatiqResults(backend=_NullBackend())  # type: ignore[no-untyped-call]
        middleware = list(broker.middleware)
        middleware.insert(next(i for i, m in enumerate(middleware) if m is ours) + 1, stock)
        # A new list, not an in-place edit: a hook loop running over the old list is not disturbed.
        broker.middleware = middleware
