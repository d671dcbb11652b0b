"""Calls to Databento's historical API, retried where asking again can help.

Rate limits (429), server errors (5xx), cut connections and streams are retried with
exponential backoff (or the server's ``Retry-After``); a refusal (401, 403, other 4xx) or a
TLS failure is one clear error at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, Protocol, TypeVar

import requests
from databento.common.error import BentoClientError, BentoError, BentoHttpError, BentoServerError

from vpbatch.errors import ConfigError, DownloadError, one_line

#: Environment variable holding the Databento API key (the official client's convention).
API_KEY_ENV: Final = "DATABENTO_API_KEY"
#: Longest wait between two attempts, whatever ``Retry-After`` or the backoff say (seconds).
MAX_BACKOFF: Final = 60.0

T = TypeVar("T")


class RetryPolicy(Protocol):
    """How often to ask again and how long to wait first (``DownloadRequest`` is one)."""

    @property
    def retries(self) -> int: ...

    @property
    def backoff(self) -> float: ...


class Retryable(Exception):
    """A failure worth another attempt (rate limit, server error, cut stream, short file)."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


def retry_after(exc: BentoHttpError) -> float | None:
    """The server's ``Retry-After`` in seconds, if it sent one."""
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def server_detail(exc: BentoHttpError) -> str:
    """The server's own sentence: ``detail.message`` when structured, else ``detail``."""
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    detail = body.get("detail")
    if isinstance(detail, dict) and detail.get("message"):
        return one_line(detail["message"])
    return one_line(exc.message or "no detail")


def http_error(exc: BentoHttpError, what: str) -> DownloadError | ConfigError:
    """Our error for a refusal that asking again will not change (401, 403, other 4xx)."""
    detail = server_detail(exc)
    if exc.http_status == 401:
        return ConfigError(f"{API_KEY_ENV} was rejected by Databento "
                           f"(HTTP 401: {detail})")
    if exc.http_status == 403:
        return DownloadError(f"{what}: not permitted for this API key (HTTP 403: {detail})")
    return DownloadError(f"{what}: Databento refused the request (HTTP {exc.http_status}: "
                         f"{detail})")


def call_with_retries(fn: Callable[[], T], what: str, req: RetryPolicy,
                      attempts: list[int] | None = None) -> T:
    """``fn()`` with retries on 429/5xx/connection errors; other failures become our errors.

    ``attempts[0]``, when given, says how many attempts were made.
    """
    for attempt in range(req.retries + 1):
        if attempts is not None:
            attempts[0] = attempt + 1
        try:
            try:
                return fn()
            except BentoServerError as exc:
                raise Retryable(f"HTTP {exc.http_status}: {one_line(exc.message)}",
                                retry_after(exc)) from None
            except BentoClientError as exc:
                if exc.http_status == 429:
                    raise Retryable("HTTP 429: rate limited", retry_after(exc)) from None
                raise http_error(exc, what) from None
            except requests.exceptions.SSLError as exc:
                # A certificate problem does not go away by asking again.
                raise DownloadError(f"{what}: TLS failed ({one_line(exc)})") from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise Retryable(f"connection failed ({one_line(exc)})") from None
            except BentoError as exc:
                # The client wraps a stream cut mid-file as "Error streaming response: …".
                raise Retryable(one_line(exc)) from None
        except Retryable as exc:
            if attempt == req.retries:
                raise DownloadError(f"{what}: gave up after {attempt + 1} attempt(s): "
                                    f"{exc}") from None
            wait = exc.wait if exc.wait is not None else req.backoff * 2**attempt
            time.sleep(min(wait, MAX_BACKOFF))
    raise AssertionError("unreachable")  # pragma: no cover
