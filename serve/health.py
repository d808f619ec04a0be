"""Check the live server: /health, then a guided diagnostic with each body.

    python -m serve.health                 # make health

Host, port, API key and served name come from aria.settings (VLLM_HOST, VLLM_PORT, VLLM_API_KEY,
VLLM_SERVED_NAME). The project's body (schema S) must come back schema-valid. The seed's body,
sent verbatim as ARIA's middle service does, must come back as JSON in the seed's key order; an
answer cut by max_tokens there is reported (the model does not meet the contract: benchmark it)
but does not fail the check, which is about the server: an untrained base model gets cut.
Exit codes say what failed:

    0  /health is OK and both guided diagnostics came back as guided JSON
    2  no server answers at VLLM_HOST:VLLM_PORT (start one with `make serve-ft`)
    3  the server answers but /health is not OK
    4  a guided diagnostic failed: HTTP error, or text that is not the schema's JSON (shown raw)

The last line printed is JSON, for scripts.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import httpx

from aria.domain import EXAMPLE_MEASUREMENTS
from aria.logs import setup_logging
from aria.prompts import diagnostic_request
from aria.schema import (
    FIELD_ORDER,
    SEED_DIAGNOSTIC_SCHEMA,
    conforms_to_schema,
    is_json_prefix,
    parse_diagnostic,
)
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


def check(settings: Settings, timeout_s: float = 60.0) -> HealthResult:
    """Run both checks against the configured server; never raises for a server-side failure."""
    root = settings.root_url
    unhealthy = _health_endpoint(root, timeout_s)
    if unhealthy is not None:
        return unhealthy
    project = _guided_call(settings, "project", root, timeout_s)
    if isinstance(project, HealthResult):
        return project
    text, _, latency_s = project
    try:
        diagnostic = parse_diagnostic(text or "")
    except ValueError as error:
        return HealthResult(
            EXIT_DIAGNOSTIC_FAILED,
            "the guided diagnostic is not schema-valid JSON (was the server started with the "
            f"xgrammar structured-outputs config?)\nraw text: {text!r}\nwhy: {error}",
            {"url": root, "raw": text},
        )
    seed = _seed_body(settings, root, timeout_s)
    if isinstance(seed, HealthResult):
        return seed
    seed_details, seed_note = seed
    return HealthResult(
        EXIT_OK,
        f"OK: {root}/health and a guided diagnostic in {latency_s:.2f} s "
        f"({diagnostic.pathologie}, {diagnostic.confiance}); {seed_note}",
        {
            "url": root,
            "latency_s": round(latency_s, 4),
            "diagnostic": diagnostic.model_dump(),
            "seed_body": seed_details,
        },
    )


def _health_endpoint(root: str, timeout_s: float) -> HealthResult | None:
    """None when {root}/health answers 200, else the failure: nothing answers, or not 200."""
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
    return None


def _seed_body(settings: Settings, root: str, timeout_s: float) -> HealthResult | tuple[dict, str]:
    """The seed's body through the guided call: its details and the summary's note, or the
    failure when the text is not its schema's JSON in the seed's order."""
    seed = _guided_call(settings, "seed", root, timeout_s)
    if isinstance(seed, HealthResult):
        return seed
    seed_text, finish_reason, seed_latency_s = seed
    complete = finish_reason == "stop"
    valid = is_json_prefix(seed_text or "", FIELD_ORDER) and (
        not complete or conforms_to_schema(json.loads(seed_text), SEED_DIAGNOSTIC_SCHEMA)
    )
    if not valid:
        return HealthResult(
            EXIT_DIAGNOSTIC_FAILED,
            "the seed's body came back as text that is not its schema's JSON in the order "
            f"{', '.join(FIELD_ORDER)} (was the server started with the xgrammar "
            f"structured-outputs config?)\nraw text: {seed_text!r}",
            {"url": root, "raw": seed_text},
        )
    seed_details = {
        "latency_s": round(seed_latency_s, 4),
        "finish_reason": finish_reason,
        "complete": complete,
        "answer": json.loads(seed_text) if complete else seed_text,
    }
    seed_note = (
        f"the seed's body in {seed_latency_s:.2f} s"
        if complete
        else "the seed's body was CUT by max_tokens (finish_reason length): this model does not "
        "meet the contract; `make benchmark` measures how often"
    )
    return seed_details, seed_note


def _guided_call(
    settings: Settings, body: str, root: str, timeout_s: float
) -> tuple[str | None, str | None, float] | HealthResult:
    """(content, finish_reason, latency in s) of the example's diagnostic with `body`, or the
    failed HealthResult naming the cause."""
    request = diagnostic_request(EXAMPLE_MEASUREMENTS, settings.vllm_served_name, body=body)
    headers = {"Authorization": f"Bearer {settings.api_key_value()}"}
    started = time.perf_counter()
    try:
        response = httpx.post(
            f"{settings.base_url}/chat/completions",
            json=request,
            headers=headers,
            timeout=timeout_s,
        )
    except httpx.HTTPError as error:
        return HealthResult(
            EXIT_DIAGNOSTIC_FAILED,
            f"the guided diagnostic request ({body} body) failed: {type(error).__name__}: {error}",
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
            f"the guided diagnostic ({body} body) answered HTTP {response.status_code}{hint}: "
            f"{response.text[:500]}",
            {"url": root, "status": response.status_code},
        )
    try:
        choice = response.json()["choices"][0]
        return choice["message"]["content"], choice.get("finish_reason"), latency_s
    except (ValueError, KeyError, IndexError, TypeError):
        return HealthResult(
            EXIT_DIAGNOSTIC_FAILED,
            f"the server's answer is not an OpenAI chat completion: {response.text[:500]}",
            {"url": root},
        )


def main(cfg: HealthConfig, settings: Settings) -> int:
    """Print the check's outcome for people, then one JSON line; return its exit code."""
    result = check(settings, cfg.timeout_s)
    print(result.message, flush=True)
    print(
        json.dumps(
            {"ok": result.code == EXIT_OK, "code": result.code, **result.details},
            ensure_ascii=False,
        )
    )
    return result.code


def parse_args(argv: list[str] | None = None) -> HealthConfig:
    """Command-line flags → HealthConfig."""
    parser = argparse.ArgumentParser(description="/health and one guided diagnostic")
    parser.add_argument("--timeout-s", type=float, default=HealthConfig.timeout_s)
    return HealthConfig(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    raise SystemExit(main(parse_args(), settings))
