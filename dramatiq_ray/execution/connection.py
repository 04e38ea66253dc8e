"""Attaching a Dramatiq worker process to Ray: once, after the fork, under a lock; again after a lost connection.

Ray is imported only inside functions here: a process that imports ``dramatiq_ray`` and then forks (the
``dramatiq`` CLI's parent) must never have touched Ray.

Where the address comes from: the middleware's explicit ``address``, else ``RAY_ADDRESS``, else the embedded
default. Under the ``dramatiq`` CLI the embedded default is one Ray head shared by every worker process of that
CLI, started by :func:`~.shared_head.run_shared_head` (a fork function of the middleware) and stopped with the
workers; an in-process ``Worker`` starts a private local Ray instead.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import RayUnavailableError
from .ray_compat import reload_auth_config
from .shared_head import wait_for_shared_head

logger = logging.getLogger(__name__)

#: How long each wait for the connection's lock (or for other threads to leave a lost connection) blocks, in
#: seconds: between two, a time limit or shutdown interrupt lands.
LOCK_SLICE = 0.2
#: How long a re-attach waits for other threads to leave the lost connection before shutting it down, in seconds.
DRAIN_TIMEOUT = 30.0


class RayRuntime:
    """The connection of one worker process to Ray.

    Parameters:
      address: Ray address (``"host:port"``, ``"auto"``, ``"local"``, ``"ray://host:10001"``), or ``None`` for
        ``RAY_ADDRESS``, else the embedded default.
      init_kwargs: extra keyword arguments for ``ray.init``.
    """

    def __init__(self, *, address: str | None = None, init_kwargs: dict[str, Any] | None = None) -> None:
        self.address = address
        self.init_kwargs = dict(init_kwargs or {})
        self.under_cli = False
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._owned = False
        self._stale = False
        self._generation = 0
        # Work in flight per connection generation, and the generations this process will shut down (lost, and
        # started by this process): their waiters leave cleanly before ray.shutdown() runs under them.
        self._flight = threading.Condition()
        self._in_flight: dict[int, int] = {}
        self._closing: set[int] = set()

    def resolved_address(self) -> str | None:
        """The address to attach to, or ``None`` for the embedded default."""
        return self.address or os.environ.get("RAY_ADDRESS") or None

    @property
    def attached(self) -> bool:
        return self._pid == os.getpid() and not self._stale

    @property
    def owned(self) -> bool:
        """Whether this process called ``ray.init`` itself (and so shuts Ray down at worker shutdown)."""
        return self._owned and self._pid == os.getpid()

    def attach(self) -> int:
        """Attach this process to Ray unless it already is; return the connection's generation number.

        The lock is taken in slices, so a time limit or shutdown lands in a thread waiting for another thread's
        attach (which may wait minutes for the shared head).

        Raises:
          RayUnavailableError: when Ray cannot be reached.
        """
        if self.attached:
            return self._generation
        with self._locked():
            if self.attached:
                return self._generation
            keep_dramatiq_signal_handling()  # before Ray is imported: Ray reads it then
            import ray

            reattach = self._pid == os.getpid() and self._stale and self._owned
            if reattach:
                logger.warning("Re-attaching to Ray after a lost connection.")
                self._drain(self._generation)
                with contextlib.suppress(Exception):
                    ray.shutdown()
            if ray.is_initialized() and not reattach:
                # Someone else in this process (an application, a test session) owns Ray: use it, never stop it.
                self._owned = False
            else:
                self._init(ray)
                self._owned = True
            with self._flight:
                self._pid = os.getpid()
                self._stale = False
                self._generation += 1
                return self._generation

    def enter(self) -> int:
        """Attach (see :meth:`attach`) and count one piece of work in flight on the connection; return its
        generation, to pass to :meth:`leave` when the work is over (and to :meth:`usable` meanwhile)."""
        while True:
            generation = self.attach()
            with self._flight:
                if generation == self._generation and generation not in self._closing:
                    self._in_flight[generation] = self._in_flight.get(generation, 0) + 1
                    return generation

    def leave(self, generation: int) -> None:
        """The work counted by :meth:`enter` on ``generation`` is over."""
        with self._flight:
            left = self._in_flight.get(generation, 0) - 1
            if left > 0:
                self._in_flight[generation] = left
            else:
                self._in_flight.pop(generation, None)
            self._flight.notify_all()

    def usable(self, generation: int) -> bool:
        """Whether work on ``generation`` may go on: not when that connection was lost and this process will shut
        it down (its tasks die with it), so the waiter fails cleanly, and retryably, instead."""
        return generation not in self._closing

    def _drain(self, generation: int, timeout: float | None = None) -> None:
        """Wait, in slices, until no work is in flight on ``generation`` (its waiters notice :meth:`usable` turn
        false within a wait slice), at most ``timeout`` seconds."""
        deadline = time.monotonic() + (DRAIN_TIMEOUT if timeout is None else timeout)
        with self._flight:
            while self._in_flight.get(generation, 0) > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning(
                        "Shutting the lost Ray connection down with %d message(s) still on it.",
                        self._in_flight[generation],
                    )
                    return
                self._flight.wait(min(LOCK_SLICE, remaining))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        while not self._lock.acquire(timeout=LOCK_SLICE):
            pass
        try:
            yield
        finally:
            self._lock.release()

    def _init(self, ray: Any) -> None:
        address = self.resolved_address()
        if address is None:
            address = wait_for_shared_head(os.getppid()) if self.in_cli_worker() else "local"
        prepare_auth(address)
        kwargs = {"logging_level": logging.WARNING, **self.init_kwargs, "address": address}
        logger.info("Attaching to Ray at %s.", address)
        try:
            # ray.init waits minutes for a head that does not answer: refuse at once, the message is retried.
            check_reachable(address)
            with _keep_signal_handlers():
                ray.init(**kwargs)
        except (ConnectionError, RuntimeError, TimeoutError, OSError) as error:
            with contextlib.suppress(Exception):
                ray.shutdown()
            logger.error("Could not attach to Ray at %s: %s", address, error)
            raise RayUnavailableError(
                f"Could not attach to Ray at {address}: {error}. Check that the Ray head is running and reachable "
                "(ray status), or set RAY_ADDRESS / the middleware's address."
            ) from error

    def in_cli_worker(self) -> bool:
        return self.under_cli and multiprocessing.parent_process() is not None

    def names_local_node(self, text: str) -> bool:
        """Whether ``text`` (a Ray error) names the node this process is attached through. When that node died
        (a head killed and restarted), this process's connection is gone too, even though the error is not a
        connection error: every later task would wait forever on it."""
        try:
            import ray

            return str(ray.get_runtime_context().get_node_id()) in text
        except Exception:
            return True

    def lost(self, generation: int) -> None:
        """Mark the connection of ``generation`` as lost: the next :meth:`attach` connects again (after the work
        still in flight on it has left, when this process started that Ray and so shuts it down)."""
        with self._flight:
            if generation == self._generation and self._pid == os.getpid():
                self._stale = True
                if self._owned:
                    self._closing.add(generation)
                self._flight.notify_all()

    def detach(self) -> None:
        """Shut Ray down in this process, only if this process started it."""
        with self._locked():
            if self._owned and self._pid == os.getpid():
                import ray

                logger.info("Detaching from Ray.")
                with contextlib.suppress(Exception):
                    ray.shutdown()
            self._pid = None
            self._owned = False
            self._stale = False


class _DropSigtermNotice(logging.Filter):
    """``ray.init`` outside the main thread warns that it did not install its SIGTERM handler: in a Dramatiq
    worker that is what we want, so the warning would only mislead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


