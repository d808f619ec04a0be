"""Bounded soak of the live local server: zero errors, 100% schema-valid, flat memory.

    python -m evaluation.soak --requests 2000 --concurrency 32       # make soak ARGS="..."

Sends `--requests` guided diagnostics (aria.client, no retries: every failure counts) from
`--concurrency` threads to the server of aria.settings (loopback only), stopping early at
`--max-seconds`. Meanwhile it samples the resident memory of the server (the pid in
data/run/vllm-<port>.pid and its EngineCore children) to show it stays flat. Prints a table, writes
reports/soak.json and ends with one JSON line. Exit code 0 only when every request succeeded with a
schema-valid diagnostic and memory did not grow.

It also samples the server's Prometheus `/metrics` (text format, parsed here): KV-cache usage
(`vllm:kv_cache_usage_perc`), the queue (`vllm:num_requests_waiting`), the batch
(`vllm:num_requests_running`) and preemptions (`vllm:num_preemptions_total`, counted over the
soak). A full KV cache, a growing queue or preemptions say the load is past what one replica holds.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from aria.client import AriaClient, InvalidDiagnosticError
from aria.domain import MEASUREMENTS, RULES
from aria.files import atomic_write_json
from aria.logs import setup_logging
from aria.metrics import as_percent, percentile
from aria.settings import Settings, get_settings
from serve.process import pid_alive, pid_path, read_pid

log = logging.getLogger(__name__)

# Memory counts as flat when the last quarter's mean is within this of the first quarter's.
FLAT_MEMORY_TOLERANCE_MIB = 64.0
FLAT_MEMORY_TOLERANCE_FRACTION = 0.05


@dataclass
class SoakConfig:
    """How hard and how long to push the server."""

    requests: int = 2000
    concurrency: int = 32
    max_seconds: float = 900.0  # stop sending new requests after this
    timeout_s: float = 120.0  # per request
    sample_every_s: float = 1.0
    seed: int = 0
    out: Path | None = None  # default: <reports>/soak.json


def soak_measurements(n: int, seed: int) -> list[dict]:
    """`n` runners' varied valid measurements: each signal drawn around its threshold (0.5x to 1.6x)."""
    rng = random.Random(seed)
    thresholds = {key: t for rule in RULES for key, t in rule.thresholds}
    runners = []
    for _ in range(n):
        measurements = {}
        for m in MEASUREMENTS:
            t = thresholds[m.key]
            value = rng.uniform(0.5 * t, 1.6 * t)
            measurements[m.key] = round(
                min(max(value, m.low + 10**-m.decimals), m.high), m.decimals
            )
        runners.append(measurements)
    return runners


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_rss_mib(pid: int) -> float | None:
    """Resident memory of the server process and all its children, in MiB (None if gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue  # a child that just exited
    return total / 2**20


# The engine's gauges and counters the soak reads from /metrics (summed over engines).
ENGINE_METRICS = {
    "kv_cache_usage": "vllm:kv_cache_usage_perc",
    "requests_waiting": "vllm:num_requests_waiting",
    "requests_running": "vllm:num_requests_running",
    "preemptions_total": "vllm:num_preemptions_total",
}
_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text format → {metric name: [(labels, value), ...]}; comments are skipped.

    Raises ValueError naming the line when a sample line does not parse.
    """
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise ValueError(f"/metrics line {number} is not a Prometheus sample: {line[:80]!r}")
        labels = {
            k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            for k, v in _LABEL.findall(match["labels"] or "")
        }
        families.setdefault(match["name"], []).append((labels, float(match["value"])))
    return families


def engine_metrics(text: str) -> dict[str, float | None]:
    """The ENGINE_METRICS of one /metrics scrape, each summed over engines (None if absent)."""
    families = parse_prometheus(text)
    return {
        key: sum(v for _, v in families[name]) if name in families else None
        for key, name in ENGINE_METRICS.items()
    }


def engine_trend(samples: list[dict[str, float | None]]) -> dict:
    """Peak KV-cache use, peak and last queue, peak batch, and the preemptions during the soak."""
    if not samples:
        return {"samples": 0}

    def values(key: str) -> list[float]:
        return [s[key] for s in samples if s.get(key) is not None]

    kv, waiting, running = (
        values("kv_cache_usage"),
        values("requests_waiting"),
        values("requests_running"),
    )
    preempted = values("preemptions_total")
    return {
        "samples": len(samples),
        "kv_cache_usage_max": round(max(kv), 4) if kv else None,
        "requests_waiting_max": max(waiting) if waiting else None,
        "requests_waiting_last": waiting[-1] if waiting else None,
        "requests_running_max": max(running) if running else None,
        "preemptions": preempted[-1] - preempted[0] if preempted else None,
    }


