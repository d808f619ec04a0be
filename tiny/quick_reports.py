"""The report call in process: the benchmark's report runners, sampled at its temperature, judged.

    python -m tiny.quick_reports --model data/models/tiny/aria-ft-dpo            # 40 reports
    python -m tiny.quick_reports --model <merged model> --reports 80 --show-failures

The seed's second call (DOMAIN.md) asks for a French report at temperature 0.3 with no
response_format. This asks a model folder the same prompt (`aria.prompts.report_messages`) for
the benchmark's report runners, without a server: the first `--reports` of the seeded order that
mixes `eval.jsonl` and `outside.jsonl` (`evaluation.inputs.report_order`; `make demo` sends its
first 40 to the served DPO model), sampled with transformers at the report's temperature, top-p 1,
torch seeded by `--seed`. Each report gets `aria.verdicts.report_verdict`: prose, names the rule's
pathology first, cites only numbers of the input, and passed when all three hold.

It scores the model, not the server: vLLM samples with its own generator, so its reports differ
one by one, and `make benchmark` remains the release measure. It exists so that a training change
can be judged on its reports without serving it (docs/training.md, "Judging a change in
process"). It prints the counts
per set and overall, then one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from aria.domain import MEASUREMENT_KEYS, RULES
from aria.logs import setup_logging
from aria.prompts import REPORT_MAX_TOKENS, REPORT_TEMPERATURE, report_messages
from aria.settings import Settings, get_settings
from aria.verdicts import named_pathologies, report_verdict

CHECKS = ("prose", "names_pathology", "grounded", "passed")


@dataclass
class QuickReportsConfig:
    """Which model, how many report runners, and how they are sampled."""

    model: Path
    eval_path: Path | None = None  # default: data/eval/eval.jsonl (outside.jsonl beside it)
    reports: int = 40
    seed: int = 0  # the runners' order (the benchmark's --seed) and the sampling's torch seed
    temperature: float = REPORT_TEMPERATURE
    max_new_tokens: int = REPORT_MAX_TOKENS
    batch_size: int = 10
    show_failures: bool = False


def findings_pathology(text: str) -> str | None:
    """The pathology of the first measurement key the report's findings line names (the first
    line that starts with `Constats`, `aria.references.reference_report`; else the first line),
    or None when it names none."""
    lines = text.strip().split("\n")
    findings = next((line for line in lines if line.startswith("Constats")), lines[0])
    found = [(findings.find(key), key) for key in MEASUREMENT_KEYS if key in findings]
    if not found:
        return None
    key = min(found)[1]
    return next(r.pathology for r in RULES if key in dict(r.thresholds))


def report_runners(eval_path: Path, n: int, seed: int) -> list:
    """The benchmark's first `n` report runners (evaluation.inputs.EvalItem) for these sets."""
    from evaluation.config import BenchmarkConfig
    from evaluation.inputs import load_eval, report_order

    outside = eval_path.with_name("outside.jsonl")
    cfg = BenchmarkConfig(
        targets=[],
        eval_path=eval_path,
        reports_dir=Path("reports"),
        outside_path=outside if outside.exists() else None,
        seed=seed,
    )
    return report_order(load_eval(cfg))[:n]


def tally(verdicts: list[tuple[str, dict]]) -> dict:
    """{set or `all`: {n, prose, names_pathology, grounded, passed}} from (set, verdict) pairs."""
    out: dict[str, dict] = {}
    for name, verdict in verdicts:
        for key in (name, "all"):
            counts = out.setdefault(key, {"n": 0} | {check: 0 for check in CHECKS})
            counts["n"] += 1
            for check in CHECKS:
                counts[check] += bool(verdict[check])
    return out


