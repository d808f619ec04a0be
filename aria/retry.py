"""Retry with exponential backoff, and which errors are worth it: one policy for every network call.

    >>> from aria.retry import with_retries
    >>> with_retries(lambda: api.create_repo(...), attempts=4, base_s=2.0)   # waits 2, 4, 8 s

`with_retries_async` is the same loop for a coroutine (the benchmark's streaming client), with a
`retry_if` that may narrow which transient errors are worth a second try.

Worth retrying (`is_transient`): a connection that failed, dropped or timed out, and a 5xx answer.
Never retried: a 4xx (the request itself is wrong) and anything else (a bug, not the network).
huggingface_hub 2.4 and openai 3.x talk through httpx2, whose errors are neither httpx errors nor
ConnectionError; the transport errors of httpx2, httpx, openai and the standard library all count.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
MAX_BACKOFF_S = 8.0

# The transport errors huggingface_hub itself retries (utils/_http.py); the others of the family
# (UnsupportedProtocol, LocalProtocolError, ProxyError) are a wrong URL or setup, not a lost link.
TRANSIENT_TRANSPORT_NAMES: tuple[str, ...] = (
    "TimeoutException",
    "NetworkError",
    "RemoteProtocolError",
)


def transient_error_types() -> tuple[type[BaseException], ...]:
    """The exception classes of a lost or timed-out connection, from every loaded HTTP stack.

    A library that is not imported cannot have raised its error, so only loaded ones are looked up
    (this module imports none of them).
    """
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name in ("httpx2", "httpx"):
        module = sys.modules.get(module_name)
        if module is not None:
            types += [getattr(module, name) for name in TRANSIENT_TRANSPORT_NAMES]
    openai = sys.modules.get("openai")
    if openai is not None:
        types.append(openai.APIConnectionError)  # wraps the transport error; timeouts included
    return tuple(types)


def http_status_of(error: BaseException) -> int | None:
    """The HTTP status an error carries (openai's `status_code`, or its `response`'s), else None."""
    status = getattr(error, "status_code", None)
    if status is None:
        status = getattr(getattr(error, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def is_transient(error: BaseException) -> bool:
    """True for errors worth retrying: a connection that failed, dropped or timed out, or a 5xx."""
    if isinstance(error, transient_error_types()):
        return True
    status = http_status_of(error)
    return status is not None and status >= 500


def backoff_s(retry: int, base_s: float, max_s: float = MAX_BACKOFF_S) -> float:
    """The wait before retry number `retry` (0-based): base_s, 2·base_s, 4·base_s, ... at most max_s."""
    return min(base_s * 2**retry, max_s)


def with_retries(
    call: Callable[[], T],
    *,
    attempts: int,
    base_s: float,
    max_s: float = MAX_BACKOFF_S,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """Run `call` up to `attempts` times, waiting `backoff_s` after each transient error.

    The last error, or the first one that is not transient, is raised unchanged. `on_retry` is
    told the error and the wait before each retry (to print it, for instance).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:
            if attempt == attempts - 1 or not is_transient(error):
                raise
            wait = backoff_s(attempt, base_s, max_s)
            if on_retry is not None:
                on_retry(error, wait)
            sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises


async def with_retries_async(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    base_s: float,
    max_s: float = MAX_BACKOFF_S,
    retry_if: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Await `call()` up to `attempts` times, waiting `backoff_s` after each error `retry_if`
    accepts (is_transient by default); the last error, or the first it refuses, is raised."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(attempts):
        try:
            return await call()
        except Exception as error:
            if attempt == attempts - 1 or not retry_if(error):
                raise
            await sleep(backoff_s(attempt, base_s, max_s))
    raise AssertionError("unreachable")  # the loop returns or raises
