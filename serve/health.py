"""Check the live server: /health, then one real guided diagnostic that must validate.

    python -m serve.health                 # make health

Host, port, API key and served name come from aria.settings (VLLM_HOST, VLLM_PORT, VLLM_API_KEY,
VLLM_SERVED_NAME). Exit codes say what failed:

    0  /health is OK and the guided diagnostic parses and validates against aria.schema
    2  no server answers at VLLM_HOST:VLLM_PORT (start one with `make serve-ft`)
    3  the server answers but /health is not OK
    4  the guided diagnostic failed: HTTP error, or text that is not schema-valid JSON (shown raw)

The last line printed is JSON, for scripts.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import httpx

from aria.domain import EXAMPLE_PROFILE
from aria.prompts import diagnostic_request
from aria.schema import parse_diagnostic
from aria.settings import Settings, get_settings

EXIT_OK = 0
EXIT_DOWN = 2
EXIT_UNHEALTHY = 3
EXIT_DIAGNOSTIC_FAILED = 4


@dataclass
class HealthConfig:
    """How long to wait for each of the two calls."""

    timeout_s: float = 60.0


@dataclass
class HealthResult:
    """The outcome of a check: an exit code, a sentence for people, and details for scripts."""

    code: int
    message: str
    details: dict


def root_url(settings: Settings) -> str:
    """http://host:port of the configured server (where /health lives)."""
    return settings.base_url.removesuffix("/v1")


def check(settings: Settings, timeout_s: float = 60.0) -> HealthResult:
    """Run both checks against the configured server; never raises for a server-side failure."""
    root = root_url(settings)
    try:
        health = httpx.get(f"{root}/health", timeout=min(timeout_s, 10.0))
    except httpx.HTTPError as error:
        return HealthResult(
            EXIT_DOWN,
            f"no vLLM server answers at {root} ({type(error).__name__}): start one with "
            "`make serve-ft` (or `make serve` for the base model), or fix VLLM_HOST/VLLM_PORT",
            {"url": root},
        )
    if health.status_code != 200:
        return HealthResult(
            EXIT_UNHEALTHY,
            f"{root}/health answered HTTP {health.status_code}: {health.text[:500]!r}; "
            "see the server log in data/logs/",
            {"url": root, "status": health.status_code},
        )
    body = diagnostic_request(EXAMPLE_PROFILE, settings.vllm_served_name)
    headers = {"Authorization": f"Bearer {settings.api_key_value()}"}
    started = time.perf_counter()
    try:
        response = httpx.post(
            f"{settings.base_url}/chat/completions", json=body, headers=headers, timeout=timeout_s
        )
    except httpx.HTTPError as error:
        return HealthResult(
            EXIT_DIAGNOSTIC_FAILED,
            f"the guided diagnostic request failed: {type(error).__name__}: {error}",
            {"url": root},
        )
    latency_s = time.perf_counter() - started
    if response.status_code != 200:
        hint = {
            401: " (check VLLM_API_KEY: it must be the server's key)",
            404: f" (check VLLM_SERVED_NAME={settings.vllm_served_name})",
        }.get(response.status_code, "")
        return HealthResult(
            EXIT_DIAGNOSTIC_FAILED,
            f"the guided diagnostic answered HTTP {response.status_code}{hint}: "
            f"{response.text[:500]}",
            {"url": root, "status": response.status_code},
        )
    try:
        text = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return HealthResult(
            EXIT_DIAGNOSTIC_FAILED,
            f"the server's answer is not an OpenAI chat completion: {response.text[:500]}",
            {"url": root},
        )
    try:
        diagnostic = parse_diagnostic(text or "")
    except ValueError as error:
        return HealthResult(
            EXIT_DIAGNOSTIC_FAILED,
            "the guided diagnostic is not schema-valid JSON (was the server started with the "
            f"xgrammar structured-outputs config?)\nraw text: {text!r}\nwhy: {error}",
            {"url": root, "raw": text},
        )
    return HealthResult(
        EXIT_OK,
        f"OK: {root}/health and a guided diagnostic in {latency_s:.2f} s "
        f"({diagnostic.pathologie}, {diagnostic.confiance})",
        {"url": root, "latency_s": round(latency_s, 4), "diagnostic": diagnostic.model_dump()},
    )


def main(cfg: HealthConfig) -> int:
    """Print the check's outcome for people, then one JSON line; return its exit code."""
    result = check(get_settings(), cfg.timeout_s)
    print(result.message, flush=True)
    print(
        json.dumps(
            {"ok": result.code == EXIT_OK, "code": result.code, **result.details},
            ensure_ascii=False,
        )
    )
    return result.code


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="/health and one guided diagnostic")
    parser.add_argument("--timeout-s", type=float, default=HealthConfig.timeout_s)
    raise SystemExit(main(HealthConfig(**vars(parser.parse_args()))))