def quick_reports(cfg: QuickReportsConfig) -> dict:
    """Sample and judge the reports of cfg.eval_path's runners (`main` defaults it from the
    settings); the counts, and each failing report with why it fails."""
    from training.quick_eval import generate_answers

    eval_path = Path(cfg.eval_path)
    if not eval_path.exists():
        raise SystemExit(f"{eval_path} does not exist: run `make datasets` first")
    items = report_runners(eval_path, cfg.reports, cfg.seed)
    prompts = [report_messages(it.measurements) for it in items]
    started = time.perf_counter()
    texts = generate_answers(
        Path(cfg.model),
        prompts,
        cfg.batch_size,
        cfg.max_new_tokens,
        temperature=cfg.temperature,
        seed=cfg.seed,
    )
    verdicts, failures = [], []
    for it, messages, text in zip(items, prompts, texts, strict=True):
        verdict = report_verdict(text, it.measurements, it.pathology, messages[0]["content"])
        verdicts.append((it.set, verdict))
        if not verdict["passed"]:
            failures.append(
                {
                    "id": it.id,
                    "label": it.pathology,
                    "named": named_pathologies(text)[:1],
                    "findings_pathology": findings_pathology(text),
                    "problems": verdict["problems"],
                    "ungrounded": verdict["ungrounded"],
                    "text": text,
                }
            )
    misnamed = [f for f in failures if f["named"] and f["named"][0] != f["label"]]
    return {
        "model": str(cfg.model),
        "temperature": cfg.temperature,
        "seed": cfg.seed,
        "counts": tally(verdicts),
        # Reports naming another pathology than the rule's, and how many of them name the one
        # of the measurement their findings line picked (the choice of measurement was wrong).
        "misnamed": len(misnamed),
        "misnamed_following_findings": sum(
            f["named"][0] == f["findings_pathology"] for f in misnamed
        ),
        "seconds": time.perf_counter() - started,
        "failures": failures,
    }


def main(cfg: QuickReportsConfig, settings: Settings) -> dict:
    """Print the counts (and the failures with --show-failures), then the JSON line; the set is
    cfg.eval_path, else the settings' eval.jsonl."""
    result = quick_reports(replace(cfg, eval_path=cfg.eval_path or settings.eval_path))
    print(f"model     {result['model']}  (temperature {cfg.temperature}, seed {cfg.seed})")
    print(f"{'set':<9} {'n':>3} " + " ".join(f"{c:>15}" for c in CHECKS))
    counts_by_set = result["counts"]
    for name in sorted(counts_by_set, key=lambda name: (name == "all", name)):
        counts = counts_by_set[name]
        print(f"{name:<9} {counts['n']:>3} " + " ".join(f"{counts[c]:>15}" for c in CHECKS))
    print(
        f"naming another pathology than the rule's: {result['misnamed']}, of which "
        f"{result['misnamed_following_findings']} name the one of their findings' measurement"
    )
    if cfg.show_failures:
        for f in result["failures"]:
            why = ", ".join(
                f["problems"] + [f"ungrounded {f['ungrounded']}"] * bool(f["ungrounded"])
            )
            print(f"--- {f['id']}: rule {f['label']}, named {f['named']} {why}")
            print(f["text"][:400].replace("\n", " | "))
    print(json.dumps(result, ensure_ascii=False))
    return result


def parse_args(argv: list[str] | None = None) -> QuickReportsConfig:
    """Command-line flags → QuickReportsConfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder")
    parser.add_argument(
        "--eval-path", type=Path, default=None, help="eval.jsonl (outside.jsonl beside it)"
    )
    parser.add_argument(
        "--reports", type=int, default=40, help="report runners (the benchmark's first N)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=REPORT_TEMPERATURE)
    parser.add_argument("--max-new-tokens", type=int, default=REPORT_MAX_TOKENS)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--show-failures", action="store_true", help="print each failing report")
    a = parser.parse_args(argv)
    if a.reports < 1 or a.temperature < 0:
        parser.error("--reports must be >= 1 and --temperature >= 0")
    return QuickReportsConfig(
        a.model,
        a.eval_path,
        a.reports,
        a.seed,
        a.temperature,
        a.max_new_tokens,
        a.batch_size,
        a.show_failures,
    )


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    main(parse_args(), settings)
