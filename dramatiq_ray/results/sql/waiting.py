"""Blocking reads: how a thread waits for a result to be stored.

PostgreSQL: one LISTEN connection per backend (per process), held by a daemon thread that dispatches each
NOTIFY to the threads waiting for its key. The payload is ``<key> <base64 of the stored bytes>``, or only the key
when the result is too large for a notification (8,000 bytes): then the woken waiter reads it. A waiter
registers, reads once, and then sleeps on its event until a notification for its key, or the deadline: no polling
loop per waiter. The listener wakes every waiter whenever it (re)connects, so a result stored while it was not
listening is read then.

SQLite has no notifications: a waiter reads again after pauses that double from 2 ms up to ``poll_cap``.
Both wait no longer than the deadline (a pause is cut to what remains).
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["NOTIFY_DATA_LIMIT", "Listener", "Read", "Waiter", "Waiters", "notify_payload", "poll", "wait_notified"]

logger = logging.getLogger(__name__)

#: The first pause between two reads on SQLite, in seconds.
_FIRST_POLL = 0.002
#: The pauses between two reads while the database is unreachable on PostgreSQL, in seconds: doubling up to the cap.
_RETRY_FIRST, _RETRY_CAP = 0.05, 1.0
#: The listener's reconnection pauses, in seconds: doubling from the first up to the cap.
_RECONNECT_FIRST, _RECONNECT_CAP = 0.05, 2.0
#: How often the listener thread looks whether it was asked to stop, in seconds (a wait on its socket, no query).
_STOP_CHECK = 0.25


#: The largest stored result (encoded bytes) a notification carries; PostgreSQL's payload limit is 8,000 bytes.
NOTIFY_DATA_LIMIT = 5_000


def notify_payload(data: bytes) -> str:
    """What a notification carries after the key: the stored bytes in base64, or nothing when too large."""
    return base64.b64encode(data).decode("ascii") if len(data) <= NOTIFY_DATA_LIMIT else ""


class Waiter:
    """One waiting thread: its event, and the stored bytes when a notification carried them."""

    __slots__ = ("data", "event")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.data: bytes | None = None


class Waiters:
    """The threads waiting for each key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, set[Waiter]] = {}

    def register(self, key: str) -> Waiter:
        waiter = Waiter()
        with self._lock:
            self._by_key.setdefault(key, set()).add(waiter)
        return waiter

    def unregister(self, key: str, waiter: Waiter) -> None:
        with self._lock:
            waiters = self._by_key.get(key)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._by_key[key]

    def wake(self, key: str, data: bytes | None = None) -> None:
        with self._lock:
            waiters = list(self._by_key.get(key, ()))
        for waiter in waiters:
            if data is not None:
                waiter.data = data
            waiter.event.set()

    def dispatch(self, payload: str) -> None:
        """Wake the waiters a notification names, handing them the stored bytes when it carries them."""
        key, _, encoded = payload.rpartition(" ")
        if not key:  # only a key
            self.wake(encoded)
            return
        try:
            data: bytes | None = base64.b64decode(encoded, validate=True) if encoded else None
        except (binascii.Error, ValueError):
            data = None
        self.wake(key, data)

    def wake_all(self) -> None:
        with self._lock:
            waiters = [waiter for waiters in self._by_key.values() for waiter in waiters]
        for waiter in waiters:
            waiter.event.set()


class Listener:
    """A daemon thread holding one ``LISTEN channel`` connection and waking the waiters of each notified key.

    ``connect`` returns a new psycopg connection in autocommit mode. :meth:`start` returns once the thread runs;
    a waiter never waits for the first LISTEN: the listener wakes everyone once it listens.
    """

    def __init__(self, connect: Callable[[], Any], channel: str, waiters: Waiters, describe: str) -> None:
        self._connect = connect
        self._channel = channel
        self._waiters = waiters
        self._describe = describe
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"dramatiq-ray-listen-{self._channel}", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        pause = _RECONNECT_FIRST
        failures = 0
        while not self._stop.is_set():
            try:
                connection = self._connect()
                try:
                    connection.execute(f'LISTEN "{self._channel}"')
                    self.listening.set()
                    if failures:
                        logger.info("Listening for results on %s again.", self._describe)
                    failures, pause = 0, _RECONNECT_FIRST
                    # Results stored while nobody listened are read by the waiters now.
                    self._waiters.wake_all()
                    while not self._stop.is_set():
                        for notify in connection.notifies(timeout=_STOP_CHECK):
                            self._waiters.dispatch(notify.payload)
                finally:
                    self.listening.clear()
                    connection.close()
            except Exception as error:
                if self._stop.is_set():
                    return
                failures += 1
                log = logger.warning if failures == 1 else logger.debug
                log(
                    "The result listener lost %s (%s: %s); blocked get_result calls wait until it reconnects "
                    "(retrying in %.2f s).",
                    self._describe,
                    type(error).__name__,
                    error,
                    pause,
                )
                self._stop.wait(pause)
                pause = min(pause * 2, _RECONNECT_CAP)


def sleep_until(deadline: float, pause: float) -> None:
    """Sleep ``pause`` seconds, but not past ``deadline`` (a ``time.monotonic()`` value)."""
    time.sleep(max(0.0, min(pause, deadline - time.monotonic())))


#: One read of a key: the stored bytes (``None``: not stored yet, or the read failed) and the transient error that
#: made it fail, if any.
Read = Callable[[str], tuple[bytes | None, BaseException | None]]


def poll(read: Read, key: str, deadline: float, cap: float) -> tuple[bytes | None, BaseException | None]:
    """Read ``key`` until it is stored or ``deadline`` (a ``time.monotonic()`` value) passes, pausing between
    reads from 2 ms, doubling, up to ``cap`` seconds (SQLite). Returns the bytes, or ``None`` and the last read's
    error (``None``: the outcome is not stored yet)."""
    pause = _FIRST_POLL
    while True:
        data, error = read(key)
        if data is not None:
            return data, None
        if time.monotonic() >= deadline:
            return None, error
        sleep_until(deadline, pause)
        pause = min(pause * 2, cap)


def wait_notified(waiters: Waiters, read: Read, key: str, deadline: float) -> tuple[bytes | None, BaseException | None]:
    """Read ``key`` once, then again only when a notification for it wakes this thread (PostgreSQL), until it is
    stored or ``deadline`` passes; returns as :func:`poll` does."""
    waiter = waiters.register(key)
    event = waiter.event
    pause = _RETRY_FIRST
    try:
        while True:
            event.clear()
            if waiter.data is not None:
                return waiter.data, None
            data, error = read(key)
            if data is not None:
                return data, None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, error
            if error is not None:
                # The listener wakes everyone when it reconnects; read again anyway after a pause.
                event.wait(min(remaining, pause))
                pause = min(pause * 2, _RETRY_CAP)
            else:
                event.wait(remaining)
    finally:
        waiters.unregister(key, waiter)
