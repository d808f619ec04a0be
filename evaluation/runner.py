"""One benchmark run: send the passes (resuming from the records files), score, summarise,
gate, and write summary.json, report.md and the plots atomically.

    python -m scripts.benchmark --limit 50 --warmup 2     # = python -m evaluation.runner

Exit codes: 0 gate passed (or no gate), 1 gate failed, 2 nothing measured.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx

from aria.files import append_jsonl, atomic_write_json, atomic_write_text
from aria.logs import setup_logging
from aria.settings import Settings, get_settings
from aria.summary import SCHEMA_VERSION, RunSummary, write_summary
from evaluation.config import (
    OUTSIDE_SET,
    BenchmarkConfig,
    SetupError,
    Target,
    config_from_args,
    make_parser,
)
from evaluation.gate import compare, load_gate, release_gate
from evaluation.inputs import (
    EvalItem,
    eval_sets,
    load_eval,
    load_prompts,
    order_items,
    report_order,
    target_items,
)
from evaluation.passes import Pass, build_body, plan_passes
from evaluation.records import load_records
from evaluation.report import (
    field_orders_table,
    models_table,
    render_report,
    reports_table,
    write_plots,
)
from evaluation.scoring import Embedder, score_diagnostic, score_report
from evaluation.summary import one_line_summary, summarize_target
from evaluation.transport import preflight, send_chat

log = logging.getLogger(__name__)


def diagnostic_record(
    p: Pass, item: EvalItem, text: str, body: dict, outcome: dict, embedder: Embedder
) -> dict:
    """The scored fields of one answer: the report's verdicts, or the diagnostic's scores with
    the field order asked and the parsed answer (an `ok` answer that is not JSON: `unparsable`)."""
    if p.kind == "report":
        return {"scores": score_report(item, outcome["content"], text, embedder)}
    order = tuple(body["response_format"]["json_schema"]["schema"]["properties"])
    scores = score_diagnostic(item, outcome["content"], text, p.body, order)
    fields = {"field_order": list(order)}
    fields["parsed"] = {k: scores[k] for k in ("pathologie", "confiance")}
    fields["scores"] = scores
    if outcome["status"] == "ok" and not scores["json_valid"]:
        fields["status"] = "unparsable"
    return fields


def request_record(p: Pass, item: EvalItem, text: str, outcome: dict, started: float) -> dict:
    """What was asked and what came back for one request of a pass, before scoring."""
    return {
        "id": item.id,
        "kind": p.kind,
        "model": p.target.served_name,
        "role": p.target.role,
        "prompt": p.prompt,
        "body": None if p.kind == "report" else p.body,
        "set": item.set,
        "concurrency": p.concurrency,
        "input": item.measurements,
        "prompt_text": text,
        "expected": {"pathologie": item.pathology, "confiance": item.confidence},
        "slices": item.slices,
        "status": outcome["status"],
        "http_status": outcome["http_status"],
        "error": outcome["error"],
        "attempts": outcome["attempts"],
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
            body, text = build_body(p, item)
            started = time.time()
            outcome = await send_chat(client, url, body, cfg.timeout_s)
        record = request_record(p, item, text, outcome, started)
        append_jsonl(p.path, record | diagnostic_record(p, item, text, body, outcome, embedder))
        bar.update(1)

    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=cfg.timeout_s) as client:
        await asyncio.gather(*(one(client, it) for it in todo))
    bar.close()


def _rate(tokens: int | None, ms: float | None) -> float | None:
    return tokens / (ms / 1000) if tokens and ms else None


def point_latest(reports_dir: Path, run_id: str) -> None:
    """reports/latest -> run_id, replaced atomically (a new symlink renamed over the old one)."""
    tmp = reports_dir / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(run_id, tmp)
    os.replace(tmp, reports_dir / "latest")


def run_items(cfg: BenchmarkConfig, run_dir: Path) -> list[EvalItem]:
    """The items of the run: a resumed run's exactly as it started (its run.json), whatever
    the flags say now; else the eval sets' (or their seeded --limit sample)."""
    if not (run_dir / "run.json").exists():
        return load_eval(cfg, cfg.limit)
    wanted = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["item_ids"]
    by_id = {it.id: it for it in load_eval(cfg)}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise SetupError(
            f"{run_dir}/run.json names ids absent from "
            f"{', '.join(map(str, eval_sets(cfg).values()))}: {missing[:5]}"
        )
    return [by_id[i] for i in wanted]


