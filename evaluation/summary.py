"""The figures of summary.json, computed from the records files.

The schema of summary.json is aria.summary's models (`RunSummary` and what it holds): the dicts
built here go through `RunSummary.from_dict` before anything is written.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from aria import metrics
from aria.schema import FIELD_ORDER
from evaluation.config import EVAL_SET, REPORT_PROMPT, BenchmarkConfig, Target
from evaluation.inputs import order_key, order_slug
from evaluation.records import field_orders_of, load_records, records_path, target_bodies
from evaluation.report import first_per_id


def _mean(values: list[float | None]) -> float | None:
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(xs) / len(xs) if xs else None


def _justification_summary(rows: list[dict]) -> dict:
    """The justification's verdict rates (grounded, code trace, readable, crossings right) and
    the text means. The crossings' rate is left out (as aria.summary leaves a None out) when
    there is no justification or a record was written before `crossings_right` existed."""
    crossings = [r["crossings_right"] for r in rows if "crossings_right" in r]
    out = {
        "n": len(rows),
        "grounded_rate": metrics.share([r["grounded"] for r in rows]),
        "code_trace_rate": metrics.share([r["code_trace"] for r in rows]),
        "readable_rate": metrics.share([r["readable"] for r in rows]),
        **_text_summary(rows),
    }
    if rows and len(crossings) == len(rows):
        out["crossings_right_rate"] = metrics.share(crossings)
    return out


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


def _failures(records: list[dict]) -> tuple[dict[str, int], dict[str, list[str]]]:
    """({status: count}, {status: ids}) of the records that did not end `ok`."""
    failed: dict[str, list[str]] = {}
    for r in records:
        if r["status"] != "ok":
            failed.setdefault(r["status"], []).append(r["id"])
    return dict(Counter(r["status"] for r in records if r["status"] != "ok")), failed


def _answer_figures(records: list[dict]) -> dict:
    """Validity of the answers (JSON, schema, cut by length, key order, canonical label), their
    exact match with its bootstrap interval, the lenient match, the confidence and the whole
    answer."""
    scores = [r["scores"] for r in records]
    expected_conf = [r["expected"]["confiance"] for r in records]
    predicted_conf = [s["confiance"] for s in scores]
    correct = [bool(s["correct"]) for s in scores]
    ci = metrics.bootstrap_ci([float(c) for c in correct]) if records else None
    return {
        "json_valid_rate": _mean([float(s["json_valid"]) for s in scores]),
        "schema_valid_rate": _mean([float(s["schema_valid"]) for s in scores]),
        "cut_by_length_rate": metrics.share([r.get("finish_reason") == "length" for r in records]),
        "key_order_rate": metrics.share([s["key_order"] for s in scores]),
        "canonical_label_rate": metrics.share([s["canonical_label"] for s in scores]),
        "exact_match": metrics.exact_match(
            [r["expected"]["pathologie"] for r in records], [s["pathologie"] for s in scores]
        ),
        "exact_match_ci95": list(ci) if ci else None,
        "exact_match_lenient": metrics.share([s["correct_lenient"] for s in scores]),
        "confidence_accuracy": metrics.confidence_accuracy(expected_conf, predicted_conf),
        "whole_answer_rate": metrics.whole_answer_rate(correct, expected_conf, predicted_conf),
    }


def _latency_figures(records: list[dict], slo_ms: float) -> dict:
    """Latency and time to first token of the answered requests, tokens, and the goodput (a
    valid answer under `slo_ms`)."""
    answered = [r for r in records if r["status"] in ("ok", "unparsable")]
    ttfts = [r["latency"]["ttft_ms"] for r in answered if r["latency"]["ttft_ms"] is not None]
    good = [r["latency"]["e2e_ms"] if r["scores"]["json_valid"] else None for r in records]
    return {
        "latency_ms": metrics.latency_summary([r["latency"]["e2e_ms"] for r in answered]),
        "ttft_ms": metrics.latency_summary(ttfts),
        "output_tokens_mean": _mean([r["latency"]["output_tokens"] for r in answered]),
        "tokens_per_s_mean": _mean([r["latency"]["tokens_per_s"] for r in answered]),
        "goodput": metrics.goodput(good, slo_ms),
    }


def _group_figures(records: list[dict]) -> dict:
    """Accuracy per pathology and per slice, the confusion matrices, the calibration and the
    whole answer per band of the rule."""
    scores = [r["scores"] for r in records]
    expected = [r["expected"]["pathologie"] for r in records]
    predicted = [s["pathologie"] for s in scores]
    correct = [bool(s["correct"]) for s in scores]
    expected_conf = [r["expected"]["confiance"] for r in records]
    predicted_conf = [s["confiance"] for s in scores]
    return {
        "per_pathology": metrics.per_pathology_accuracy(expected, predicted) if records else {},
        "per_slice": metrics.per_slice_accuracy([r["slices"] for r in records], correct),
        "confusion": metrics.confusion_matrix(expected, predicted),
        "calibration": metrics.calibration(predicted_conf, correct),
        "per_confidence": metrics.per_confidence(correct, expected_conf, predicted_conf),
        "confidence_confusion": metrics.confidence_confusion(expected_conf, predicted_conf),
    }


def _set_figures(records: list[dict], slo_ms: float) -> dict[str, dict]:
    """{eval set: its headline figures} (SetFigures), in the order the sets first appear."""
    out = {}
    for name in dict.fromkeys(r.get("set", EVAL_SET) for r in records):
        part = summarize_diagnostics(
            [r for r in records if r.get("set", EVAL_SET) == name], slo_ms, per_set=False
        )
        out[name] = {
            "n": part["n"],
            "exact_match": part["exact_match"],
            "exact_match_ci95": part["exact_match_ci95"],
            "whole_answer_rate": part["whole_answer_rate"],
            "per_confidence": part["per_confidence"],
            "json_valid_rate": part["json_valid_rate"],
            "cut_by_length_rate": part["cut_by_length_rate"],
            "justification_grounded_rate": part["justification"]["grounded_rate"],
            "per_slice": part["per_slice"],
        }
    return out


def summarize_diagnostics(records: list[dict], slo_ms: float, per_set: bool = True) -> dict:
    """Quality and latency of one target on one prompt and one body, from its records (a
    DiagnosticSummary's dict); with `per_set`, the same headline figures for each eval set apart."""
    records = first_per_id(records)
    errors, failed = _failures(records)
    out = {"body": records[0].get("body") if records else None, "n": len(records)}
    out |= _answer_figures(records) | _latency_figures(records, slo_ms)
    out["error_rate"] = sum(errors.values()) / len(records) if records else None
    out |= {"errors": errors, "failed_ids": failed} | _group_figures(records)
    scores = [r["scores"] for r in records]
    out["justification"] = _justification_summary(
        [s["justification"] for s in scores if "justification" in s]
    )
    if per_set:
        out["per_set"] = _set_figures(records, slo_ms)
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
        "prose_rate": metrics.share([v.get("prose", False) for v in verdicts]),
        "names_pathology_rate": metrics.share([v.get("names_pathology", False) for v in verdicts]),
        "grounded_rate": metrics.share([v.get("grounded", False) for v in verdicts]),
        "passed_rate": metrics.share([v.get("passed", False) for v in verdicts]),
        "cut_by_length_rate": metrics.share([r.get("finish_reason") == "length" for r in records]),
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

    The model summary carries every body under `bodies`, the first (the seed's when measured)
    its `primary_body`; `field_orders` summarises the field-order passes on the items
    `order_ids`.
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
    model |= {"prompt": first, "bodies_measured": bodies}
    model |= {"sets": list(by_body[primary]["per_set"]), "primary_body": primary}
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


def _body_line(s: dict) -> dict:
    """One body's figures on the last line."""
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


def _model_line(m: dict) -> dict:
    """One model on the last line: its primary body's headline figures, then every body's,
    the report call's and the field orders'."""
    primary = m["bodies"][m["primary_body"]]
    orders = m["field_orders"]
    return {
        "name": m["name"],
        "role": m["role"],
        "n": primary["n"],
        "exact_match": primary["exact_match"],
        "json_valid_rate": primary["json_valid_rate"],
        "p50_ms": primary["latency_ms"]["p50"],
        "p99_ms": primary["latency_ms"]["p99"],
        "errors": sum(primary["errors"].values()),
        "primary_body": m["primary_body"],
        "bodies": {b: _body_line(s) for b, s in m["bodies"].items()},
        "report": None
        if not m["report"]
        else {"n": m["report"]["n"], "passed_rate": m["report"]["passed_rate"]},
        "field_orders": None
        if not orders
        else {
            key: {k: o[k] for k in ("n", "exact_match", "json_valid_rate", "key_order_rate")}
            for key, o in orders.items()
        },
    }


def one_line_summary(summary: dict, run_dir: Path) -> dict:
    """The last line printed: what another program needs from the run."""
    return {
        "run_id": summary["run_id"],
        "report_dir": str(run_dir),
        "models": [_model_line(m) for m in summary["models"]],
        "winner": summary["comparison"]["winner"],
        "gate": {
            "model": summary["gate"]["model"],
            "passed": summary["gate"]["passed"],
            "by_body": summary["gate"]["by_body"],
            "failures": [f["message"] for f in summary["gate"]["failures"]],
            "serving_memory_gb": (summary["gate"].get("serving_memory") or {}).get("gb"),
        },
    }