def scrape_metrics(root_url: str, api_key: str) -> dict[str, float | None] | None:
    """One scrape of <root_url>/metrics → engine_metrics; None when it does not answer."""
    import httpx

    try:
        response = httpx.get(
            f"{root_url}/metrics", headers={"Authorization": f"Bearer {api_key}"}, timeout=5.0
        )
    except Exception:  # httpx2 errors are neither httpx's nor ConnectionError
        return None
    if response.status_code != 200:
        return None
    return engine_metrics(response.text)


def memory_trend(samples: list[tuple[float, int, float]]) -> dict:
    """First/last/max RSS, growth between the first and last quarter, and whether it is flat."""
    if len(samples) < 4:
        return {"samples": len(samples), "flat": None}
    rss = np.array([s[2] for s in samples])
    quarter = max(1, len(rss) // 4)
    first, last = float(rss[:quarter].mean()), float(rss[-quarter:].mean())
    growth = last - first
    tolerance = max(FLAT_MEMORY_TOLERANCE_MIB, FLAT_MEMORY_TOLERANCE_FRACTION * first)
    return {
        "samples": len(samples),
        "rss_first_quarter_mib": round(first, 1),
        "rss_last_quarter_mib": round(last, 1),
        "rss_max_mib": round(float(rss.max()), 1),
        "growth_mib": round(growth, 1),
        "tolerance_mib": round(tolerance, 1),
        "flat": bool(growth <= tolerance),
    }


def latency_summary(latencies: list[float]) -> dict:
    """P50/P90/P99/max latency in seconds (percentiles: aria.metrics.percentile)."""
    if not latencies:
        return {}
    quantiles = {f"p{q}_s": round(percentile(latencies, q), 4) for q in (50, 90, 99)}
    return quantiles | {"max_s": round(max(latencies), 4)}


@dataclass
class SoakTally:
    """What came back so far: each outcome's count, the latencies, a few examples of failures;
    `done` (requests sent) is read by the sampler while the pool fills it."""

    outcomes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    invalid_examples: list[str] = field(default_factory=list)
    error_examples: list[str] = field(default_factory=list)
    done: int = 0

    def add(self, outcome: str, latency: float | None, raw: str | None) -> None:
        """Count one request's outcome (send_one's triple)."""
        self.outcomes[outcome] += 1
        self.done += outcome != "not_sent"
        if latency is not None:
            self.latencies.append(latency)
        examples = self.invalid_examples if outcome == "invalid" else self.error_examples
        if raw is not None and len(examples) < 3:
            examples.append(raw)


@dataclass
class ServerSamples:
    """The server's resident memory, (seconds since the start, requests done, MiB), and its
    /metrics scrapes, taken every `every_s` by `run` on a thread of its own."""

    pid: int | None
    root_url: str
    api_key: str
    every_s: float
    rss: list[tuple[float, int, float]] = field(default_factory=list)
    engine: list[dict[str, float | None]] = field(default_factory=list)

    def run(self, stop: threading.Event, started: float, tally: SoakTally) -> None:
        """Sample until `stop` is set."""
        while not stop.is_set():
            rss = server_rss_mib(self.pid) if self.pid is not None else None
            if rss is not None:
                self.rss.append((time.monotonic() - started, tally.done, rss))
            scraped = scrape_metrics(self.root_url, self.api_key)
            if scraped is not None:
                self.engine.append(scraped)
            stop.wait(self.every_s)


def send_one(
    client: AriaClient, measurements: dict, deadline: float
) -> tuple[str, float | None, str | None]:
    """(outcome, seconds, the invalid answer or the error) of one diagnostic: `ok`, `invalid`,
    `error:<type>` (every failure counts, by type, with its cause), `not_sent` past `deadline`."""
    if time.monotonic() > deadline:
        return "not_sent", None, None
    t0 = time.perf_counter()
    try:
        client.diagnose(measurements)
    except InvalidDiagnosticError as error:
        return "invalid", time.perf_counter() - t0, error.raw_text
    except Exception as error:
        cause = error.__cause__ or error.__context__
        detail = f"{type(error).__name__}: {error}"
        if cause is not None:
            detail += f" (cause: {type(cause).__name__}: {cause})"
        return f"error:{type(error).__name__}", None, detail
    return "ok", time.perf_counter() - t0, None


def soak_summary(
    cfg: SoakConfig,
    settings: Settings,
    pid: int | None,
    tally: SoakTally,
    samples: ServerSamples,
    wall: float,
) -> dict:
    """soak.json: the counts, whether it passed, latency, memory and engine trends, examples."""
    outcomes = tally.outcomes
    sent = cfg.requests - outcomes["not_sent"]
    errors = sum(n for k, n in outcomes.items() if k.startswith("error:"))
    memory = memory_trend(samples.rss) if pid is not None else {"flat": None, "note": "no pid file"}
    passed = (
        sent == cfg.requests
        and errors == 0
        and outcomes["invalid"] == 0
        and memory.get("flat") is not False
    )
    return {
        "passed": passed,
        "base_url": settings.base_url,
        "server_pid": pid,
        "requests": cfg.requests,
        "concurrency": cfg.concurrency,
        "sent": sent,
        "ok": outcomes["ok"],
        "invalid": outcomes["invalid"],
        "errors": errors,
        "errors_by_type": {k[6:]: n for k, n in outcomes.items() if k.startswith("error:")},
        "schema_valid_pct": round(100.0 * outcomes["ok"] / sent, 2) if sent else 0.0,
        "wall_s": round(wall, 2),
        "throughput_rps": round(sent / wall, 2) if wall else 0.0,
        "latency": latency_summary(tally.latencies),
        "memory": memory,
        "engine": engine_trend(samples.engine),
        "invalid_examples": tally.invalid_examples,
        "error_examples": tally.error_examples,
        "rss_samples": [[round(t, 1), n, round(r, 1)] for t, n, r in samples.rss],
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    }


def run_soak(cfg: SoakConfig, settings: Settings) -> dict:
    """Send the requests, sample memory, and return the summary (see module docstring)."""
    from tqdm import tqdm

    pid = read_pid(pid_path(settings, settings.vllm_port))
    if pid is not None and not pid_alive(pid):
        pid = None
    client = AriaClient(timeout=cfg.timeout_s, max_retries=0, settings=settings)
    runners = soak_measurements(cfg.requests, cfg.seed)
    tally = SoakTally()
    root_url = settings.base_url.removesuffix("/v1")
    samples = ServerSamples(pid, root_url, settings.api_key_value(), cfg.sample_every_s)
    stop_sampling = threading.Event()
    started = time.monotonic()
    deadline = started + cfg.max_seconds
    sampler = threading.Thread(
        target=samples.run, args=(stop_sampling, started, tally), daemon=True
    )
    sampler.start()
    with ThreadPoolExecutor(max_workers=cfg.concurrency) as pool:
        futures = [pool.submit(send_one, client, p, deadline) for p in runners]
        for future in tqdm(as_completed(futures), total=len(futures), desc="soak", unit="req"):
            tally.add(*future.result())
    wall = time.monotonic() - started
    stop_sampling.set()
    sampler.join(timeout=5)
    client.close()
    return soak_summary(cfg, settings, pid, tally, samples, wall)


def print_table(summary: dict) -> None:
    """One screen for people."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"soak of {summary['base_url']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    lat, mem = summary["latency"], summary["memory"]
    rows = [
        ("requests sent / asked", f"{summary['sent']} / {summary['requests']}"),
        ("concurrency", str(summary["concurrency"])),
        ("schema-valid", f"{summary['schema_valid_pct']} %"),
        ("invalid JSON", str(summary["invalid"])),
        ("errors", f"{summary['errors']} {summary['errors_by_type'] or ''}".strip()),
        ("throughput", f"{summary['throughput_rps']} req/s over {summary['wall_s']} s"),
        (
            "latency P50 / P90 / P99",
            " / ".join(f"{lat.get(k, 0):.3f} s" for k in lat if k != "max_s"),
        ),
        (
            "server RSS first→last quarter",
            f"{mem.get('rss_first_quarter_mib')} → "
            f"{mem.get('rss_last_quarter_mib')} MiB (max {mem.get('rss_max_mib')})",
        ),
        ("memory flat", str(mem.get("flat"))),
        (
            "KV-cache use, peak (/metrics)",
            as_percent(summary["engine"].get("kv_cache_usage_max"), missing="-"),
        ),
        (
            "queue waiting, peak / last",
            f"{summary['engine'].get('requests_waiting_max')} / "
            f"{summary['engine'].get('requests_waiting_last')}",
        ),
        ("batch running, peak", str(summary["engine"].get("requests_running_max"))),
        ("preemptions during the soak", str(summary["engine"].get("preemptions"))),
        ("PASSED", str(summary["passed"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def parse_args(argv: list[str] | None = None) -> SoakConfig:
    """The soak's config from the command line: one flag per SoakConfig field."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in asdict(SoakConfig()).items():
        kind = type(default) if default is not None else Path
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)
    return SoakConfig(**vars(parser.parse_args(argv)))


def main(cfg: SoakConfig, settings: Settings) -> int:
    """Run the soak against the local server of `settings`; 0 when it passed, 1 when it did
    not, 2 when the server is not a local one."""
    if not is_loopback(settings.vllm_host):
        log.error(
            "the soak only targets a local server; VLLM_HOST=%s is not a loopback address "
            "(use 127.0.0.1)",
            settings.vllm_host,
        )
        return 2
    summary = run_soak(cfg, settings)
    out = cfg.out or settings.aria_reports_dir / "soak.json"
    atomic_write_json(out, summary)
    log.info("written %s", out)
    print_table(summary)
    print(json.dumps(summary, ensure_ascii=False))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    raise SystemExit(main(parse_args(), settings))
