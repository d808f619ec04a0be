"""The human side of a benchmark run: PNG plots and the Markdown report.

Called by `evaluation.runner` (python -m scripts.benchmark) once a run is scored; it reads the
typed summary (aria.summary) and the records and writes next to them. Pure rendering plus matplotlib (Agg), no network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aria.domain import PATHOLOGIES
from aria.summary import Comparison, DiagnosticSummary, Gate, ModelSummary, RunSummary


def first_per_id(records: list[dict]) -> list[dict]:
    """The first record of each id: a resumed run may hold a line twice."""
    seen: dict[str, dict] = {}
    for r in records:
        seen.setdefault(r["id"], r)
    return list(seen.values())


def _latency_plot(plt: Any, models: list[ModelSummary], records_by_slug: dict) -> Any:
    """Histogram and CDF of each model's warm diagnostic latencies (its answered requests)."""
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(11, 4))
    for m in models:
        xs = sorted(
            r["latency"]["e2e_ms"]
            for r in first_per_id(records_by_slug[m.slug])
            if r["status"] in ("ok", "unparsable")
        )
        if xs:
            hist.hist(xs, bins=30, alpha=0.5, label=m.role)
            cdf.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=m.role)
    hist.set(title="Diagnostic latency (warm)", xlabel="ms", ylabel="requests")
    cdf.set(title="Latency CDF", xlabel="ms", ylabel="share of requests", ylim=(0, 1.01))
    for ax in (hist, cdf):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return fig


def _per_pathology_plot(plt: Any, models: list[ModelSummary]) -> Any:
    """Exact match per pathology, one bar per model (its primary body)."""
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / max(len(models), 1)
    for j, m in enumerate(models):
        cells = m.primary.per_pathology
        accs = [cells[p].accuracy if p in cells else 0 for p in PATHOLOGIES]
        ax.bar([i + j * width for i in range(len(PATHOLOGIES))], accs, width, label=m.role)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(PATHOLOGIES))])
    ax.set_xticklabels([p.replace(" ", "\n", 1) for p in PATHOLOGIES], fontsize=8)
    ax.set(title="Exact match per pathology", ylabel="accuracy", ylim=(0, 1.05))
    ax.legend()
    return fig


def _confusion_plot(plt: Any, m: ModelSummary) -> Any:
    """The confusion matrix of one model's primary body, counts written in the cells."""
    conf = m.primary.confusion
    fig, ax = plt.subplots(figsize=(7, 5.5))
    ax.imshow(conf.matrix, cmap="Blues")
    for i, row in enumerate(conf.matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(conf.columns)), conf.columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(conf.rows)), conf.rows, fontsize=7)
    ax.set(title=f"Confusion matrix — {m.role} ({m.name})", xlabel="predicted", ylabel="true")
    return fig


def _comparison_plot(plt: Any, models: list[ModelSummary]) -> Any:
    """Exact match with its 95 % interval, JSON-valid rate and P50 / P99 latency per model."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    names = [m.role for m in models]
    em = [m.primary.exact_match or 0 for m in models]
    cis = [m.primary.exact_match_ci95 or [e, e] for e, m in zip(em, models, strict=True)]
    errs = [[e - ci[0] for e, ci in zip(em, cis, strict=True)]]
    errs.append([ci[1] - e for e, ci in zip(em, cis, strict=True)])
    axes[0].bar(names, em, yerr=errs, capsize=4)
    axes[0].set(title="Exact match (95% CI)", ylim=(0, 1.05))
    axes[1].bar(names, [m.primary.json_valid_rate or 0 for m in models])
    axes[1].set(title="JSON valid rate", ylim=(0, 1.05))
    p50 = [m.primary.latency_ms.p50 or 0 for m in models]
    p99 = [m.primary.latency_ms.p99 or 0 for m in models]
    xs = range(len(models))
    axes[2].bar([x - 0.2 for x in xs], p50, 0.4, label="P50")
    axes[2].bar([x + 0.2 for x in xs], p99, 0.4, label="P99")
    axes[2].set_xticks(list(xs), names)
    axes[2].set(title="Latency (ms)")
    axes[2].legend()
    return fig


def _sweep_plot(plt: Any, models: list[ModelSummary]) -> Any:
    """Throughput and P99 latency against concurrency, per model."""
    fig, (thr, lat) = plt.subplots(1, 2, figsize=(11, 4))
    for m in models:
        cs = [s.concurrency for s in m.sweep]
        thr.plot(cs, [s.throughput_rps or 0 for s in m.sweep], marker="o", label=m.role)
        lat.plot(cs, [s.latency_ms.p99 or 0 for s in m.sweep], marker="o", label=m.role)
    thr.set(title="Throughput", xlabel="concurrency", ylabel="requests/s", xscale="log")
    lat.set(title="P99 latency", xlabel="concurrency", ylabel="ms", xscale="log")
    thr.legend()
    lat.legend()
    return fig


def write_plots(
    run_dir: Path, models: list[ModelSummary], records_by_slug: dict[str, list[dict]]
) -> list[str]:
    """Latency histogram and CDF, per-pathology accuracy, confusion matrices, comparison bars
    and, with a sweep, throughput and latency by concurrency; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = [("latency.png", _latency_plot(plt, models, records_by_slug))]
    figures.append(("per_pathology.png", _per_pathology_plot(plt, models)))
    for m in models:
        figures.append((f"confusion_{m.slug}.png", _confusion_plot(plt, m)))
    figures.append(("comparison.png", _comparison_plot(plt, models)))
    if any(m.sweep for m in models):
        figures.append(("sweep.png", _sweep_plot(plt, models)))
    for name, fig in figures:
        tmp = run_dir / f".{name}.tmp"
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        os.replace(tmp, run_dir / name)
    return [name for name, _ in figures]


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if pct else f"{value:.0f}"


