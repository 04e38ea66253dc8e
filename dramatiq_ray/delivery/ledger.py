"""The delivery ledger: which messages' webhooks are settled, and who is posting one right now.

Two keys per message id, in Redis: ``<prefix>:<id>:settled`` (``delivered`` or ``gone``; kept 7 days) and
``<prefix>:<id>:lease`` (a random token, expiring after the longest one attempt can take). A delivery attempt:

1. returns at once when the message is settled;
2. takes the lease (``SET NX PX``), or, when another attempt holds it, comes back after it expires;
3. POSTs; on 2xx or 410 writes ``settled`` and drops its lease in one step (a Lua script), else drops its lease.

So at most one POST per message is in flight, and none starts after a 2xx was recorded, whichever worker,
process or host runs the attempt, and however many times the message or its delivery is redelivered.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Protocol

import dramatiq

from ..errors import ConfigurationError

__all__ = ["SETTLED_TTL_MS", "Ledger", "MemoryLedger", "RedisLedger", "choose_ledger"]

logger = logging.getLogger(__name__)

#: How long a settled mark is kept, in milliseconds (7 days, Dramatiq's longest delay).
SETTLED_TTL_MS = 7 * 24 * 3600 * 1000

_SETTLE = """
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if redis.call('GET', KEYS[2]) == ARGV[1] then
    redis.call('DEL', KEYS[2])
end
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class Ledger(Protocol):
    """Where settled marks and leases live."""

    def settled(self, message_id: str) -> str | None:
        """``delivered`` or ``gone`` when the message's webhook is settled, else ``None``."""

    def claim(self, message_id: str, lease_ms: int) -> str | None:
        """Take the lease for ``lease_ms`` milliseconds and return its token, or ``None`` when it is held."""

    def lease_left(self, message_id: str) -> int:
        """Milliseconds until the current lease expires (0 when there is none)."""

    def settle(self, message_id: str, token: str, outcome: str) -> None:
        """Mark the message settled with ``outcome`` and drop the lease ``token`` holds."""

    def release(self, message_id: str, token: str) -> None:
        """Drop the lease when ``token`` still holds it."""


class RedisLedger:
    """The ledger in Redis: shared by every worker process and host that uses the same Redis.

    Parameters:
      client: A ``redis.Redis`` client.
      prefix: The key prefix.
    """

    def __init__(self, client: Any, prefix: str = "dramatiq-ray-webhooks") -> None:
        self.client = client
        self.prefix = prefix
        self._settle = client.register_script(_SETTLE)
        self._release = client.register_script(_RELEASE)

    def _keys(self, message_id: str) -> tuple[str, str]:
        return f"{self.prefix}:{message_id}:settled", f"{self.prefix}:{message_id}:lease"

    def settled(self, message_id: str) -> str | None:
        value = self.client.get(self._keys(message_id)[0])
        return value.decode() if isinstance(value, bytes) else value

    def claim(self, message_id: str, lease_ms: int) -> str | None:
        token = uuid.uuid4().hex
        return token if self.client.set(self._keys(message_id)[1], token, nx=True, px=lease_ms) else None

    def lease_left(self, message_id: str) -> int:
        return max(int(self.client.pttl(self._keys(message_id)[1])), 0)

    def settle(self, message_id: str, token: str, outcome: str) -> None:
        self._settle(keys=list(self._keys(message_id)), args=[token, outcome, SETTLED_TTL_MS])

    def release(self, message_id: str, token: str) -> None:
        self._release(keys=[self._keys(message_id)[1]], args=[token])

    def __repr__(self) -> str:
        return f"RedisLedger(prefix={self.prefix!r})"


class MemoryLedger:
    """The ledger in this process's memory: leases and settled marks hold between the threads of one process
    only (a StubBroker, tests, a single worker process). Use a :class:`RedisLedger` across processes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settled: dict[str, tuple[str, float]] = {}
        self._leases: dict[str, tuple[str, float]] = {}

    def settled(self, message_id: str) -> str | None:
        with self._lock:
            found = self._settled.get(message_id)
            return found[0] if found and found[1] > time.monotonic() else None

    def claim(self, message_id: str, lease_ms: int) -> str | None:
        with self._lock:
            held = self._leases.get(message_id)
            if held and held[1] > time.monotonic():
                return None
            token = uuid.uuid4().hex
            self._leases[message_id] = (token, time.monotonic() + lease_ms / 1000)
            return token

    def lease_left(self, message_id: str) -> int:
        with self._lock:
            held = self._leases.get(message_id)
            return max(int((held[1] - time.monotonic()) * 1000), 0) if held else 0

    def settle(self, message_id: str, token: str, outcome: str) -> None:
        with self._lock:
            self._settled[message_id] = (outcome, time.monotonic() + SETTLED_TTL_MS / 1000)
            self._drop(message_id, token)

    def release(self, message_id: str, token: str) -> None:
        with self._lock:
            self._drop(message_id, token)

    def _drop(self, message_id: str, token: str) -> None:
        held = self._leases.get(message_id)
        if held and held[0] == token:
            del self._leases[message_id]

    def __repr__(self) -> str:
        return "MemoryLedger()"


def choose_ledger(spec: Any, broker: dramatiq.Broker) -> Ledger:
    """The ledger ``spec`` names (a ``redis.Redis`` client, a ``redis://`` URL, a ledger), else the broker's Redis
    (a ``RedisBroker``), else the Redis of the broker's result backend, else this process's memory (with a WARNING
    unless the broker is a ``StubBroker``).

    Raises:
      ConfigurationError: ``spec`` is none of these.
    """
    if isinstance(spec, str):
        import redis

        return RedisLedger(redis.Redis.from_url(spec))
    if spec is not None and hasattr(spec, "register_script"):
        return RedisLedger(spec)
    if spec is not None and hasattr(spec, "claim") and hasattr(spec, "settled"):
        ledger: Ledger = spec
        return ledger
    if spec is not None:
        raise ConfigurationError(
            f"Webhooks: ledger must be a redis.Redis client, a redis:// URL or None, got {type(spec).__name__}."
        )
    broker_client = getattr(broker, "client", None)
    if type(broker).__name__ == "RedisBroker" and broker_client is not None:
        return RedisLedger(broker_client, prefix=f"{getattr(broker, 'namespace', 'dramatiq')}:dramatiq-ray-webhooks")
    client = _redis_result_client(broker)
    if client is not None:
        return RedisLedger(client)
    if type(broker).__name__ != "StubBroker":
        logger.warning(
            "Webhooks found no Redis (neither the broker nor the result backend): exactly-one delivery holds only "
            "within this worker process. Pass Webhooks(ledger='redis://...') to share it between workers."
        )
    return MemoryLedger()


def _redis_result_client(broker: dramatiq.Broker) -> Any:
    """The Redis client of the broker's result backend (under a SpillingBackend too), or ``None``."""
    from dramatiq.results import Results as DramatiqResults

    for middleware in broker.middleware:
        if isinstance(middleware, DramatiqResults):
            backend = getattr(middleware.backend, "backend", middleware.backend)
            if type(backend).__name__ == "RedisBackend":
                return getattr(backend, "client", None)
    return None
