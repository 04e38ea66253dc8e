"""A real HTTP receiver on 127.0.0.1 (stdlib ``http.server`` in a thread) that records every request and answers
as each test scripts it: a status, a redirect, or a hang longer than the sender's read timeout. And the Standard
Webhooks reference verifier for Node.js (``standardwebhooks`` from npm), installed for the session."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests import _services

#: A Standard Webhooks secret (``whsec_`` and the base64 of a 32-byte key).
SECRET = "whsec_ZHJhbWF0aXEtcmF5IHRlc3Qga2V5IDAxMjM0NTY3ODk="
#: The npm package the Node.js tests verify with: the specification's reference library.
NODE_PACKAGE = "standardwebhooks@1"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    #: What the receiver answered: a status code, or "hang" when it never answered.
    answer: int | str
    #: When the request arrived (``time.monotonic()``).
    at: float


class Receiver:
    """Answers requests with the scripted actions, in order, then with ``default``.

    Actions: an ``int`` status; ``("redirect", status, location)``; ``"hang"`` (no answer until the test ends).
    """

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.default: Any = 200
        self._script: list[Any] = []
        self._changed = threading.Condition()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._changed:
                    action = receiver._script.pop(0) if receiver._script else receiver.default
                if action == "hang":
                    receiver._record(self, body, "hang")
                    receiver._release.wait(60)
                    return
                if isinstance(action, tuple):
                    _, status, location = action
                    self.send_response(status)
                    self.send_header("Location", location)
                else:
                    status = int(action)
                    self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver._record(self, body, status)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def _record(self, handler: BaseHTTPRequestHandler, body: bytes, answer: int | str) -> None:
        with self._changed:
            self.requests.append(Received(handler.path, dict(handler.headers.items()), body, answer, time.monotonic()))
            self._changed.notify_all()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, *actions: Any) -> None:
        with self._changed:
            self._script.extend(actions)

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        """Block until ``count`` requests were answered; fail the test when they were not within ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"the receiver got {len(self.requests)} request(s), expected {count}")
            return list(self.requests)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def other_receiver() -> Iterator[Receiver]:
    """A second receiver: another origin (another port)."""
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def node_standardwebhooks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with ``node_modules/standardwebhooks`` (``npm install`` into a session temp dir): a script copied
    there imports the package. Skipped with the reason when Node.js, npm or the registry is missing, failed instead
    where services are required (CI)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _services.unavailable("Node.js and npm are needed to verify webhooks with the standardwebhooks npm package")
    assert npm is not None
    where = tmp_path_factory.mktemp("npm-standardwebhooks")
    try:
        installed = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--no-package-lock", NODE_PACKAGE],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        _services.unavailable(f"npm install {NODE_PACKAGE} did not finish within 300 s")
    if installed.returncode != 0 or not (where / "node_modules" / "standardwebhooks" / "package.json").is_file():
        _services.unavailable(f"npm install {NODE_PACKAGE} failed: {installed.stderr.strip()[-500:]}")
    return where
