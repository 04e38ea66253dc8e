"""A result backend in SQLite or PostgreSQL: results you can query, with the metadata of every message.

Importing this package imports neither SQLAlchemy nor psycopg: :class:`SQLBackend` loads them when it is
constructed, and names the ``sql`` extra when they are missing.

The modules: ``backend.py`` (:class:`SQLBackend` itself), ``config.py`` (checking its arguments),
``engine.py`` (URLs, engines, errors), ``connections.py`` (each process's engines, schema check, retried writes
and listener), ``schema.py`` (tables and migrations), ``rows.py`` (what a write puts in a row),
``statements.py`` (the SQL), ``waiting.py`` (blocking reads), ``records.py`` (what queries return),
``lifecycle.py`` (events from ``dramatiq_ray.Results``) and ``gc.py`` (expiry).
"""

from __future__ import annotations

from .backend import SQLBackend
from .gc import CollectReport, collect_expired
from .lifecycle import MessageEventRecorder
from .records import STATUSES, ResultRecord
from .schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "CollectReport",
    "MessageEventRecorder",
    "ResultRecord",
    "SQLBackend",
    "collect_expired",
]
