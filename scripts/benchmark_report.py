"""The human side of a benchmark run: PNG plots and the Markdown report.

Called by `scripts.benchmark` once a run is scored; it reads the summary and the records and
writes next to them. Pure rendering plus matplotlib (Agg), no network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aria.domain import PATHOLOGIES


def first_per_id(records: list[dict]) -> list[dict]:
    """The first record of each id: a resumed run may hold a line twice."""
    seen: dict[str, dict] = {}
    for r in records:
        seen.setdefault(r["id"], r)
    return list(seen.values())


def write_plots(
    run_dir: Path, models: list[dict], records_by_slug: dict[str, list[dict]]
) -> list[str]:
    """Latency histogram and CDF, per-pathology accuracy, confusion matrices, comparison bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []

    def save(fig: Any, name: str) -> None:
        tmp = run_dir / f".{name}.tmp"
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        os.replace(tmp, run_dir / name)
        written.append(name)

    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(11, 4))
    for m in models:
        xs = sorted(
            r["latency"]["e2e_ms"]
            for r in first_per_id(records_by_slug[m["slug"]])
            if r["status"] in ("ok", "unparsable")
        )
        if xs:
            hist.hist(xs, bins=30, alpha=0.5, label=m["role"])
            cdf.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=m["role"])
    hist.set(title="Diagnostic latency (warm)", xlabel="ms", ylabel="requests")
    cdf.set(title="Latency CDF", xlabel="ms", ylabel="share of requests", ylim=(0, 1.01))
    for ax in (hist, cdf):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    save(fig, "latency.png")

    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / max(len(models), 1)
    for j, m in enumerate(models):
        accs = [(m["per_pathology"].get(p) or {}).get("accuracy") or 0 for p in PATHOLOGIES]
        ax.bar([i + j * width for i in range(len(PATHOLOGIES))], accs, width, label=m["role"])
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(PATHOLOGIES))])
    ax.set_xticklabels([p.replace(" ", "\n", 1) for p in PATHOLOGIES], fontsize=8)
    ax.set(title="Exact match per pathology", ylabel="accuracy", ylim=(0, 1.05))
    ax.legend()
    save(fig, "per_pathology.png")

    for m in models:
        conf = m["confusion"]
        fig, ax = plt.subplots(figsize=(7, 5.5))
        ax.imshow(conf["matrix"], cmap="Blues")
        for i, row in enumerate(conf["matrix"]):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
        ax.set_xticks(
            range(len(conf["columns"])), conf["columns"], rotation=45, ha="right", fontsize=7
        )
        ax.set_yticks(range(len(conf["rows"])), conf["rows"], fontsize=7)
        ax.set(
            title=f"Confusion matrix — {m['role']} ({m['name']})", xlabel="predicted", ylabel="true"
        )
        save(fig, f"confusion_{m['slug']}.png")

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    names = [m["role"] for m in models]
    em = [m["exact_match"] or 0 for m in models]
    errs = [
        [e - (m["exact_match_ci95"] or [e, e])[0] for e, m in zip(em, models, strict=True)],
        [(m["exact_match_ci95"] or [e, e])[1] - e for e, m in zip(em, models, strict=True)],
    ]
    axes[0].bar(names, em, yerr=errs, capsize=4)
    axes[0].set(title="Exact match (95% CI)", ylim=(0, 1.05))
    axes[1].bar(names, [m["json_valid_rate"] or 0 for m in models])
    axes[1].set(title="JSON valid rate", ylim=(0, 1.05))
    p50 = [m["latency_ms"]["p50"] or 0 for m in models]
    p99 = [m["latency_ms"]["p99"] or 0 for m in models]
    xs = range(len(models))
    axes[2].bar([x - 0.2 for x in xs], p50, 0.4, label="P50")
    axes[2].bar([x + 0.2 for x in xs], p99, 0.4, label="P99")
    axes[2].set_xticks(list(xs), names)
    axes[2].set(title="Latency (ms)")
    axes[2].legend()
    save(fig, "comparison.png")

    if any(m.get("sweep") for m in models):
        fig, (thr, lat) = plt.subplots(1, 2, figsize=(11, 4))
        for m in models:
            steps = m.get("sweep") or []
            cs = [s["concurrency"] for s in steps]
            thr.plot(cs, [s["throughput_rps"] or 0 for s in steps], marker="o", label=m["role"])
            lat.plot(cs, [s["latency_ms"]["p99"] or 0 for s in steps], marker="o", label=m["role"])
        thr.set(title="Throughput", xlabel="concurrency", ylabel="requests/s", xscale="log")
        lat.set(title="P99 latency", xlabel="concurrency", ylabel="ms", xscale="log")
        thr.legend()
        lat.legend()
        save(fig, "sweep.png")
    return written


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if pct else f"{value:.0f}"


