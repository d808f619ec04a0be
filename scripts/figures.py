"""The README's table of current figures, rendered from the last benchmark and `make demo`'s stage times.

    python -m scripts.figures            # reports/latest/ -> docs/figures.json -> README.md's table
    python -m scripts.figures --check    # exit 1 when README.md's table is not docs/figures.json's
    make figures

With `reports/latest/summary.json` present (`make demo` or `make benchmark` ran), its figures and the
stage times `make demo` wrote beside it (`demo_stages.json`: seconds per stage, the machine, the
command) are gathered into `docs/figures.json`, the committed record of the current figures; without
it, `docs/figures.json` is rendered as it is. Either way the README's table between
`<!-- figures:start -->` and `<!-- figures:end -->` is rewritten in place, atomically, under a line
that gives the date, the machine and the command that measured the figures.

Everything but `main` and the two machine probes is pure: dicts in, text out (tests/test_figures.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aria.logs import setup_logging
from aria.settings import Settings, get_settings

log = logging.getLogger(__name__)

FIGURES_VERSION = 1
DEMO_STAGES_FILE = "demo_stages.json"  # what `make demo` writes next to summary.json
START, END = "<!-- figures:start -->", "<!-- figures:end -->"
BODIES = ("seed", "project")  # the order of the "a / b" pairs of the table
ROLE_NAMES = {"dpo": "DPO", "sft": "SFT", "base": "base"}
ROLE_ORDER = ("dpo", "sft", "base")  # production first
BODY_NAMES = {"seed": "the seed's body", "project": "the project's body"}
OPS = {">=": "≥", "<=": "≤", ">": ">", "<": "<"}


class FiguresError(ValueError):
    """A missing input or a README without its markers; the message names the fix."""


# ---------------------------------------------------------------- the machine that measured


def cpu_description(cpuinfo: str, cores: int) -> str:
    """`2 cores, AMD EPYC 7B13, AVX-512` from /proc/cpuinfo's text and the cores this process may
    use; the vector extension is what the CPU training speed follows (bf16 is emulated without
    AVX-512)."""
    model, flags = "unknown CPU", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown CPU":
            model = " ".join(value.split())
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{cores} core{'s' if cores != 1 else ''}, {model}, {vector}"


def this_machine() -> str:
    """The description of this machine (Linux's /proc/cpuinfo; the CPU model alone elsewhere)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text(encoding="utf-8", errors="replace") if cpuinfo.exists() else ""
    return cpu_description(text, cores or 1)


def stage_times_record(
    timings: Mapping[str, float], *, command: str, machine: str, finished_at: str, run_id: str
) -> dict[str, Any]:
    """What `make demo` writes to demo_stages.json: seconds per stage it ran, in order."""
    return {
        "run_id": run_id,
        "finished_at": finished_at,
        "machine": machine,
        "command": command,
        "stages": {name: round(seconds, 1) for name, seconds in timings.items()},
    }


# ---------------------------------------------------------------- summary.json -> figures


def _rate(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _lowest(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def body_figures(body: Mapping[str, Any]) -> dict[str, Any]:
    """The figures the table shows of one diagnostic body (a DiagnosticSummary's dict)."""
    justification, latency = body["justification"], body["latency_ms"]
    return {
        "n": body["n"],
        "exact_match": _rate(body["exact_match"]),
        "per_set": {
            name: {"n": figures["n"], "exact_match": _rate(figures["exact_match"])}
            for name, figures in body["per_set"].items()
        },
        "json_valid_rate": _rate(body["json_valid_rate"]),
        "cut_by_length_rate": _rate(body["cut_by_length_rate"]),
        "grounded_rate": _rate(justification["grounded_rate"]),
        "code_trace_rate": _rate(justification["code_trace_rate"]),
        "crossings_right_rate": _rate(justification.get("crossings_right_rate")),
        "confidence_accuracy": _rate(body["confidence_accuracy"]),
        "latency_p50_ms": _rate(latency["p50"], 2),
        "latency_p99_ms": _rate(latency["p99"], 2),
    }


def model_figures(model: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of one served model (a ModelSummary's dict): each body, reports, field orders."""
    report = model.get("report")
    orders = list((model.get("field_orders") or {}).values())
    return {
        "name": model["name"],
        "role": model["role"],
        "bodies": {name: body_figures(body) for name, body in model["bodies"].items()},
        "report": None
        if report is None
        else {
            key: report[key] if key == "n" else _rate(report[key])
            for key in ("n", "prose_rate", "names_pathology_rate", "grounded_rate", "passed_rate")
        },
        "field_orders": None
        if not orders
        else {
            "orders": len(orders),
            "n": min(o["n"] for o in orders),
            "exact_match_min": _rate(_lowest([o["exact_match"] for o in orders])),
            "key_order_rate_min": _rate(_lowest([o["key_order_rate"] for o in orders])),
        },
    }


def figures_from_summary(
    summary: Mapping[str, Any], stages: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """docs/figures.json's content from summary.json (aria.summary's schema, as a dict) and the
    demo's stage-times record of the same run (None: no stage times, machine not recorded)."""
    gate = summary["gate"]
    memory = gate.get("serving_memory")
    return {
        "figures_version": FIGURES_VERSION,
        "date": summary["finished_at"][:10],
        "run_id": summary["run_id"],
        "profile": summary["profile"],
        "machine": stages["machine"] if stages else None,
        "command": stages["command"] if stages else "make benchmark",
        "note": None,
        "stages": dict(stages["stages"]) if stages else None,
        "gate": {
            "model": gate["model"],
            "profile": gate["profile"],
            "passed": gate["passed"],
            "reason": gate.get("reason"),
            "failures": [
                {k: f[k] for k in ("body", "metric", "op", "target", "measured")}
                for f in gate["failures"]
            ],
        },
        "serving_memory": None if memory is None else {k: memory[k] for k in ("gb", "source")},
        "models": [model_figures(m) for m in summary["models"]],
    }


# ---------------------------------------------------------------- figures -> markdown


def percent(value: float | None) -> str:
    """`97.5 %`, `100 %`, `0 %`; `–` when not measured."""
    if value is None:
        return "–"
    shown = round(value * 100, 1)
    return f"{shown:.0f} %" if shown in (0, 100) else f"{shown:.1f} %"


def duration(seconds: float) -> str:
    """`4.4 s` under a minute, `20 min 29 s` above."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _per_body(model: Mapping[str, Any], show) -> str | None:
    """`a / b` over the bodies measured, in BODIES order; None when no body has the figure."""
    bodies = [model["bodies"].get(name) for name in BODIES if name in model["bodies"]]
    shown = [show(body) for body in bodies]
    return None if all(s is None for s in shown) else " / ".join(s or "–" for s in shown)


def _figure(key: str):
    return lambda body: None if body.get(key) is None else percent(body[key])


def _latency(body: Mapping[str, Any]) -> str | None:
    p50, p99 = body.get("latency_p50_ms"), body.get("latency_p99_ms")
    return None if p50 is None else f"{p50:.0f} · {p99:.0f} ms"


def _gate_value(metric: str, value: float | None) -> str:
    if value is None:
        return "not measured"
    if metric.endswith("_ms"):
        return f"{value:.0f} ms"
    if metric.endswith("_gb"):
        return f"{value:.2f} GB"
    return percent(value)


def gate_row(gate: Mapping[str, Any]) -> str:
    """The release gate's verdict in words: passed, the metrics it missed, or why not evaluated."""
    if gate["passed"] is None:
        return f"not evaluated: {gate.get('reason') or 'no production model'}"
    if gate["passed"]:
        return "passed on both bodies" if len(BODIES) == 2 else "passed"
    missed = [
        f"{f['metric']} on {BODY_NAMES.get(f['body'], f['body'])}: "
        f"{_gate_value(f['metric'], f['measured'])} (target {OPS.get(f['op'], f['op'])} "
        f"{_gate_value(f['metric'], f['target'])})"
        for f in gate["failures"]
    ]
    return "missed: " + "; ".join(missed)


def model_rows(model: Mapping[str, Any], *, production: bool) -> list[tuple[str, str | None]]:
    """The table's rows of one model: exact match on each eval set, the share cut by max_tokens
    where some were, reports and field orders where asked, and the production model's other
    figures (JSON valid, grounding, count of alert signals, confidence, latency)."""
    who = ROLE_NAMES.get(model["role"], model["name"])
    first = next(iter(model["bodies"].values()))
    rows = [
        (
            f"{who}: exact match, `{name}.jsonl` ({figures['n']})",
            _per_body(model, lambda b, s=name: percent(b["per_set"].get(s, {}).get("exact_match"))),
        )
        for name, figures in first["per_set"].items()
    ]
    if production:
        rows += [
            (f"{who}: JSON valid", _per_body(model, _figure("json_valid_rate"))),
            (f"{who}: justifications grounded", _per_body(model, _figure("grounded_rate"))),
            (
                f"{who}: count of alert signals right",
                _per_body(model, _figure("crossings_right_rate")),
            ),
            (f"{who}: confidence right", _per_body(model, _figure("confidence_accuracy"))),
            (f"{who}: latency P50 · P99", _per_body(model, _latency)),
        ]
    if any(b.get("cut_by_length_rate") for b in model["bodies"].values()):  # shown where some were
        rows.append((f"{who}: cut by max_tokens", _per_body(model, _figure("cut_by_length_rate"))))
    report = model.get("report")
    if report:
        rows.append(
            (
                f"{who}: reports ({report['n']}): prose · rule's pathology · grounded · all three",
                " · ".join(
                    percent(report[k])
                    for k in ("prose_rate", "names_pathology_rate", "grounded_rate", "passed_rate")
                ),
            )
        )
    orders = model.get("field_orders")
    if orders:
        rows.append(
            (
                f"{who}: the project's body in {orders['orders']} field orders ({orders['n']} "
                "each): exact match · keys in order, lowest order",
                f"{percent(orders['exact_match_min'])} · {percent(orders['key_order_rate_min'])}",
            )
        )
    return rows


def provenance(figures: Mapping[str, Any]) -> str:
    """The line above the table: date, machine, command, profile, and how to read a pair."""
    machine = figures.get("machine") or "a machine `make demo` did not record"
    note = f" ({figures['note']})" if figures.get("note") else ""
    return (
        f"Measured on {figures['date']} on {machine} by `{figures['command']}`{note}, "
        f"{figures['profile']} profile; `make figures` wrote this table from `docs/figures.json`. "
        "A pair a / b is the seed's diagnostic body / the project's."
    )


def render_table(figures: Mapping[str, Any]) -> str:
    """The README's block between the markers (without them): the provenance line and the table."""
    rows: list[tuple[str, str | None]] = []
    if figures.get("stages"):
        stages = figures["stages"]
        parts = ", ".join(f"{name} {duration(s)}" for name, s in stages.items())
        # The demo skips finished stages: say so, or a 7-minute run reads as the whole chain.
        reused = [
            s for s in ("datasets", "tiny-model", "train-sft", "train-dpo") if s not in stages
        ]
        note = f" ({', '.join(reused)} not run: their outputs were there)" if reused else ""
        rows.append(
            (
                "`make demo`, time of each stage",
                f"{parts}; {duration(sum(stages.values()))} in all{note}",
            )
        )
    gate = figures["gate"]
    rows.append(
        (f"release gate on `{gate['model']}` ({gate['profile']} thresholds)", gate_row(gate))
    )
    memory = figures.get("serving_memory")
    if memory:
        rows.append((f"serving memory ({memory['source']})", f"{memory['gb']:.2f} GB"))
    models = sorted(
        figures["models"],
        key=lambda m: ROLE_ORDER.index(m["role"]) if m["role"] in ROLE_ORDER else len(ROLE_ORDER),
    )
    for model in models:
        rows += model_rows(model, production=model["name"] == gate["model"])
    lines = ["| figure | value |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in rows if value is not None]
    return provenance(figures) + "\n\n" + "\n".join(lines) + "\n"


def replace_table(readme: str, block: str) -> str:
    """`readme` with the text between its figures markers replaced by `block`."""
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise FiguresError(f"README.md has no `{START}` ... `{END}` markers around its table")
    return f"{head}{START}\n{block}{END}{tail}"


def table_in(readme: str) -> str:
    """The block between the README's figures markers."""
    _, start, rest = readme.partition(START)
    block, end, _ = rest.partition(END)
    if not start or not end:
        raise FiguresError(f"README.md has no `{START}` ... `{END}` markers around its table")
    return block.removeprefix("\n")


# ---------------------------------------------------------------- the command


@dataclass
class FiguresConfig:
    """Where the figures come from and where they go."""

    reports_dir: Path | None = None  # default: the settings' ARIA_REPORTS_DIR
    figures_path: Path = Path("docs/figures.json")
    readme_path: Path = Path("README.md")
    check: bool = False


def gather(cfg: FiguresConfig) -> dict[str, Any] | None:
    """The figures of reports/latest/ (None when no benchmark ran here), validated by aria.summary."""
    from aria.summary import SummaryError, read_summary

    latest = cfg.reports_dir / "latest"
    summary_path = latest / "summary.json"
    if not summary_path.exists():
        return None
    try:
        read_summary(summary_path)  # refuses a summary that does not match the schema
    except SummaryError as error:
        raise FiguresError(str(error)) from None
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    stages_path = latest / DEMO_STAGES_FILE
    stages = json.loads(stages_path.read_text(encoding="utf-8")) if stages_path.exists() else None
    if stages and stages.get("run_id") != summary["run_id"]:
        log.warning(
            "%s: stage times of run %s, not %s: left out",
            stages_path,
            stages.get("run_id"),
            summary["run_id"],
        )
        stages = None
    return figures_from_summary(summary, stages)


def main(cfg: FiguresConfig, settings: Settings) -> int:
    """Gather the latest figures (of cfg.reports_dir, else the settings') into docs/figures.json
    (if a benchmark ran) and rewrite the README's table from it; with `check`, only compare."""
    from aria.files import atomic_write_json, atomic_write_text

    cfg = replace(cfg, reports_dir=cfg.reports_dir or settings.aria_reports_dir)
    readme = cfg.readme_path.read_text(encoding="utf-8")
    figures = None if cfg.check else gather(cfg)
    if figures is None:
        if not cfg.figures_path.exists():
            raise FiguresError(
                f"{cfg.figures_path} is missing and no benchmark ran: run `make demo`"
            )
        figures = json.loads(cfg.figures_path.read_text(encoding="utf-8"))
    else:
        atomic_write_json(cfg.figures_path, figures)
    updated = replace_table(readme, render_table(figures))
    if cfg.check:
        if updated != readme:
            log.error(
                "%s: its figures table is not %s's: run `make figures`",
                cfg.readme_path,
                cfg.figures_path,
            )
            return 1
        return 0
    if updated != readme:
        atomic_write_text(cfg.readme_path, updated)
    log.info(
        "%s: figures of %s (%s) from %s",
        cfg.readme_path,
        figures["date"],
        figures["command"],
        cfg.figures_path,
    )
    return 0


def parse_args(argv: list[str] | None = None) -> FiguresConfig:
    """Command-line flags → FiguresConfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    parser.add_argument("--figures", type=Path, default=FiguresConfig.figures_path)
    parser.add_argument("--readme", type=Path, default=FiguresConfig.readme_path)
    ns = parser.parse_args(argv)
    return FiguresConfig(None, ns.figures, ns.readme, ns.check)


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    try:  # a missing input or marker: its message, which names the fix, and exit 1
        raise SystemExit(main(parse_args(), settings))
    except FiguresError as error:
        raise SystemExit(str(error)) from None
