"""aria.retry: which errors are retried and how long it waits, with the errors the libraries raise."""

from __future__ import annotations

import asyncio

import httpx
import httpx2
import openai
import pytest
from huggingface_hub.errors import HfHubHTTPError

from aria.retry import backoff_s, is_transient, with_retries, with_retries_async

REQUEST2 = httpx2.Request("POST", "https://hub.test/api/repos/create")


def flaky(errors: list[BaseException], calls: list[int]):
    """A call that raises `errors` in turn, then returns "ok"."""

    def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return call


@pytest.mark.parametrize(
    "error",
    [
        httpx2.ConnectError("refused", request=REQUEST2),
        httpx2.RemoteProtocolError("Server disconnected without sending a response."),
        httpx2.ReadTimeout("read timed out", request=REQUEST2),
        httpx.ConnectError("refused"),
        ConnectionResetError("reset by peer"),
        TimeoutError("timed out"),
        openai.APIConnectionError(request=httpx.Request("POST", "http://aria.test")),
    ],
    ids=lambda e: type(e).__module__.split(".")[0] + "." + type(e).__name__,
)
def test_lost_connections_are_transient(error: BaseException) -> None:
    assert is_transient(error)


def test_httpx2_errors_are_neither_httpx_nor_builtin_connection_errors() -> None:
    # Why the policy names httpx2: huggingface_hub 2.4 raises these, and older checks missed them.
    error = httpx2.ConnectError("refused")
    assert not isinstance(error, httpx.TransportError | ConnectionError)


@pytest.mark.parametrize(
    ("status", "expected"), [(500, True), (502, True), (503, True), (400, False), (429, False)]
)
def test_hub_answers_are_transient_only_for_5xx(status: int, expected: bool) -> None:
    response = httpx2.Response(status, request=REQUEST2)
    assert is_transient(HfHubHTTPError("hub said no", response=response)) is expected


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug"),
        httpx2.UnsupportedProtocol("ftp://"),  # a wrong URL, not a lost link
    ],
)
def test_other_errors_are_not_transient(error: BaseException) -> None:
    assert not is_transient(error)


def test_a_dropped_httpx2_connection_is_retried_with_backoff() -> None:
    calls: list[int] = []
    waits: list[float] = []
    told: list[str] = []
    errors = [
        httpx2.RemoteProtocolError("Server disconnected without sending a response."),
        httpx2.ConnectError("refused"),
    ]
    result = with_retries(
        flaky(errors, calls),
        attempts=4,
        base_s=1.0,
        sleep=waits.append,
        on_retry=lambda error, wait: told.append(type(error).__name__),
    )
    assert result == "ok" and len(calls) == 3
    assert waits == [1.0, 2.0]
    assert told == ["RemoteProtocolError", "ConnectError"]


def test_retries_are_bounded_and_raise_the_last_error() -> None:
    calls: list[int] = []
    waits: list[float] = []
    errors = [httpx2.ConnectError(f"refused {i}") for i in range(5)]
    with pytest.raises(httpx2.ConnectError, match="refused 2"):
        with_retries(flaky(errors, calls), attempts=3, base_s=1.0, sleep=waits.append)
    assert len(calls) == 3 and waits == [1.0, 2.0]


def test_a_bug_is_raised_at_once() -> None:
    calls: list[int] = []
    waits: list[float] = []
    with pytest.raises(ValueError):
        with_retries(flaky([ValueError("bug")], calls), attempts=4, base_s=1.0, sleep=waits.append)
    assert len(calls) == 1 and waits == []


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(k, 2.0, max_s=8.0) for k in range(5)] == [2.0, 4.0, 8.0, 8.0, 8.0]


def test_attempts_below_one_name_the_argument() -> None:
    with pytest.raises(ValueError, match="attempts"):
        with_retries(lambda: None, attempts=0, base_s=1.0)


def test_the_async_loop_waits_the_same_backoff_and_obeys_retry_if() -> None:
    calls: list[int] = []
    waits: list[float] = []

    async def sleep(wait: float) -> None:
        waits.append(wait)

    async def call() -> str:
        return flaky([httpx2.ConnectError("refused"), httpx2.ConnectError("refused")], calls)()

    result = asyncio.run(with_retries_async(call, attempts=4, base_s=1.0, sleep=sleep))
    assert result == "ok" and len(calls) == 3 and waits == [1.0, 2.0]
    calls.clear()
    with pytest.raises(httpx2.ConnectError):
        asyncio.run(
            with_retries_async(call, attempts=4, base_s=1.0, sleep=sleep, retry_if=lambda e: False)
        )
    assert len(calls) == 1