def _ci(ci: list[float] | None) -> str:
    return f" ({100 * ci[0]:.0f}–{100 * ci[1]:.0f})" if ci else ""


def _set_names(models: list[ModelSummary]) -> list[str]:
    """Every eval set any model's body was scored on, first seen first."""
    names: dict[str, None] = {}
    for m in models:
        for s in m.bodies.values():
            names.update(dict.fromkeys(s.per_set))
    return list(names)


def models_table(models: list[ModelSummary]) -> str:
    """The comparison table (markdown), one row per model and body side by side: printed at the
    end and written into report.md."""
    sets = _set_names(models)
    lines = [
        "| role | model | body | n | JSON valid | schema valid | cut by length | exact match "
        "(95% CI) | "
        + "".join(f"EM {s} | " for s in sets)
        + "confiance | grounded | code trace | P50 ms | P99 ms | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(sets) + "---:|" * 6,
    ]
    for m in models:
        for body, s in m.bodies.items():
            lat, j = s.latency_ms, s.justification
            per_set = {n: s.per_set[n].exact_match if n in s.per_set else None for n in sets}
            lines.append(
                f"| {m.role} | {m.name} | {body} | {s.n} | "
                f"{_fmt(s.json_valid_rate, True)} | {_fmt(s.schema_valid_rate, True)} | "
                f"{_fmt(s.cut_by_length_rate, True)} | "
                f"{_fmt(s.exact_match, True)}{_ci(s.exact_match_ci95)} | "
                + "".join(f"{_fmt(per_set[n], True)} | " for n in sets)
                + f"{_fmt(s.confidence_accuracy, True)} | {_fmt(j.grounded_rate, True)} | "
                f"{_fmt(j.code_trace_rate, True)} | {_fmt(lat.p50)} | {_fmt(lat.p99)} | "
                f"{sum(s.errors.values())} |"
            )
    return "\n".join(lines)


