"""The benchmark's configuration: targets, flags and the `BenchmarkConfig` they resolve to.

`make_parser()` is the command line of `python -m scripts.benchmark` (evaluation/__init__.py
describes every flag's effect); `config_from_args` turns it into a `BenchmarkConfig`, with the
Settings the entry point resolved (aria.settings) filling what the flags leave out.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

from aria.prompts import DIAGNOSTIC_BODIES
from aria.settings import Settings
from aria.summary import ROLES

# The parser's description, the first line of evaluation/__init__.py.
DESCRIPTION = "Latency and quality of the served models on both diagnostic bodies, their comparison, the gate."
DEFAULT_PROMPT = "default"
REPORT_PROMPT = "report"
EVAL_SET = "eval"  # data/eval/eval.jsonl: held out from the training data's own draws
OUTSIDE_SET = "outside"  # data/eval/outside.jsonl: runners drawn by a different process
TARGET_OPTIONS = ("bodies", "sets", "limit", "reports", "orders")


class SetupError(RuntimeError):
    """Nothing can be measured (endpoint down, unknown model, bad input): exit 2 with the fix."""


@dataclass
class Target:
    """One OpenAI-compatible endpoint serving one model under a role, and what it is asked.

    bodies / sets / limit / reports left None take the run's --bodies, every eval set, every
    item and --report-sample; orders left None gives the field-order passes every item.
    """

    role: str
    base_url: str
    served_name: str
    bodies: list[str] | None = None
    sets: list[str] | None = None
    limit: int | None = None
    reports: int | None = None
    orders: int | None = None  # field-order passes: N lowest ranks of the first set; 0: none

    @property
    def slug(self) -> str:
        """File-safe name of the target: `<role>-<served name>`."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.role}-{self.served_name}")


@dataclass
class BenchmarkConfig:
    """Everything one benchmark run needs; built from the CLI over the settings' defaults."""

    targets: list[Target]
    eval_path: Path
    reports_dir: Path
    outside_path: Path | None = None  # a second eval set, reported apart (see eval_sets)
    bodies: list[str] = field(default_factory=lambda: list(DIAGNOSTIC_BODIES))
    gate_config: Path = Path("configs/release_gate.yaml")
    prompts_dir: Path = Path("data/prompts")
    prompts: list[str] = field(default_factory=lambda: [DEFAULT_PROMPT])
    limit: int | None = None
    seed: int = 0
    warmup: int = 2
    concurrency: int = 1
    sweep: list[int] = field(default_factory=list)
    report_sample: int = 2
    timeout_s: float = 60.0
    slo_ms: float = 3000.0
    run_id: str | None = None
    resume: bool = False
    plots: bool = True
    field_orders: bool = False  # also the project's body in the five other field orders


def parse_target(spec: str) -> Target:
    """`ROLE=BASE_URL,SERVED_NAME[,KEY=VALUE...]` -> Target, KEY in bodies (seed+project),
    sets (eval+outside), limit, reports and orders (integers); raises ValueError naming the
    expected form."""
    role, sep, rest = spec.partition("=")
    parts = [p.strip() for p in rest.split(",")]
    if not sep or role not in ROLES or len(parts) < 2 or not all(parts[:2]):
        raise ValueError(
            f"--target {spec!r}: expected ROLE=BASE_URL,SERVED_NAME[,KEY=VALUE...] with "
            f"ROLE in {'|'.join(ROLES)}, e.g. dpo=http://127.0.0.1:8003/v1,aria-ft-dpo,bodies=seed"
        )
    target = Target(role, parts[0].rstrip("/"), parts[1])
    for extra in parts[2:]:
        key, eq, value = extra.partition("=")
        if not eq or key not in TARGET_OPTIONS or not value:
            raise ValueError(
                f"--target {spec!r}: {extra!r} is not KEY=VALUE with KEY in "
                f"{', '.join(TARGET_OPTIONS)}"
            )
        elif key == "bodies":
            target.bodies = value.split("+")
            unknown = [b for b in target.bodies if b not in DIAGNOSTIC_BODIES]
            if unknown:
                raise ValueError(
                    f"--target {spec!r}: unknown body {unknown[0]!r}; bodies are "
                    f"{'+'.join(DIAGNOSTIC_BODIES)}"
                )
        elif key == "sets":
            target.sets = value.split("+")
        else:
            if not value.isdigit() or (key == "limit" and int(value) < 1):
                raise ValueError(f"--target {spec!r}: {key} must be a whole number (limit >= 1)")
            setattr(target, key, int(value))
    return target


