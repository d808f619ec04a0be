"""The passes of one target: cold, warm-up, each prompt x body, field orders, sweep, reports.

Each `Pass` is one batch of requests to one target with its own records file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aria.prompts import REPORT_TEMPLATE, diagnostic_request, report_request
from aria.schema import FIELD_ORDER
from evaluation.config import REPORT_PROMPT, BenchmarkConfig, Target
from evaluation.inputs import EvalItem, order_items
from evaluation.records import field_orders_of, records_path, target_bodies


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


def build_body(p: Pass, item: EvalItem) -> tuple[dict, str]:
    """(request body, prompt text) of one request."""
    if p.kind == "report":
        body = report_request(item.measurements, p.target.served_name, p.template)
    else:
        body = diagnostic_request(
            item.measurements, p.target.served_name, p.template, body=p.body, order=p.order
        )
    return body, body["messages"][0]["content"]


def warmup_items(items: list[EvalItem], n: int) -> list[EvalItem]:
    """`n` warm-up requests: eval runners reused under their own ids (`warmup-<k>`), so that
    they never mix with results."""
    cycled = (items * (n // len(items) + 1))[:n]
    return [EvalItem(**{**it.__dict__, "id": f"warmup-{k}"}) for k, it in enumerate(cycled)]


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

    def path(suffix: str) -> Path:
        return records_dir / f"{t.slug}__{suffix}.jsonl"

    def on_first_prompt(
        kind: str, its: list[EvalItem], where: Path, c: int, body: str, order=FIELD_ORDER
    ) -> Pass:
        return Pass(t, kind, first, templates[first], its, where, c, body, order)

    passes = [on_first_prompt("cold", items[:1], path("cold"), 1, bodies[0])]
    warm = warmup_items(items, cfg.warmup)
    if warm:
        passes.append(on_first_prompt("warmup", warm, path("warmup"), 1, bodies[0]))
    for name, template in templates.items():
        for body in bodies:
            where = records_path(records_dir, t, name, body)
            passes.append(
                Pass(t, "diagnostic", name, template, items, where, cfg.concurrency, body)
            )
    for order in field_orders_of(cfg, t):
        where = records_path(records_dir, t, first, "project", order)
        its, c = order_items(t, items), cfg.concurrency
        passes.append(on_first_prompt("diagnostic", its, where, c, "project", order))
    for c in cfg.sweep:
        passes.append(on_first_prompt("sweep", items, path(f"sweep-c{c}"), c, bodies[0]))
    if report_items:
        where, c = path(REPORT_PROMPT), cfg.concurrency
        passes.append(
            Pass(t, "report", REPORT_PROMPT, REPORT_TEMPLATE, report_items, where, c, bodies[0])
        )
    return passes
