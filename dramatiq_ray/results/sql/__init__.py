"""A result backend in SQLite or PostgreSQL: results you can query, with the metadata of every message.

Importing this package imports neither SQLAlchemy nor psycopg: :class:`SQLBackend` loads them when it is
constructed, and names the ``sql`` extra when they are missing.

Why SQLAlchemy Core 2.x rather than psycopg 3 and the standard library's sqlite3 side by side: one code path
describes the tables, the indexes, the migrations, the upserts (both databases have ``INSERT ... ON CONFLICT DO
UPDATE ... WHERE``, which SQLAlchemy writes from one description) and the queries; it pools connections per
process and turns each driver's errors into one hierarchy, so "the database is unreachable" is recognised the
same way for both. What differs is small and kept in ``engine.py`` (SQLite's pragmas and write lock) and
``waiting.py`` (PostgreSQL's LISTEN/NOTIFY, which uses the psycopg connection directly). The cost: SQLite also
needs the ``sql`` extra (SQLAlchemy), which is pure Python apart from optional speedups.

The modules: ``backend.py`` (:class:`SQLBackend` itself), ``config.py`` (checking its arguments),
``engine.py`` (URLs, engines, errors), ``connections.py`` (each process's engines, schema check, retried writes
and listener), ``schema.py`` (tables and migrations), ``writes.py`` (writing outcomes and events), ``rows.py``
(what a write puts in a row), ``statements.py`` (the SQL), ``waiting.py`` (blocking reads), ``records.py`` (what
queries return), ``lifecycle.py`` (events from ``dramatiq_ray.Results``) and ``gc.py`` (expiry).
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