def check_targets(cfg: BenchmarkConfig, items: list[EvalItem]) -> None:
    """Raise SetupError when a target asks for a set the run lacks, or is left no item."""
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


def write_run_record(
    cfg: BenchmarkConfig,
    run_dir: Path,
    run_id: str,
    started: str,
    items: list[EvalItem],
    templates: dict[str, str],
) -> None:
    """run.json, once per run: what it started with (its items above all, for --resume)."""
    if (run_dir / "run.json").exists():
        return
    atomic_write_json(
        run_dir / "run.json",
        {
            "run_id": run_id,
            "started_at": started,
            "item_ids": [it.id for it in items],
            "sets": {name: str(path) for name, path in eval_sets(cfg).items()},
            "targets": [t.__dict__ for t in cfg.targets],
            "bodies": cfg.bodies,
            "prompts": list(templates),
            "field_orders": cfg.field_orders,
        },
    )


def n_reports(cfg: BenchmarkConfig, t: Target) -> int:
    """The report calls this target gets: its reports=N, else --report-sample."""
    return cfg.report_sample if t.reports is None else t.reports


def send_passes(
    cfg: BenchmarkConfig,
    items: list[EvalItem],
    templates: dict[str, str],
    records_dir: Path,
    api_key: str,
    embedder: Embedder,
) -> None:
    """Every pass of every target (plan_passes), resuming from the records files."""
    # One seeded order of report runners, mixing the sets; each target takes its first N.
    reports_first = report_order(items)
    for t in cfg.targets:
        mine = target_items(t, items)
        ids = {it.id for it in mine}
        report_items = [it for it in reports_first if it.id in ids][: n_reports(cfg, t)]
        for p in plan_passes(cfg, t, templates, mine, report_items, records_dir):
            asyncio.run(run_pass(p, api_key, cfg, embedder))


def summarize_targets(
    cfg: BenchmarkConfig, items: list[EvalItem], templates: dict[str, str], records_dir: Path
) -> tuple[list[dict], list[dict], dict[tuple[str, str], list[dict]]]:
    """(model summaries, experiment rows, {(slug, body): the first prompt's records})."""
    models, experiments = [], []
    records_by_body: dict[tuple[str, str], list[dict]] = {}
    for t in cfg.targets:
        order_ids = {it.id for it in order_items(t, target_items(t, items))}
        model, rows, records = summarize_target(
            cfg, t, templates, records_dir, n_reports(cfg, t) > 0, order_ids
        )
        models.append(model)
        experiments += rows
        for body, recs in records.items():
            records_by_body[(t.slug, body)] = recs
    return models, experiments, records_by_body


