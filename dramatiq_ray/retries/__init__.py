"""Retries with counted attempts, capped exponential backoff with jitter, and an exception denylist.

``Retries`` is a drop-in replacement for Dramatiq's own ``Retries`` middleware: it keeps every option Dramatiq's
has and adds ``max_attempts``, ``backoff``, ``jitter`` and ``denylist``. Adding it to a broker that already has
Dramatiq's stock ``Retries`` makes it take that one's place (see :class:`Retries`).

The modules: ``middleware.py`` (:class:`Retries`: options, delays, the denylist and the retry decision),
``rules.py`` (checking retry options and matching exceptions against a denylist, pure functions) and
``takeover.py`` (taking the stock middleware's place on a broker). One logger, ``dramatiq_ray.retries``.
"""

from __future__ import annotations

from .middleware import DEFAULT_JITTER, Retries

__all__ = ["DEFAULT_JITTER", "Retries"]
