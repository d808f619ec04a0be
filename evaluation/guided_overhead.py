"""Server start time and the cost of guided JSON, in one run on one fresh server.

    python -m evaluation.guided_overhead --requests 30          # on VLLM_MODEL or the base

Starts a vLLM server (serve.process.start_server, a free port) on VLLM_MODEL or the
profile's base model, measures process start → /health OK, then sends the same diagnostic
`--requests` times, one at a time, in three forms, interleaved:

- guided: aria.prompts.diagnostic_request as is (response_format json_schema, xgrammar), with
  `--body project` (schema S, the default) or `--body seed` (the seed's verbatim body);
- unguided: the same body without response_format (max_tokens 256; may run to the limit);
- unguided, same tokens: without response_format, max_tokens = the guided answer's token count
  and ignore_eos, so both generate exactly as many tokens: the fair per-token overhead.

Prints a table and one JSON line; stops the server.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass

import httpx

from aria.logs import setup_logging
from aria.prompts import DIAGNOSTIC_BODIES, diagnostic_request
from aria.settings import Settings, get_settings
from evaluation.soak import soak_measurements
from serve.command import resolve_model
from serve.process import free_port, start_server

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    """How many paired requests, and how long to wait for the server."""

    requests: int = 30
    warmup: int = 3
    ready_timeout_s: float = 900.0
    seed: int = 1
    stage: str = "aria-ft-dpo"  # the production model; VLLM_MODEL overrides, as for make serve
    body: str = "project"  # the diagnostic body: project (schema S) or seed (verbatim)


def timed_post(client: httpx.Client, body: dict) -> tuple[float, int]:
    """(latency in s, completion tokens) of one chat completion; raises on HTTP errors."""
    t0 = time.perf_counter()
    response = client.post("/chat/completions", json=body)
    latency = time.perf_counter() - t0
    response.raise_for_status()
    return latency, response.json()["usage"]["completion_tokens"]


def summarise(rows: list[tuple[float, int]]) -> dict:
    """Median latency, median tokens, and median milliseconds per generated token."""
    return {
        "median_latency_s": round(statistics.median(r[0] for r in rows), 4),
        "median_completion_tokens": statistics.median(r[1] for r in rows),
        "median_ms_per_token": round(
            statistics.median(1000 * r[0] / max(r[1], 1) for r in rows), 3
        ),
    }


def send_triplets(base_url: str, served_name: str, cfg: BenchConfig) -> dict[str, list]:
    """{guided, unguided, same: [(latency s, tokens)]}: each runner's diagnostic guided, then
    unguided, then unguided held to the guided answer's token count, one at a time; the first
    `cfg.warmup` runners are sent and left out (they also pay for warm-up and caches)."""
    headers = {"Authorization": "Bearer bench-key"}
    runners = soak_measurements(cfg.warmup + cfg.requests, cfg.seed)
    results: dict[str, list[tuple[float, int]]] = {"guided": [], "unguided": [], "same": []}
    with httpx.Client(base_url=base_url, headers=headers, timeout=300) as client:
        for i, measurements in enumerate(runners):
            guided = diagnostic_request(measurements, served_name, body=cfg.body)
            unguided = {k: v for k, v in guided.items() if k != "response_format"}
            g = timed_post(client, guided)
            u = timed_post(client, unguided)
            same = {**unguided, "max_tokens": g[1], "ignore_eos": True}
            s = timed_post(client, same)
            if i >= cfg.warmup:
                results["guided"].append(g)
                results["unguided"].append(u)
                results["same"].append(s)
    return results


def overhead_summary(cfg: BenchConfig, model: str, start_s: float, results: dict) -> dict:
    """The medians of each form and the latency ratios of guided decoding."""
    guided, unguided, same = (summarise(results[k]) for k in ("guided", "unguided", "same"))
    return {
        "model": str(model),
        "body": cfg.body,
        "requests": cfg.requests,
        "server_start_s": round(start_s, 2),
        "guided": guided,
        "unguided": unguided,
        "unguided_same_tokens": same,
        "latency_ratio_guided_vs_unguided": round(
            guided["median_latency_s"] / unguided["median_latency_s"], 3
        ),
        "latency_ratio_guided_vs_same_tokens": round(
            guided["median_latency_s"] / same["median_latency_s"], 3
        ),
    }


def print_overhead(summary: dict, start_s: float) -> None:
    """The table for people, then the JSON line."""
    print(f"server start (process → /health OK): {start_s:.1f} s on {summary['model']}")
    print(f"{'request':<26}{'median latency':>16}{'median tokens':>15}{'ms/token':>10}")
    for name, key in (
        ("guided (xgrammar)", "guided"),
        ("unguided", "unguided"),
        ("unguided, same tokens", "unguided_same_tokens"),
    ):
        row = summary[key]
        print(
            f"{name:<26}{row['median_latency_s']:>14.3f} s{row['median_completion_tokens']:>15}"
            f"{row['median_ms_per_token']:>10.2f}"
        )
    print(
        f"guided / unguided: {summary['latency_ratio_guided_vs_unguided']}x · "
        f"guided / same tokens: {summary['latency_ratio_guided_vs_same_tokens']}x"
    )
    print(json.dumps(summary))


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    """The run's config from the command line: one flag per BenchConfig field."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in asdict(BenchConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    return BenchConfig(**vars(parser.parse_args(argv)))


def main(cfg: BenchConfig, settings: Settings) -> int:
    """Run the benchmark on a fresh server (VLLM_MODEL or the stage's model of `settings`);
    prints a table then a JSON line."""
    if cfg.body not in DIAGNOSTIC_BODIES:
        raise SystemExit(f"--body {cfg.body!r}: expected one of {', '.join(DIAGNOSTIC_BODIES)}")
    model = resolve_model(settings, cfg.stage)
    log.info("starting a vLLM server on %s", model)
    handle = start_server(
        model,
        free_port(),
        "aria-bench",
        "bench-key",
        max_model_len=settings.vllm_max_model_len,
        kv_cache_gib=1,
        settings=settings,
    )
    try:
        start_s = handle.wait_ready(cfg.ready_timeout_s)
        log.info("server ready after %.1f s; %d paired requests", start_s, cfg.requests)
        results = send_triplets(handle.base_url, handle.served_name, cfg)
    finally:
        handle.stop()
    print_overhead(overhead_summary(cfg, model, start_s, results), start_s)
    return 0


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    raise SystemExit(main(parse_args(), settings))