def run_summary(
    cfg: BenchmarkConfig,
    settings: Settings,
    run_id: str,
    started: str,
    items: list[EvalItem],
    templates: dict[str, str],
) -> dict:
    """summary.json's head: the run, its eval sets, bodies and prompts (models and the rest
    follow)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "started_at": started,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": settings.aria_profile,
        "eval": {
            "path": str(cfg.eval_path),
            "sets": {name: str(path) for name, path in eval_sets(cfg).items()},
            "n_items": len(items),
            "n_per_set": dict(Counter(it.set for it in items)),
            "limit": cfg.limit,
            "seed": cfg.seed,
        },
        "bodies": cfg.bodies,
        "prompts": list(templates),
        "slo_ms": cfg.slo_ms,
    }


def write_outputs(
    cfg: BenchmarkConfig,
    run_dir: Path,
    summary: dict,
    records_by_body: dict[tuple[str, str], list[dict]],
) -> RunSummary:
    """Check the summary against the schema, then write the plots, summary.json and report.md
    and point reports/latest at the run."""
    typed = RunSummary.from_dict(summary)  # checks the schema before anything is written
    primary = {m.slug: records_by_body[(m.slug, m.primary_body)] for m in typed.models}
    plots = write_plots(run_dir, typed.models, primary) if cfg.plots else []
    write_summary(run_dir / "summary.json", typed)
    atomic_write_text(run_dir / "report.md", render_report(typed, plots))
    point_latest(cfg.reports_dir, summary["run_id"])
    return typed


def run_benchmark(cfg: BenchmarkConfig, settings: Settings) -> int:
    """Send, score, summarise, gate and write one run; returns 0 (gate passed) or 1 (failed).
    Raises SetupError (or ValueError) when nothing can be measured."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    api_key = settings.api_key_value()
    gate_spec = load_gate(cfg.gate_config, settings.aria_profile)
    run_id = cfg.run_id or datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = cfg.reports_dir / run_id
    if cfg.resume and not run_dir.exists():
        raise SetupError(f"--resume {run_id}: {run_dir} does not exist")
    items = run_items(cfg, run_dir)
    check_targets(cfg, items)
    templates = load_prompts(cfg, items[0].measurements)
    preflight(cfg, api_key)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_record(cfg, run_dir, run_id, started, items, templates)
    roles = ", ".join(t.role for t in cfg.targets)
    log.info("run %s: %d items for %s, records in %s", run_id, len(items), roles, run_dir)
    records_dir = run_dir / "records"
    embedder = Embedder()
    send_passes(cfg, items, templates, records_dir, api_key, embedder)

    models, experiments, records_by_body = summarize_targets(cfg, items, templates, records_dir)
    gate = release_gate(models, gate_spec, cfg.gate_config, settings)
    summary = run_summary(cfg, settings, run_id, started, items, templates)
    summary |= {"notes": [embedder.note] if embedder.note else [], "models": models}
    summary |= {"experiments": experiments, "comparison": compare(models, records_by_body)}
    summary["gate"] = gate
    typed = write_outputs(cfg, run_dir, summary, records_by_body)
    print_outcome(typed, summary, run_dir)
    return 1 if gate["passed"] is False else 0


def print_outcome(typed: RunSummary, summary: dict, run_dir: Path) -> None:
    """The run's result on the console: the tables, the winner, the serving memory, the gate's
    failures (on stderr, the verdict of exit code 1), and the one-line JSON summary last; the
    notes are logged (warnings)."""
    gate = summary["gate"]
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
    for n in summary["notes"]:
        log.warning("%s", n)
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


def setup_failed(error: Exception) -> int:
    """Log why nothing was measured, print the JSON line that says so; returns exit code 2."""
    log.error("benchmark: %s", error)
    print(json.dumps({"error": str(error), "gate": {"passed": None}}, ensure_ascii=False))
    return 2


def parse_args(argv: list[str] | None = None, *, settings: Settings) -> BenchmarkConfig:
    """The run's config from the command line over `settings`; a bad flag exits 2 (setup_failed)."""
    try:
        return config_from_args(make_parser().parse_args(argv), settings)
    except ValueError as e:  # a bad flag from config_from_args
        raise SystemExit(setup_failed(e)) from None


def main(cfg: BenchmarkConfig, settings: Settings) -> int:
    """Run the benchmark with `settings` (the API key, the profile's gate, the local server's
    memory); returns the exit code (0 pass, 1 gate failed, 2 nothing measured)."""
    try:
        return run_benchmark(cfg, settings)
    except (SetupError, ValueError) as e:  # ValueError: a bad value past the flags' checks
        return setup_failed(e)


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    raise SystemExit(main(parse_args(settings=settings), settings))