def models_table(models: list[dict]) -> str:
    """The comparison table (markdown) printed at the end and written into report.md."""
    lines = [
        "| role | model | n | JSON valid | schema valid | exact match (95% CI) | confiance | "
        "P50 ms | P95 ms | P99 ms | TTFT P50 ms | cold ms | goodput | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in models:
        ci = m["exact_match_ci95"]
        ci_text = f" ({100 * ci[0]:.0f}–{100 * ci[1]:.0f})" if ci else ""
        lat = m["latency_ms"]
        lines.append(
            f"| {m['role']} | {m['name']} | {m['n']} | {_fmt(m['json_valid_rate'], True)} | "
            f"{_fmt(m['schema_valid_rate'], True)} | {_fmt(m['exact_match'], True)}{ci_text} | "
            f"{_fmt(m['confidence_accuracy'], True)} | {_fmt(lat['p50'])} | {_fmt(lat['p95'])} | "
            f"{_fmt(lat['p99'])} | {_fmt(m['ttft_ms']['p50'])} | {_fmt(m.get('cold_ms'))} | "
            f"{_fmt(m['goodput'], True)} | {sum(m['errors'].values())} |"
        )
    return "\n".join(lines)


def render_report(summary: dict, plots: list[str]) -> str:
    """report.md: the table, the gate, per-category results, failures, plots."""
    out = [f"# Benchmark {summary['run_id']}", ""]
    out += [
        f"Profile `{summary['profile']}`, {summary['eval']['n_items']} eval items from "
        f"`{summary['eval']['path']}`, prompts {', '.join(summary['prompts'])}; "
        f"started {summary['started_at']}, finished {summary['finished_at']}.",
        "",
        "## Models",
        "",
        models_table(summary["models"]),
        "",
    ]
    comp = summary["comparison"]
    out += [f"Winner (quality first, latency second): **{comp['winner']}**.", ""]
    if comp["recommendation"]:
        out += [f"Recommendation: {comp['recommendation']['text']}", ""]
    for d in comp["deltas"]:
        em = d["exact_match"]
        if em:
            out.append(
                f"- {d['from']} → {d['to']}: exact match {100 * em['delta']:+.1f} points "
                f"(95% CI {100 * em['ci95_low']:+.1f} to {100 * em['ci95_high']:+.1f}, "
                f"{d['n_paired']} paired items)"
            )
    gate = summary["gate"]
    out += ["", "## Release gate", ""]
    if gate["passed"] is None:
        out.append(f"Not evaluated: {gate.get('reason')}")
    else:
        out.append(
            f"Model **{gate['model']}** ({gate['role']}): **{'PASSED' if gate['passed'] else 'FAILED'}**"
        )
        out.append("")
        out += [f"- {'✓' if c['passed'] else '✗'} {c['message']}" for c in gate["checked"]]
    out += ["", "Serving VRAM (< 10 GB) is measured with nvidia-smi on GPU; not gated here.", ""]
    for m in summary["models"]:
        out += [
            f"## {m['role']} ({m['name']})",
            "",
            "| pathology | n | exact match |",
            "|---|---:|---:|",
        ]
        out += [
            f"| {p} | {c['n']} | {_fmt(c['accuracy'], True)} |"
            for p, c in m["per_pathology"].items()
        ]
        out += ["", "| slice | n | exact match |", "|---|---:|---:|"]
        out += [
            f"| {s} | {c['n']} | {_fmt(c['accuracy'], True)} |" for s, c in m["per_slice"].items()
        ]
        cal = m["calibration"]
        bands = ", ".join(
            f"{b} {_fmt(v['accuracy'], True)} (n={v['n']})" for b, v in cal["bands"].items()
        )
        j = m["justification"]
        out += [
            "",
            f"Calibration (pathology accuracy per announced confiance): {bands}; "
            f"monotonic: {cal['monotonic']}.",
            f"Justification (n={j['n']}): numbers grounded {_fmt(j['grounded_rate_mean'], True)}, "
            f"anchoring {_fmt(j['anchoring_mean'], True)}, flagged as hallucinating "
            f"{_fmt(j['hallucinated_rate'], True)}, deciding keys named "
            f"{_fmt(j['keyword_coverage_mean'], True)}.",
        ]
        if m["report"]:
            r = m["report"]
            sim = "–" if r["similarity_mean"] is None else f"{r['similarity_mean']:.3f}"
            out.append(
                f"Reports (n={r['n']}, answered {r['answered']}): numbers grounded "
                f"{_fmt(r['grounded_rate_mean'], True)}, anchoring {_fmt(r['anchoring_mean'], True)}, "
                f"similarity to the reference {sim}."
            )
        if m["failed_ids"]:
            out.append("")
            out += [f"- {status}: {', '.join(ids[:20])}" for status, ids in m["failed_ids"].items()]
        if m.get("sweep"):
            out += [
                "",
                "| concurrency | n | req/s | tok/s | P50 ms | P99 ms | goodput |",
                "|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for s in m["sweep"]:
                out.append(
                    f"| {s['concurrency']} | {s['n']} | {s['throughput_rps'] or 0:.2f} | "
                    f"{s['output_tokens_per_s'] or 0:.1f} | {_fmt(s['latency_ms']['p50'])} | "
                    f"{_fmt(s['latency_ms']['p99'])} | {_fmt(s['goodput'], True)} |"
                )
        out.append("")
    if summary["experiments"] and len(summary["prompts"]) > 1:
        out += [
            "## Prompts × models",
            "",
            "| role | prompt | n | exact match | JSON valid | P50 ms |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for e in summary["experiments"]:
            out.append(
                f"| {e['role']} | {e['prompt']} | {e['n']} | {_fmt(e['exact_match'], True)} | "
                f"{_fmt(e['json_valid_rate'], True)} | {_fmt(e['latency_ms']['p50'])} |"
            )
        out.append("")
    if summary["notes"]:
        out += ["## Notes", ""] + [f"- {n}" for n in summary["notes"]] + [""]
    out += [f"![{p}]({p})" for p in plots]
    return "\n".join(out) + "\n"
