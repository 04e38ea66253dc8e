"""A TCP proxy on a loopback port in front of a real server, that a test cuts and restores: the database "goes
down" for the clients behind it (open connections are closed, new ones are refused) while the server runs on."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests._services import free_port


class CuttableProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``. :meth:`cut` closes every connection and refuses new ones
    until :meth:`restore`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._down = False
        self._closed = False
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._accept, name="cuttable-proxy", daemon=True)
        self.cuts = 0
        #: Connections refused while cut.
        self.refused = 0
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                down = self._down
            if down:
                client.close()
                with self._lock:
                    self.refused += 1
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                self._close(end)

    def _close(self, end: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(end)
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
        end.close()

    @property
    def open_connections(self) -> int:
        """The client connections forwarded now."""
        with self._lock:
            return len(self._sockets) // 2

    def cut(self) -> None:
        with self._lock:
            self._down = True
            open_sockets = list(self._sockets)
        for end in open_sockets:
            self._close(end)
        self.cuts += 1

    def restore(self) -> None:
        with self._lock:
            self._down = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()
        self._thread.join(5)
