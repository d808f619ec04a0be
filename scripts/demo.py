"""The whole chain on the tiny profile, on a CPU, in minutes: what `make demo` runs.

    python -m scripts.demo            # datasets → tiny base → SFT → DPO → grammar audit
                                      # → serve ×3 → benchmark
    python -m scripts.demo --fresh    # rebuild everything instead of reusing finished stages

Each stage is the same module its make target runs, started with ARIA_PROFILE=tiny in its own
environment (this process's os.environ is left as it is; in-process steps get the tiny Settings).
A stage whose output already exists is reused (the outputs are atomic, so an existing folder is a
finished one); an interrupted training resumes.
The base, SFT and DPO models are served side by side on three ports, benchmarked in one run, then
stopped, whatever happens.

What the benchmark measures (sized to stay near 10 minutes on 2 CPU cores, docs/benchmark.md):
- dpo: both diagnostic bodies (the seed's verbatim and the project's) on `--limit` items of each
  eval set (eval.jsonl and outside.jsonl), and `--report-sample` report calls;
- sft: both bodies on `--sft-limit` items of eval.jsonl, `--sft-reports` report calls;
- base: both bodies on `--base-limit` items of eval.jsonl, no report (an untrained model writes
  2048 tokens of noise). The smaller samples are part of the larger ones, so deltas are paired;
- dpo, field orders (`--field-orders` of the benchmark, on unless `--no-field-orders`): the
  project's body in the five non-canonical field orders on `--orders-limit` items of eval.jsonl
  (5 x 60 more requests by default), so that any order a client's schema uses is measured.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from aria.files import atomic_write_json
from aria.logs import setup_logging
from aria.settings import Settings, get_settings
from aria.summary import STAGE_ROLES
from scripts.figures import DEMO_STAGES_FILE, stage_times_record, this_machine

log = logging.getLogger(__name__)

PROFILE = "tiny"  # the demo is the CPU profile by definition


@dataclass
class DemoConfig:
    """What the demo builds and how hard the benchmark pushes."""

    fresh: bool = False
    limit: int | None = 150  # DPO: items of each eval set; None = the whole sets
    report_sample: int = 40  # DPO report calls: enough to quote a rate
    sft_limit: int = 150  # SFT: items of eval.jsonl
    sft_reports: int = 10
    base_limit: int = 40  # base: items of eval.jsonl (the seed's free string runs to max_tokens)
    first_port: int = 8101
    field_orders: bool = True  # DPO: the project's body in the five other field orders
    orders_limit: int = 60  # DPO: items of eval.jsonl per field order
    command: str = "make demo"  # how this run was started, recorded with its stage times


def target_specs(cfg: DemoConfig, urls: dict[str, str]) -> list[str]:
    """The benchmark's --target values for the three served stages ({stage: base URL}); with
    field orders, only the DPO is asked them (orders=0 for the others)."""
    dpo_limit = f",limit={cfg.limit}" if cfg.limit else ""
    no_orders = ",orders=0" if cfg.field_orders else ""
    dpo_orders = f",orders={cfg.orders_limit}" if cfg.field_orders else ""
    asked = {
        "base": f",sets=eval,limit={cfg.base_limit},reports=0{no_orders}",
        "aria-ft-sft": f",sets=eval,limit={cfg.sft_limit},reports={cfg.sft_reports}{no_orders}",
        "aria-ft-dpo": f"{dpo_limit},reports={cfg.report_sample}{dpo_orders}",
    }
    return [f"{STAGE_ROLES[s]}={urls[s]},{s}{asked[s]}" for s in STAGE_ROLES]


def benchmark_args(cfg: DemoConfig, urls: dict[str, str]) -> list[str]:
    """The arguments of `python -m scripts.benchmark` for the three served stages."""
    args = []
    for spec in target_specs(cfg, urls):
        args += ["--target", spec]
    return args + (["--field-orders"] if cfg.field_orders else [])


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of the stages the demo starts: this process's, on the demo's profile."""
    return {**os.environ, "ARIA_PROFILE": settings.aria_profile}


def run_stage(name: str, module: str, *args: str, env: dict[str, str]) -> float:
    """Run `python -m module args` as its make target would, in `env`; stop the demo if it fails."""
    log.info("━━ %s ━━ %s", name, shlex.join(["python", "-m", module, *args]))
    started = time.monotonic()
    code = subprocess.run([sys.executable, "-m", module, *args], env=env).returncode
    if code != 0:
        sys.exit(f"demo stopped: `{name}` failed with exit code {code} (see above)")
    return time.monotonic() - started


def main(cfg: DemoConfig, settings: Settings) -> int:
    """Build what is missing, serve the three stages, benchmark them, stop the servers; every
    step on `settings` (the tiny profile's), in this process or a child's."""
    env = child_env(settings)
    timings = build_stages(cfg, settings, env)
    gate = serve_and_benchmark(cfg, settings, env, timings)
    return report_done(cfg, settings, timings, gate)


