"""Cancel marks, message states and progress in Redis: the channel of a Redis result backend."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from .channel import MARK_TTL, RUNNING, Progress

__all__ = ["REDIS_PASSWORD_ENV", "RedisChannel"]

logger = logging.getLogger(__name__)

#: The environment variable a Redis password is read from where a body runs (it never travels with the call).
REDIS_PASSWORD_ENV = "DRAMATIQ_RAY_REDIS_PASSWORD"


class RedisChannel:
    """Marks and progress in Redis, under ``<namespace>:cancel:<id>``, ``<namespace>:state:<id>`` and
    ``<namespace>:progress:<id>``, each with a time-to-live of ``ttl`` milliseconds.

    Built from the result backend's client (:meth:`from_client`): it keeps that client's connection settings,
    without the password, which is read from ``DRAMATIQ_RAY_REDIS_PASSWORD`` where the call travels to (a Ray task
    or job) when Redis needs one.
    """

    def __init__(
        self,
        *,
        connection_kwargs: dict[str, Any],
        connection_class: Any = None,
        namespace: str = "dramatiq-results",
        ttl: int = MARK_TTL,
    ) -> None:
        self.connection_kwargs = dict(connection_kwargs)
        self.connection_class = connection_class
        self.namespace = namespace
        self.ttl = ttl
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    @classmethod
    def from_client(cls, client: Any, *, namespace: str = "dramatiq-results", ttl: int = MARK_TTL) -> RedisChannel:
        pool = client.connection_pool
        channel = cls(
            connection_kwargs=pool.connection_kwargs,
            connection_class=pool.connection_class,
            namespace=namespace,
            ttl=ttl,
        )
        channel._client, channel._pid = client, os.getpid()
        return channel

    def __getstate__(self) -> dict[str, Any]:
        # Plain settings only: the client's helpers (locks, handlers) stay behind, and so does the password.
        kwargs = {
            key: value
            for key, value in self.connection_kwargs.items()
            if isinstance(value, str | int | float | bool | None) and key != "password" and not key.startswith("orig_")
        }
        return {
            "connection_kwargs": kwargs,
            "connection_class": self.connection_class,
            "namespace": self.namespace,
            "ttl": self.ttl,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def describe(self) -> str:
        kwargs = self.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        return f"Redis at {where} (db {kwargs.get('db', 0)})"

    def client(self) -> Any:
        if self._client is not None and self._pid == os.getpid():
            return self._client
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                import redis

                kwargs = dict(self.connection_kwargs)
                if "password" not in kwargs and os.environ.get(REDIS_PASSWORD_ENV):
                    kwargs["password"] = os.environ[REDIS_PASSWORD_ENV]
                if self.connection_class is not None:
                    kwargs["connection_class"] = self.connection_class
                self._client = redis.Redis(connection_pool=redis.ConnectionPool(**kwargs))
                self._pid = os.getpid()
        return self._client

    def _key(self, kind: str, message_id: str) -> str:
        return f"{self.namespace}:{kind}:{message_id}"

    def mark_cancelled(self, message_id: str) -> None:
        self.client().set(self._key("cancel", message_id), b"1", px=self.ttl)

    def is_cancelled(self, message_id: str) -> bool:
        return bool(self.client().exists(self._key("cancel", message_id)))

    def set_state(self, message_id: str, state: str) -> None:
        self.client().set(self._key("state", message_id), state.encode(), px=self.ttl)

    def start(self, message_id: str) -> bool:
        pipe = self.client().pipeline(transaction=False)
        pipe.set(self._key("state", message_id), RUNNING.encode(), px=self.ttl)
        pipe.exists(self._key("cancel", message_id))
        return bool(pipe.execute()[1])

    def state(self, message_id: str) -> str | None:
        raw = self.client().get(self._key("state", message_id))
        return raw.decode() if raw is not None else None

    def write_progress(self, message_id: str, progress: Progress) -> None:
        try:
            self.client().set(self._key("progress", message_id), progress.to_json().encode(), px=self.ttl)
        except Exception as error:
            logger.warning("Could not write the progress of message %s to %s: %s", message_id, self.describe(), error)

    def read_progress(self, message_id: str) -> Progress | None:
        raw = self.client().get(self._key("progress", message_id))
        return Progress.from_json(raw) if raw is not None else None
