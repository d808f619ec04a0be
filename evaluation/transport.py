"""The benchmark's HTTP side: the /v1/models preflight and one streamed chat completion.

`send_chat` never raises: its outcome names what happened (ok, timeout, connection_error,
http_4xx, http_5xx, stream_error), so one failed request is recorded, not fatal. Only a connection
lost before any response came (refused, reset, closed with no answer) is tried again, with the
project's backoff (aria.retry): the server answered nothing, so a retry hides no answer. A
timeout, an error status or a stream cut after it began is recorded as it is, never re-sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from aria.retry import is_transient, with_retries_async
from evaluation.config import BenchmarkConfig, SetupError

CONNECT_ATTEMPTS = 3  # a request and two retries, as aria.client's
CONNECT_BACKOFF_S = 0.5


def preflight(cfg: BenchmarkConfig, api_key: str) -> None:
    """Check each target answers and lists its served name on /v1/models."""
    for t in cfg.targets:
        url = f"{t.base_url}/models"
        try:
            resp = httpx.get(url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
        except httpx.HTTPError as e:
            raise SetupError(
                f"{t.role}: endpoint {t.base_url} is down ({type(e).__name__}); start it "
                "(make serve-ft) or fix --target / VLLM_HOST / VLLM_PORT"
            ) from None
        if resp.status_code == 401:
            raise SetupError(f"{t.role}: {url} refused the API key: set VLLM_API_KEY")
        if resp.status_code != 200:
            raise SetupError(f"{t.role}: {url} answered HTTP {resp.status_code}")
        models = {m.get("id"): m for m in resp.json().get("data", [])}
        if t.served_name not in models:
            raise SetupError(
                f"{t.role}: {t.base_url} does not serve {t.served_name!r} (it serves "
                f"{', '.join(map(str, models)) or 'nothing'}): fix the served name in --target "
                "or VLLM_SERVED_NAME"
            )


class _Unanswered(Exception):
    """A connection lost before any response came; `outcome` is that attempt's."""

    def __init__(self, error: httpx.HTTPError, outcome: dict) -> None:
        super().__init__(str(error))
        self.error, self.outcome = error, outcome


def _worth_resending(error: BaseException) -> bool:
    """A transient connection error (aria.retry) before any response; a timeout is recorded as
    one (never wrapped in _Unanswered), a wrong URL is not transient."""
    return isinstance(error, _Unanswered) and is_transient(error.error)


async def send_chat(
    client: httpx.AsyncClient,
    url: str,
    body: dict,
    timeout_s: float,
    *,
    attempts: int = CONNECT_ATTEMPTS,
    backoff_s: float = CONNECT_BACKOFF_S,
) -> dict:
    """One streamed chat completion; never raises: the outcome says what happened.

    status: ok | timeout | connection_error | http_4xx | http_5xx | stream_error; finish_reason
    is the stream's (`stop`, or `length` when max_tokens cut the answer), None if none came.
    A connection lost before any response came is sent again, up to `attempts` in all;
    `attempts` in the outcome counts the tries.
    """
    body = body | {"stream": True, "stream_options": {"include_usage": True}}
    made = 0

    async def attempt() -> dict:
        nonlocal made
        made += 1
        return await _stream_once(client, url, body, timeout_s)

    try:
        out = await with_retries_async(
            attempt, attempts=attempts, base_s=backoff_s, retry_if=_worth_resending
        )
    except _Unanswered as lost:
        out = lost.outcome
    out["attempts"] = made
    return out


def _error_in_stream(chunk: dict) -> tuple[str, str] | None:
    """(status, error) of a request refused inside a 200 stream (vLLM reports it so), else None."""
    if "error" not in chunk:
        return None
    error = chunk["error"]
    code = (error or {}).get("code") if isinstance(error, dict) else None
    kind = {4: "http_4xx", 5: "http_5xx"}.get(int(code) // 100 if code else 0)
    return kind or "stream_error", str(error)[:300]


def _take_chunk(chunk: dict, out: dict[str, Any], parts: list[str], start: float) -> None:
    """One SSE chunk's usage, finish reason and content into `out` and `parts`; the first
    content sets ttft_ms."""
    if chunk.get("usage"):
        out["output_tokens"] = chunk["usage"].get("completion_tokens")
    for choice in chunk.get("choices", []):
        if choice.get("finish_reason"):
            out["finish_reason"] = choice["finish_reason"]
        delta = (choice.get("delta") or {}).get("content")
        if delta:
            if out["ttft_ms"] is None:
                out["ttft_ms"] = (time.perf_counter() - start) * 1000
            parts.append(delta)


async def _read_response(
    resp: httpx.Response, out: dict[str, Any], parts: list[str], start: float
) -> None:
    """The response of one try into `out`: an error status, or the stream's chunks until
    [DONE] or an error inside it."""
    out["http_status"] = resp.status_code
    if resp.status_code >= 400:
        text = (await resp.aread()).decode("utf-8", "replace")
        out["status"] = "http_5xx" if resp.status_code >= 500 else "http_4xx"
        out["error"] = text[:300]
        return
    async for line in resp.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        refused = _error_in_stream(chunk)
        if refused:
            out["status"], out["error"] = refused
            return
        _take_chunk(chunk, out, parts, start)


async def _stream_once(client: httpx.AsyncClient, url: str, body: dict, timeout_s: float) -> dict:
    """One try of send_chat; raises _Unanswered when the connection failed before the response's
    status line and headers came, the only failure worth sending again."""
    # The clock starts with each try: e2e_ms and ttft_ms never hold a retry's backoff wait.
    start = time.perf_counter()
    out: dict[str, Any] = {"status": "ok", "http_status": None, "content": None, "error": None}
    out |= {"e2e_ms": None, "ttft_ms": None, "output_tokens": None, "finish_reason": None}
    parts: list[str] = []
    answered = False  # the response began: from here on nothing is sent again

    async def consume() -> None:
        nonlocal answered
        async with client.stream("POST", url, json=body) as resp:
            answered = True
            await _read_response(resp, out, parts, start)

    try:
        await asyncio.wait_for(consume(), timeout_s)
    except TimeoutError:
        out["status"], out["error"] = "timeout", f"no complete answer within {timeout_s:g} s"
    except httpx.TimeoutException:
        out["status"], out["error"] = "timeout", f"no answer within {timeout_s:g} s"
    except httpx.HTTPError as e:  # refused connection, reset, protocol error
        out["status"], out["error"] = "connection_error", f"{type(e).__name__}: {e}"[:300]
        if not answered:
            out["e2e_ms"] = (time.perf_counter() - start) * 1000
            raise _Unanswered(e, out) from e
    except json.JSONDecodeError as e:
        out["status"], out["error"] = "stream_error", f"bad SSE chunk: {e}"
    out["e2e_ms"] = (time.perf_counter() - start) * 1000
    if out["status"] == "ok":
        out["content"] = "".join(parts)
    return out
