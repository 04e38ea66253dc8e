"""The demo: a realistic mix of messages through Dramatiq, Ray, spilled results and retries.

Run it with ``python -m dramatiq_ray.demo`` (``--help`` explains the options). It needs no services: an
in-process Dramatiq worker on a stub broker, a local Ray, and spilled results in a temporary directory.
``--broker redis://localhost:6379/0`` runs the same against a real Redis.
"""

from ._runner import main

__all__ = ["main"]
