"""A result backend in SQLite or PostgreSQL: results you can query, with the metadata of every message.

Importing this package imports neither SQLAlchemy nor psycopg: :class:`SQLBackend` loads them when it is
constructed, and names the ``sql`` extra when they are missing.
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
