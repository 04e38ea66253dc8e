"""One webhook POST, with timeouts, a redirect policy and an answer the retry logic can act on.

The client is urllib3: it is already installed wherever this package is (Ray's dependencies pull it in through
``requests``) and is declared in ``install_requires`` so it stays so. It is well kept (the base of ``requests``
and ``botocore``), thread-safe with a connection pool, and gives what a webhook sender needs directly: separate
connect and read timeouts plus a total bound, certificate verification on by default, and redirects left to
the caller. httpx would do as well, but would add a dependency (and its transitive ones) for no gain in a
synchronous worker thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from .. import _otel
from ..errors import ConfigurationError

__all__ = ["Answer", "HttpSender", "check_url", "origin"]

#: How many same-origin redirects one attempt follows.
MAX_REDIRECTS = 3
#: How much of a response body is read (for the log line); the rest is discarded with the connection.
BODY_PREVIEW_BYTES = 512


@dataclass(frozen=True)
class Answer:
    """What one attempt got. ``kind`` is ``delivered`` (2xx), ``gone`` (410: stop), ``refused`` (a redirect to
    another origin: stop), or ``retry`` (anything else: another status, a timeout, a refused connection)."""

    kind: str
    status: int | None
    detail: str
    #: For metrics: ``2xx``, ``410``, ``3xx``/``4xx``/``5xx``, ``timeout``, ``connection`` or ``redirect``.
    label: str


def origin(url: str) -> tuple[str, str, int | None]:
    """The scheme, host and port of ``url`` (default ports made explicit)."""
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def url_problem(url: object, *, allow_http: bool) -> str | None:
    """What is wrong with ``url`` as a webhook URL, or ``None`` when it is an absolute https URL (or http with
    ``allow_http``). The one check of a webhook URL: :func:`check_url` (``Webhooks``, actor and message options)
    and the ``WEBHOOK_URL`` setting both use it. A URL is shown without its credentials, if it has any."""
    if not isinstance(url, str) or not url:
        return f"a webhook must be an https:// URL string, got {url!r}"
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}" if "@" in parts.netloc else url
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"a webhook must be an absolute https:// URL, got {shown!r}"
    if parts.username or parts.password:
        return "the webhook URL carries credentials; requests are signed with the Webhooks secrets instead"
    if parts.scheme == "http" and not allow_http:
        return (
            f"the webhook {shown!r} is plain http, so its payload and signature travel unencrypted. Use https, or "
            "pass allow_http=True to Webhooks (WEBHOOK_ALLOW_HTTP=true) for a trusted network"
        )
    return None


def check_url(url: object, *, allow_http: bool, where: str) -> str:
    """Return ``url`` when it is an absolute https URL (or http with ``allow_http``).

    Raises:
      ConfigurationError: it is not a string, not absolute, has no host, carries credentials, or is plain http
        without ``allow_http=True`` (see :func:`url_problem`).
    """
    problem = url_problem(url, allow_http=allow_http)
    if problem is not None:
        raise ConfigurationError(f"{where}: {problem}.")
    assert isinstance(url, str)
    return url


class HttpSender:
    """POSTs signed bodies over one thread-safe urllib3 pool.

    Parameters:
      connect_timeout: Seconds to wait for a connection.
      read_timeout: Seconds to wait for each read of the response; the whole request is bounded by the sum.
      allow_http: Whether plain-http targets (and redirects) are allowed.
    """

    def __init__(self, *, connect_timeout: float, read_timeout: float, allow_http: bool) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.allow_http = allow_http
        self._pool: Any = None
        self._lock = threading.Lock()

    @property
    def request_bound(self) -> float:
        """The longest one attempt can take, redirects included, in seconds."""
        return self.connect_timeout + self.read_timeout

    def _manager(self) -> Any:
        with self._lock:
            if self._pool is None:
                import urllib3

                self._pool = urllib3.PoolManager(num_pools=32, maxsize=8, block=False, retries=False)
            return self._pool

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        """POST ``body`` to ``url``, following up to three redirects that stay on the same origin (scheme, host
        and port), with the same method, body and headers. A redirect elsewhere is refused. The whole attempt,
        redirects included, ends within :attr:`request_bound` seconds.

        With OpenTelemetry, the attempt is a CLIENT span ``POST`` (HTTP semantic-convention attributes; the URL's
        path and query are left out) whose W3C context goes out in the ``traceparent`` header."""
        scheme, host, port = origin(url)
        attributes = {
            "http.request.method": "POST",
            "url.scheme": scheme,
            "server.address": host,
            "server.port": port or (443 if scheme == "https" else 80),
            "http.request.body.size": len(body),
        }
        with _otel.span("POST", kind="CLIENT", attributes=attributes) as span:
            carrier = _otel.current_carrier() if span is not None else None
            answer = self._post(url, body, {**headers, **carrier} if carrier else headers)
            if span is not None:
                if answer.status is not None:
                    span.set_attribute("http.response.status_code", answer.status)
                if answer.kind != "delivered":
                    from opentelemetry import trace

                    span.set_attribute("error.type", answer.label)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, answer.label))
            return answer

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        import urllib3

        deadline = time.monotonic() + self.request_bound
        target = url
        for _ in range(MAX_REDIRECTS + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Answer("retry", None, "timed out following redirects", "timeout")
            timeout = urllib3.Timeout(
                connect=min(self.connect_timeout, remaining), read=min(self.read_timeout, remaining), total=remaining
            )
            try:
                response = self._manager().request(
                    "POST",
                    target,
                    body=body,
                    headers=headers,
                    timeout=timeout,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                )
            except urllib3.exceptions.NewConnectionError as error:  # a subclass of ConnectTimeoutError
                return Answer("retry", None, f"could not connect ({_reason(error)})", "connection")
            except (urllib3.exceptions.TimeoutError, TimeoutError) as error:
                return Answer("retry", None, f"timed out ({type(error).__name__})", "timeout")
            except (urllib3.exceptions.HTTPError, OSError) as error:
                return Answer("retry", None, f"could not connect ({_reason(error)})", "connection")
            status = int(response.status)
            location = response.headers.get("Location")
            preview = _drain(response)
            if 300 <= status < 400 and location:
                following = urljoin(target, location)
                if origin(following) != origin(target):
                    return Answer(
                        "refused",
                        status,
                        f"redirected to another origin ({origin(following)[0]}://{origin(following)[1]}); "
                        "webhooks follow redirects only on the same scheme, host and port",
                        "redirect",
                    )
                target = following
                continue
            if 200 <= status < 300:
                return Answer("delivered", status, f"answered {status}", "2xx")
            if status == 410:
                return Answer("gone", status, "answered 410 Gone", "410")
            return Answer("retry", status, f"answered {status} {preview}".rstrip(), f"{status // 100}xx")
        return Answer("retry", None, f"more than {MAX_REDIRECTS} redirects", "redirect")


def _drain(response: Any) -> str:
    """Read a little of the body for the log, then drop the connection rather than read an unbounded body."""
    try:
        data = response.read(BODY_PREVIEW_BYTES)
        complete = response.read(1) == b""
    except Exception:
        data, complete = b"", False
    if complete:
        response.release_conn()
    else:
        response.close()
        response.release_conn()
    text = data.decode("utf-8", "replace").strip().replace("\n", " ")
    return f"({text[:200]})" if text else ""


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error) or type(error).__name__