def _body_list(text: str) -> list[str]:
    bodies = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in bodies if b not in DIAGNOSTIC_BODIES]
    if not bodies or unknown:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of {', '.join(DIAGNOSTIC_BODIES)}, got {text!r}"
        )
    return bodies


def _int_list(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,4,16, got {text!r}")
    return values


def make_parser() -> argparse.ArgumentParser:
    """The CLI; every default comes from the settings (.env) or the repository layout."""
    p = argparse.ArgumentParser(prog="python -m scripts.benchmark", description=DESCRIPTION)
    p.add_argument(
        "--target", action="append", default=[], help="ROLE=BASE_URL,SERVED_NAME[,KEY=VALUE...]"
    )
    p.add_argument(
        "--eval", type=Path, default=None, help="eval JSONL (default data/eval/eval.jsonl)"
    )
    p.add_argument(
        "--outside",
        type=Path,
        default=None,
        help="second eval set, reported apart (default: outside.jsonl next to --eval, if present)",
    )
    p.add_argument("--no-outside", action="store_true", help="score the --eval set only")
    p.add_argument(
        "--bodies",
        type=_body_list,
        default=list(DIAGNOSTIC_BODIES),
        help="diagnostic bodies to send: seed (the seed's verbatim body), project (schema S)",
    )
    p.add_argument(
        "--limit", type=int, default=None, help="benchmark a seeded sample of N items per set"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--prompts", default=DEFAULT_PROMPT, help="comma list of data/prompts names, or all"
    )
    p.add_argument("--prompts-dir", type=Path, default=Path("data/prompts"))
    p.add_argument("--warmup", type=int, default=2, help="warm-up requests excluded from metrics")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--sweep", type=_int_list, default=[], help="concurrency steps, e.g. 1,4,16")
    p.add_argument("--report-sample", type=int, default=2, help="report calls per target (0: none)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per request")
    p.add_argument("--slo-ms", type=float, default=3000.0, help="goodput latency target (ms)")
    p.add_argument("--gate-config", type=Path, default=Path("configs/release_gate.yaml"))
    p.add_argument("--reports-dir", type=Path, default=None)
    p.add_argument("--run-id", default=None, help="name the run (reusing one resumes it)")
    p.add_argument("--resume", metavar="RUN_ID", default=None, help="finish an interrupted run")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--field-orders",
        action="store_true",
        help="also send the project's body in the five other field orders (not gated)",
    )
    return p


def config_from_args(args: argparse.Namespace, settings: Settings) -> BenchmarkConfig:
    """Resolve CLI flags over `settings`; raises ValueError for a bad flag."""
    targets = [parse_target(t) for t in args.target] or [
        Target("dpo", settings.base_url, settings.vllm_served_name)
    ]
    if len({t.slug for t in targets}) != len(targets):
        raise ValueError("two --target share a role and served name; give each its own role")
    if args.concurrency < 1 or args.warmup < 0 or args.report_sample < 0:
        raise ValueError("--concurrency must be >= 1, --warmup and --report-sample >= 0")
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be >= 1")
    if args.resume and args.run_id and args.resume != args.run_id:
        raise ValueError("--resume and --run-id name different runs; give one of them")
    eval_path = args.eval or settings.eval_path
    outside = args.outside
    if args.no_outside and outside:
        raise ValueError("--outside and --no-outside contradict each other; give one of them")
    if outside is None and not args.no_outside:
        sibling = eval_path.parent / f"{OUTSIDE_SET}.jsonl"
        outside = sibling if sibling.exists() and sibling != eval_path else None
    return BenchmarkConfig(
        targets=targets,
        eval_path=eval_path,
        reports_dir=args.reports_dir or settings.aria_reports_dir,
        outside_path=outside,
        bodies=args.bodies,
        gate_config=args.gate_config,
        prompts_dir=args.prompts_dir,
        prompts=[s.strip() for s in args.prompts.split(",") if s.strip()],
        limit=args.limit,
        seed=args.seed,
        warmup=args.warmup,
        concurrency=args.concurrency,
        sweep=args.sweep,
        report_sample=args.report_sample,
        timeout_s=args.timeout or settings.vllm_request_timeout_s,
        slo_ms=args.slo_ms,
        run_id=args.resume or args.run_id,
        resume=bool(args.resume),
        plots=not args.no_plots,
        field_orders=args.field_orders,
    )