_SIGTERM_NOTICE_FILTER = _DropSigtermNotice()


@contextlib.contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """``ray.init`` installs a SIGTERM handler that exits at once; Dramatiq's graceful shutdown needs its own."""
    if threading.current_thread() is not threading.main_thread():
        ray_worker_logger = logging.getLogger("ray._private.worker")
        ray_worker_logger.addFilter(_SIGTERM_NOTICE_FILTER)
        try:
            yield
        finally:
            ray_worker_logger.removeFilter(_SIGTERM_NOTICE_FILTER)
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def keep_dramatiq_signal_handling() -> None:
    """Ray's drivers install a C-level failure signal handler that also catches SIGTERM and, when ``ray.init``
    runs outside the main thread, cannot be replaced from Python; it would end the worker process in the middle
    of Dramatiq's graceful shutdown. A Dramatiq worker keeps its own SIGTERM handling unless the user asked for
    Ray's (``RAY_DISABLE_FAILURE_SIGNAL_HANDLER=0``). Ray reads the variable when it is first imported, so this
    runs before ``import ray``; a process that imported Ray earlier keeps Ray's handler (logged)."""
    if os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1") == "1" and "ray" in sys.modules:
        logger.debug("Ray was imported before dramatiq-ray attached; its failure signal handler stays installed.")


#: How long the reachability check waits for the head's port to accept a connection, in seconds.
REACHABLE_TIMEOUT = 5.0


def check_reachable(address: str, timeout: float = REACHABLE_TIMEOUT) -> None:
    """Raise ``ConnectionError`` when ``address`` is an explicit ``host:port`` (or ``ray://host:port``) where
    nothing accepts a TCP connection; other addresses (``"local"``, ``"auto"``) are left to ``ray.init``."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(f"nothing answers at {target} ({error})") from None


def prepare_auth(address: str) -> None:
    """Ray 2.5x+ heads started with ``ray start`` use token authentication; a driver (or Ray Client) attaching
    to one must say so. Set ``RAY_AUTH_MODE=token`` when a token is available and nothing was chosen."""
    if address == "local" or "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.exists():
        os.environ["RAY_AUTH_MODE"] = "token"
        # Ray read its configuration when it was imported: make it read the environment again.
        reload_auth_config()