def build_stages(cfg: DemoConfig, settings: Settings, env: dict[str, str]) -> dict[str, float]:
    """Run each stage whose output is missing (all with `fresh`), then the grammar audit; their
    seconds by stage name."""
    timings: dict[str, float] = {}
    data_files = ("sft.jsonl", "sft_extended.jsonl", "dpo.jsonl")
    eval_files = (settings.eval_path, settings.eval_path.with_name("outside.jsonl"))
    data_ready = all(p.exists() for p in eval_files) and all(
        (settings.training_dir / name).exists() for name in data_files
    )
    if cfg.fresh or not data_ready:
        timings["datasets"] = run_stage("datasets", "preparation.generate_datasets", env=env)
    if cfg.fresh or not (settings.model_dir("base") / "config.json").exists():
        timings["tiny-model"] = run_stage("tiny base model", "tiny.build", env=env)
    if cfg.fresh or not (settings.model_dir("aria-ft-sft") / "config.json").exists():
        timings["train-sft"] = run_stage("SFT QLoRA + merge", "training.train_sft", env=env)
    if cfg.fresh or not (settings.model_dir("aria-ft-dpo") / "config.json").exists():
        timings["train-dpo"] = run_stage("DPO QLoRA + merge", "training.train_dpo", env=env)
    # Seconds, no server: every token of the model's answers must pass xgrammar's mask, or the
    # served model cannot write them (serve.grammar_audit).
    dpo = str(settings.model_dir("aria-ft-dpo"))
    timings["grammar-audit"] = run_stage(
        "grammar audit of aria-ft-dpo", "serve.grammar_audit", "--model", dpo, env=env
    )
    return timings


def serve_and_benchmark(
    cfg: DemoConfig, settings: Settings, env: dict[str, str], timings: dict[str, float]
) -> int:
    """Serve the three stages side by side, benchmark them, stop them whatever happens; the
    benchmark's exit code (timings gains `serve` and `benchmark`)."""
    from serve.process import start_server

    servers = []
    try:
        log.info("━━ serving base, SFT and DPO side by side ━━")
        started = time.monotonic()
        for i, stage in enumerate(STAGE_ROLES):
            servers.append(
                start_server(
                    model=settings.model_dir(stage),
                    port=cfg.first_port + i,
                    served_name=stage,
                    api_key=settings.api_key_value(),
                    max_model_len=2048,
                    kv_cache_gib=1,  # three tiny models side by side on one machine
                    log_path=settings.aria_data_dir / "logs" / f"demo-{stage}.log",
                    settings=settings,
                )
            )
        for server, stage in zip(servers, STAGE_ROLES, strict=True):
            ready = server.wait_ready(timeout=900)
            log.info("  %s ready after %.0f s at %s", stage, ready, server.base_url)
        timings["serve"] = time.monotonic() - started
        urls = {stage: server.base_url for server, stage in zip(servers, STAGE_ROLES, strict=True)}
        args = benchmark_args(cfg, urls)
        log.info("━━ benchmark ━━ %s", shlex.join(["python", "-m", "scripts.benchmark", *args]))
        started = time.monotonic()
        gate = subprocess.run(
            [sys.executable, "-m", "scripts.benchmark", *args], env=env
        ).returncode
        timings["benchmark"] = time.monotonic() - started
    finally:
        for server in servers:
            server.stop()
    return gate


def report_done(cfg: DemoConfig, settings: Settings, timings: dict[str, float], gate: int) -> int:
    """Print the demo's result (stage times, report, gate), record the stage times beside the
    run's summary for `make figures`; 0 when the benchmark ran (passed or not)."""
    print("\n━━ demo done ━━")  # the demo's result: its stage times, report and gate
    for stage, seconds in timings.items():
        print(f"  {stage:<12} {seconds:7.1f} s")
    latest = settings.aria_reports_dir / "latest"
    print(f"  report: {latest / 'report.md'} (summary: {latest / 'summary.json'})")
    verdict = {0: "passed", 1: "FAILED: the DPO model misses a target (see the report)"}
    if gate in verdict and latest.is_dir():  # beside this run's summary: `make figures` reads both
        record = stage_times_record(
            timings,
            command=cfg.command,
            machine=this_machine(),
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
            run_id=latest.resolve().name,
        )
        atomic_write_json(latest / DEMO_STAGES_FILE, record)
        print(f"  stage times: {latest / DEMO_STAGES_FILE} (`make figures` puts them in README.md)")
    print(f"  release gate: {verdict.get(gate, f'not evaluated (benchmark exit code {gate})')}")
    # The demo shows the chain; `make benchmark` is the release gate and exits 1 on a miss.
    return 0 if gate in verdict else gate


def parse_args(argv: list[str] | None = None) -> DemoConfig:
    """Command-line flags (default sys.argv) → DemoConfig, with the command that started it."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="rebuild every stage")
    defaults = DemoConfig()
    parser.add_argument(
        "--limit", type=int, default=defaults.limit, help="DPO: items per eval set (0: all)"
    )
    parser.add_argument(
        "--report-sample", type=int, default=defaults.report_sample, help="DPO report calls"
    )
    parser.add_argument("--sft-limit", type=int, default=defaults.sft_limit)
    parser.add_argument("--sft-reports", type=int, default=defaults.sft_reports)
    parser.add_argument("--base-limit", type=int, default=defaults.base_limit)
    parser.add_argument("--first-port", type=int, default=8101, help="ports first..first+2")
    parser.add_argument(
        "--no-field-orders",
        action="store_true",
        help="skip the DPO's project body in the five other field orders",
    )
    parser.add_argument(
        "--orders-limit",
        type=int,
        default=defaults.orders_limit,
        help="DPO: items of eval.jsonl per field order (0: none)",
    )
    ns = parser.parse_args(args)
    return DemoConfig(
        fresh=ns.fresh,
        limit=ns.limit or None,
        report_sample=ns.report_sample,
        sft_limit=ns.sft_limit,
        sft_reports=ns.sft_reports,
        base_limit=ns.base_limit,
        first_port=ns.first_port,
        field_orders=not ns.no_field_orders,
        orders_limit=ns.orders_limit,
        command=f'make demo ARGS="{shlex.join(args)}"' if args else "make demo",
    )


if __name__ == "__main__":
    setup_logging()
    settings = get_settings().for_profile(PROFILE)  # the demo is the tiny profile's
    raise SystemExit(main(parse_args(), settings))