def reports_table(models: list[ModelSummary]) -> str:
    """The report call's verdicts per model (markdown): prose, names the rule's pathology,
    grounded, and all three."""
    lines = [
        "| role | reports | prose | names the pathology | grounded | all three | cut by length |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in models:
        r = m.report
        if r is None:
            continue
        lines.append(
            f"| {m.role} | {r.n} | {_fmt(r.prose_rate, True)} | "
            f"{_fmt(r.names_pathology_rate, True)} | {_fmt(r.grounded_rate, True)} | "
            f"{_fmt(r.passed_rate, True)} | {_fmt(r.cut_by_length_rate, True)} |"
        )
    return "\n".join(lines)


def field_orders_table(models: list[ModelSummary]) -> str:
    """The project's body in each field order, per model that was asked them (markdown): exact
    match, complete JSON, cut by length, keys in the requested order."""
    lines = [
        "| role | field order | n | exact match (95% CI) | JSON valid | cut by length | "
        "keys in order | P50 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in models:
        for key, o in (m.field_orders or {}).items():
            mark = " (canonical)" if o.canonical else ""
            lines.append(
                f"| {m.role} | {key}{mark} | {o.n} | "
                f"{_fmt(o.exact_match, True)}{_ci(o.exact_match_ci95)} | "
                f"{_fmt(o.json_valid_rate, True)} | {_fmt(o.cut_by_length_rate, True)} | "
                f"{_fmt(o.key_order_rate, True)} | {_fmt(o.latency_p50_ms)} |"
            )
    return "\n".join(lines)


def _confidence_rows(b: DiagnosticSummary) -> list[str]:
    """The whole answer by the rule's confidence band, and the confusion of confidences."""
    if not b.per_confidence or not b.confidence_confusion:
        return []
    out = [
        "",
        f"Whole answer (pathology and confidence right): {_fmt(b.whole_answer_rate, True)}.",
        "",
        "| rule's confiance | n | answered that band | whole answer right |",
        "|---|---:|---:|---:|",
    ]
    out += [
        f"| {band} | {row.n} | {_fmt(row.confidence_rate, True)} | "
        f"{_fmt(row.whole_answer_rate, True)} |"
        for band, row in b.per_confidence.items()
    ]
    conf = b.confidence_confusion
    out += ["", "| rule's \\ answered | " + " | ".join(conf.columns) + " |"]
    out.append("|---|" + "---:|" * len(conf.columns))
    out += [
        f"| {row} | " + " | ".join(str(n) for n in counts) + " |"
        for row, counts in zip(conf.rows, conf.matrix, strict=True)
    ]
    return out


def _body_section(b: DiagnosticSummary) -> list[str]:
    """Per-set, per-pathology and per-slice exact match, calibration and justification of one
    body of one model."""
    out = ["| eval set | n | exact match (95% CI) | JSON valid | cut by length | grounded |"]
    out.append("|---|---:|---:|---:|---:|---:|")
    for name, p in b.per_set.items():
        out.append(
            f"| {name} | {p.n} | {_fmt(p.exact_match, True)}{_ci(p.exact_match_ci95)} | "
            f"{_fmt(p.json_valid_rate, True)} | {_fmt(p.cut_by_length_rate, True)} | "
            f"{_fmt(p.justification_grounded_rate, True)} |"
        )
    out += ["", "| pathology | n | exact match |", "|---|---:|---:|"]
    out += [f"| {p} | {c.n} | {_fmt(c.accuracy, True)} |" for p, c in b.per_pathology.items()]
    slices = sorted({s for p in b.per_set.values() for s in p.per_slice})
    sets = list(b.per_set)
    out += ["", "| slice | " + " | ".join(f"{s} n | {s} exact match" for s in sets) + " |"]
    out.append("|---|" + "---:|---:|" * len(sets))
    for sl in slices:
        cells = []
        for name in sets:
            c = b.per_set[name].per_slice.get(sl)
            cells.append(f"{c.n} | {_fmt(c.accuracy, True)}" if c else "0 | –")
        out.append(f"| {sl} | " + " | ".join(cells) + " |")
    out += _confidence_rows(b)
    cal = b.calibration
    bands = ", ".join(f"{k} {_fmt(v.accuracy, True)} (n={v.n})" for k, v in cal.bands.items())
    j = b.justification
    out += [
        "",
        f"Keys in the schema's order {_fmt(b.key_order_rate, True)}; canonical label "
        f"{_fmt(b.canonical_label_rate, True)}; exact match with variants accepted "
        f"{_fmt(b.exact_match_lenient, True)}. Calibration (pathology accuracy per announced "
        f"confiance): {bands}; monotonic: {cal.monotonic}.",
        f"Justification (n={j.n}): every number grounded {_fmt(j.grounded_rate, True)} "
        f"(mean share {_fmt(j.grounded_rate_mean, True)}), code trace "
        f"{_fmt(j.code_trace_rate, True)}, clinician-readable {_fmt(j.readable_rate, True)}, "
        f"anchoring {_fmt(j.anchoring_mean, True)}, deciding keys named "
        f"{_fmt(j.keyword_coverage_mean, True)}, count of alert signals right "
        f"{_fmt(j.crossings_right_rate, True)}.",
    ]
    if b.failed_ids:
        out.append("")
        out += [f"- {status}: {', '.join(ids[:20])}" for status, ids in b.failed_ids.items()]
    out.append("")
    return out


def _run_head(summary: RunSummary) -> list[str]:
    """The title, what was run and the models table."""
    sets = ", ".join(
        f"{n} {name} (`{summary.eval.sets[name]}`)" for name, n in summary.eval.n_per_set.items()
    )
    return [
        f"# Benchmark {summary.run_id}",
        "",
        f"Profile `{summary.profile}`, {summary.eval.n_items} eval items: {sets}; "
        f"bodies {', '.join(summary.bodies)}; prompts {', '.join(summary.prompts)}; "
        f"started {summary.started_at}, finished {summary.finished_at}.",
        "",
        "## Models, both bodies side by side",
        "",
        "`seed` is the seed README's diagnostic body sent verbatim (free-string `pathologie`, "
        "pathologie first), `project` the project's schema S. Exact match needs the canonical "
        "label; an answer cut by max_tokens is invalid JSON and wrong. `grounded`: share of "
        "justifications whose every number is in the input; `code trace`: share that hold a "
        "ranking code such as `G<T`.",
        "",
        models_table(summary.models),
        "",
    ]


def _passes_sections(models: list[ModelSummary]) -> list[str]:
    """The report call's and the field orders' tables, for the runs that asked them."""
    out: list[str] = []
    if any(m.report for m in models):
        out += [
            "## Report call",
            "",
            "The seed's report body (temperature 0.3, max_tokens 2048, no response_format). A "
            "report passes when it is prose (no JSON, enough words, mostly words, no loop), "
            "names the rule's pathology first, and cites only numbers of the input.",
            "",
            reports_table(models),
            "",
        ]
    if any(m.field_orders for m in models):
        out += [
            "## Field orders (project body)",
            "",
            "The project's body with its properties in each order a client's schema may use "
            "(xgrammar writes them in the schema's order), on the same items; the canonical "
            "order's row is the project pass above. Not gated.",
            "",
            field_orders_table(models),
            "",
        ]
    return out


def _comparison_lines(comp: Comparison) -> list[str]:
    """The winner, the recommendation and each paired delta with its interval."""
    out = [f"Winner (quality first, latency second): **{comp.winner}**.", ""]
    if comp.recommendation:
        out += [f"Recommendation: {comp.recommendation.text}", ""]
    for d in comp.deltas:
        em = d.exact_match
        if em:
            out.append(
                f"- {d.from_role} → {d.to} ({d.body} body): exact match "
                f"{100 * em.delta:+.1f} points "
                f"(95% CI {100 * em.ci95_low:+.1f} to {100 * em.ci95_high:+.1f}, "
                f"{d.n_paired} paired items)"
            )
    return out


def _gate_section(gate: Gate) -> list[str]:
    """The release gate's verdict and every check."""
    out = ["", "## Release gate", ""]
    if gate.passed is None:
        out.append(f"Not evaluated: {gate.reason}")
    else:
        out.append(
            f"Model **{gate.model}** ({gate.role}): **{'PASSED' if gate.passed else 'FAILED'}** "
            f"on bodies {', '.join(gate.bodies)}, profile `{gate.profile}`"
            + (f" (profile thresholds for {', '.join(gate.overridden)})" if gate.overridden else "")
        )
        out.append("")
        out += [f"- {'✓' if c.passed else '✗'} {c.message}" for c in gate.checked]
    out += ["", "Serving VRAM (< 10 GB) is measured with nvidia-smi on GPU; not gated here."]
    return [*out, ""]


def _model_section(m: ModelSummary) -> list[str]:
    """One model: each body's section, its reports' verdicts and its sweep."""
    out = [f"## {m.role} ({m.name})", ""]
    for body, b in m.bodies.items():
        out += [f"### {body} body", ""]
        out += _body_section(b)
    if m.report:
        r = m.report
        sim = "–" if r.similarity_mean is None else f"{r.similarity_mean:.3f}"
        problems = ", ".join(f"{k} {v}" for k, v in r.problems.items()) or "none"
        out.append(
            f"Reports (n={r.n}, answered {r.answered}): passed {_fmt(r.passed_rate, True)}; "
            f"not prose because of: {problems}; numbers grounded (mean) "
            f"{_fmt(r.grounded_rate_mean, True)}, anchoring "
            f"{_fmt(r.anchoring_mean, True)}, similarity to the reference {sim}."
        )
    if m.sweep:
        out += [
            "",
            "| concurrency | n | req/s | tok/s | P50 ms | P99 ms | goodput |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in m.sweep:
            out.append(
                f"| {s.concurrency} | {s.n} | {s.throughput_rps or 0:.2f} | "
                f"{s.output_tokens_per_s or 0:.1f} | {_fmt(s.latency_ms.p50)} | "
                f"{_fmt(s.latency_ms.p99)} | {_fmt(s.goodput, True)} |"
            )
    return [*out, ""]


def _prompts_section(summary: RunSummary) -> list[str]:
    """Every prompt x model x body, when the run compared prompts."""
    if not summary.experiments or len(summary.prompts) <= 1:
        return []
    out = [
        "## Prompts × models",
        "",
        "| role | prompt | body | n | exact match | JSON valid | P50 ms |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for e in summary.experiments:
        out.append(
            f"| {e.role} | {e.prompt} | {e.body} | {e.n} | "
            f"{_fmt(e.exact_match, True)} | "
            f"{_fmt(e.json_valid_rate, True)} | {_fmt(e.latency_ms.p50)} |"
        )
    return [*out, ""]


def render_report(summary: RunSummary, plots: list[str]) -> str:
    """report.md: the table, the gate, per-category results, failures, plots."""
    out = _run_head(summary) + _passes_sections(summary.models)
    out += _comparison_lines(summary.comparison) + _gate_section(summary.gate)
    for m in summary.models:
        out += _model_section(m)
    out += _prompts_section(summary)
    if summary.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in summary.notes] + [""]
    out += [f"![{p}]({p})" for p in plots]
    return "\n".join(out) + "\n"
