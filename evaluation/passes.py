"""The passes of one target: cold, warm-up, each prompt x body, field orders, sweep, reports.

Each `Pass` is one batch of requests to one target with its own records file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aria.prompts import REPORT_TEMPLATE, diagnostic_request, report_request
from aria.schema import FIELD_ORDER
from evaluation.config import REPORT_PROMPT, BenchmarkConfig, Target
from evaluation.inputs import EvalItem, image_url, order_items
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


def build_body(p: Pass, item: EvalItem) -> tuple[dict, str, str | None]:
    """(request body, prompt text, image status) of one request."""
    if p.kind == "report":
        body = report_request(item.measurements, p.target.served_name, p.template)
    else:
        body = diagnostic_request(
            item.measurements, p.target.served_name, p.template, body=p.body, order=p.order
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

    # Warm-up requests reuse eval runners under their own ids, so they never mix with results.
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
