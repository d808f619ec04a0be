"""Generate the SFT, DPO and eval datasets from the labelling rule (seeded, deterministic).

    python -m preparation.generate_datasets                 # make datasets
    python -m preparation.generate_datasets --seed 7 --n-sft 300 --out-dir /tmp/aria-data

Writes, atomically, under --out-dir (default: ARIA_DATA_DIR, i.e. data/):
- training/sft.jsonl: TRL conversational prompt-completion records, ~88% diagnostic JSON, ~12% report;
- training/sft_extended.jsonl: sft.jsonl plus fresh diagnostic records (the tiny profile's set);
- training/dpo.jsonl: prompt / chosen (the reference JSON) / rejected (one of four kinds of error);
- eval/eval.jsonl: held-out runners with the rule's label, none of them seen in training;
- training/stats.json: the counts printed at the end.
Profiles come from `aria.population` (realistic runners, balanced over the six labels and the four
slices); every label, completion and chosen answer comes from `aria.domain` and `aria.references`.
(Just over 400 lines: the record builders of the five files and their CLI, one command.)
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aria.domain import (
    CONFIDENCES,
    CONTEXT_KEYS,
    PATHOLOGIES,
    label,
)
from aria.files import atomic_write_json, atomic_write_jsonl
from aria.logs import setup_logging
from aria.population import (
    HARD_SLICE_WEIGHTS,
    SLICES,
    balanced_plan,
    canonical_measurements,
    outside_measurements,
    sample_measurements,
    slice_of,
)
from aria.prompts import diagnostic_messages, report_messages
from aria.records import (
    REJECTION_KINDS,
    check_no_leakage,
    check_unique_ids,
    dataset_stats,
    validate_dpo_record,
    validate_eval_record,
    validate_sft_record,
)
from aria.references import (
    reference_diagnostic,
    reference_report,
)
from aria.schema import FIELD_ORDER, FIELD_ORDERS
from aria.settings import Settings, get_settings
from preparation.rejected import rejected_answer

log = logging.getLogger(__name__)

REPORT_SHARE = 0.12  # share of report records in sft.jsonl; the rest teach the diagnostic JSON
# Share of reports among the extra runners of sft_extended.jsonl (the tiny profile's SFT set). Since
# the prompts rank the table, the tiny model learns the diagnostic in fewer steps than the report:
# twice sft.jsonl's share gave 79 of 80 reports at 450 steps, 12 % gave 55 (docs/training.md,
# "The tiny recipe").
EXTENDED_REPORT_SHARE = 0.24
# Share of diagnostic answers written in the seed's field order (the canonical one); the rest are
# spread evenly over the five other orders, so that a client's schema in any order gets a right
# answer (xgrammar writes the properties in the schema's order; docs/training.md, "What the
# answers teach").
CANONICAL_ORDER_SHARE = 0.5
# Share of reports whose prompt has no context line (the runner's age, pace, pain...): a client
# may send the measurements alone, and a model that only saw reports with context answered those
# with JSON (docs/training.md, "What the answers teach").
REPORT_NO_CONTEXT_SHARE = 0.5
# Share of the tiny profile's extra runners whose measurements that do not decide are drawn
# independently (aria.population.sample_measurements): the population's laws correlate them (valgus
# and adduction, step length and heel strike), and a model can learn those correlations instead
# of comparing each measurement with its threshold. All of them: that measured better on
# outside.jsonl than half (docs/training.md, "What the answers teach").
INDEPENDENT_SHARE = 1.0


def answer_order(rng: random.Random) -> tuple[str, ...]:
    """The field order of one diagnostic answer: the seed's with CANONICAL_ORDER_SHARE, else
    one of the other five, uniformly."""
    if rng.random() < CANONICAL_ORDER_SHARE:
        return FIELD_ORDER
    return rng.choice([o for o in FIELD_ORDERS if o != FIELD_ORDER])


@dataclass
class GenerateConfig:
    """What to generate and where; the defaults give the datasets the recipes expect."""

    seed: int = 1234
    n_sft: int = 1500
    n_dpo: int = 420
    n_eval: int = 360
    # sft_extended.jsonl: sft.jsonl plus fresh diagnostic draws up to this size. The tiny profile trains on
    # it: a randomly initialised model knows no language and learns the rule from more distinct
    # runners, not from more passes over the same 1,500 (MedGemma's recipe uses sft.jsonl).
    n_sft_extended: int = 12000
    # Share of reports among the extra runners of sft_extended.jsonl (sft.jsonl keeps REPORT_SHARE).
    extended_report_share: float = EXTENDED_REPORT_SHARE
    # eval/outside.jsonl: runners drawn by aria.population.outside_measurements (independent uniform
    # measurements, not the training data's runners), an equal share per slice.
    n_outside: int = 300
    out_dir: Path | None = None  # default: settings.aria_data_dir

    def __post_init__(self) -> None:
        if not 0.0 <= self.extended_report_share <= 1.0:
            raise ValueError(
                "extended_report_share (--extended-report-share) must be a share in [0, 1], "
                f"got {self.extended_report_share:g}"
            )


def _fresh_measurements(
    rng: random.Random,
    target: str,
    slice_name: str,
    seen: set[tuple[float, ...]],
    independent_share: float = 0.0,
) -> dict[str, Any]:
    """Measurements no earlier record has: resample on collision. A share
    `independent_share` of the draws are independent (`aria.population.sample_measurements`)."""
    for _ in range(1000):
        independent = bool(independent_share) and rng.random() < independent_share
        measurements = sample_measurements(rng, target, slice_name, independent)
        key = canonical_measurements(measurements)
        if key not in seen:
            seen.add(key)
            return measurements
    raise RuntimeError(f"no fresh {slice_name} profile for {target}: lower the counts")


def _labelled(measurements: dict[str, Any], slice_name: str) -> dict[str, Any]:
    pathology, confiance = label(measurements)
    return {
        "profile": measurements,
        "label": pathology,
        "confidence": confiance,
        "slice": slice_name,
    }


def _sft_records(
    rng: random.Random,
    n: int,
    seen: set[tuple[float, ...]],
    report_share: float = REPORT_SHARE,
    slice_weights: dict[str, float] | None = None,
    independent_share: float = 0.0,
) -> list[dict]:
    """`n` SFT records on fresh runners, `report_share` of them reports (REPORT_NO_CONTEXT_SHARE
    of those without the context line), balanced, shuffled."""
    n_report = round(n * report_share)
    sft: list[dict] = []
    for kind, n_kind in (("diagnostic", n - n_report), ("report", n_report)):
        for target, slice_name in balanced_plan(n_kind, slice_weights):
            measurements = _fresh_measurements(rng, target, slice_name, seen, independent_share)
            if kind == "diagnostic":
                prompt = diagnostic_messages(measurements)
                answer = reference_diagnostic(measurements).to_json(answer_order(rng))
            else:
                if rng.random() < REPORT_NO_CONTEXT_SHARE:
                    measurements = {k: v for k, v in measurements.items() if k not in CONTEXT_KEYS}
                prompt = report_messages(measurements)
                answer = reference_report(measurements)
            sft.append(
                {
                    "prompt": prompt,
                    "completion": [{"role": "assistant", "content": answer}],
                    "kind": kind,
                    **_labelled(measurements, slice_name),
                }
            )
    rng.shuffle(sft)
    return sft


def outside_records(seed: int, n: int, seen: set[tuple[float, ...]]) -> list[dict]:
    """`n` eval records of `outside_measurements` draws, an equal share per slice (rejection-sampled
    by `slice_of`), none of them in `seen`; ids outside-0001..."""
    rng = random.Random(f"aria-outside-{seed}")
    quota = {s: n // len(SLICES) + (i < n % len(SLICES)) for i, s in enumerate(SLICES)}
    records: list[dict] = []
    for _ in range(1000 * max(n, 1)):
        if not any(quota.values()):
            break
        measurements = outside_measurements(rng)
        slice_name = slice_of(measurements)
        key = canonical_measurements(measurements)
        if slice_name is None or not quota[slice_name] or key in seen:
            continue
        quota[slice_name] -= 1
        seen.add(key)
        records.append(_labelled(measurements, slice_name))
    else:
        raise RuntimeError(f"could not draw {n} outside profiles: lower --n-outside")
    rng.shuffle(records)
    return [{"id": f"outside-{i:04d}", **r} for i, r in enumerate(records, start=1)]


def build_datasets(
    cfg: GenerateConfig,
) -> tuple[list[dict], list[dict], list[dict], list[dict], list[dict]]:
    """(sft, sft_extra, dpo, eval, outside) records for `cfg`; same config, same records. Validated.

    `sft_extra` holds the records that sft_extended.jsonl adds to sft.jsonl; no eval or outside
    runner is in any training split.
    """
    rng = random.Random(f"aria-datasets-{cfg.seed}")
    seen: set[tuple[float, ...]] = set()

    # Eval first, so that its runners are reserved before any training runner is drawn.
    evaluation = [
        _labelled(_fresh_measurements(rng, target, slice_name, seen), slice_name)
        for target, slice_name in balanced_plan(cfg.n_eval)
    ]
    rng.shuffle(evaluation)
    evaluation = [{"id": f"eval-{i:04d}", **r} for i, r in enumerate(evaluation, start=1)]

    sft = _sft_records(rng, cfg.n_sft, seen)

    dpo: list[dict] = []
    # The plan is grouped by label: cycling the kinds in plan order balances kinds within labels.
    for i, (target, slice_name) in enumerate(balanced_plan(cfg.n_dpo)):
        measurements = _fresh_measurements(rng, target, slice_name, seen)
        kind = REJECTION_KINDS[i % len(REJECTION_KINDS)]
        order = answer_order(rng)
        chosen = reference_diagnostic(measurements).to_json(order)
        dpo.append(
            {
                "prompt": diagnostic_messages(measurements),
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [
                    {
                        "role": "assistant",
                        "content": rejected_answer(rng, measurements, kind, chosen, order),
                    }
                ],
                "rejection_kind": kind,
                **_labelled(measurements, slice_name),
            }
        )
    rng.shuffle(dpo)

    # Drawn last, so that sft.jsonl, dpo.jsonl and eval.jsonl do not depend on its size. Reports
    # in EXTENDED_REPORT_SHARE: 180 reports were too few for a random-init model to write one
    # (it answered the report call with JSON fragments). More of the hard slices: the tiny model
    # gets the clear ones right early.
    n_extra = max(cfg.n_sft_extended - len(sft), 0)
    extra = _sft_records(
        rng,
        n_extra,
        seen,
        report_share=cfg.extended_report_share,
        slice_weights=HARD_SLICE_WEIGHTS,
        independent_share=INDEPENDENT_SHARE,
    )
    for r in sft + extra:
        validate_sft_record(r)
    for r in dpo:
        validate_dpo_record(r)
    # Its own random stream, drawn last: the other files do not depend on it.
    outside = outside_records(cfg.seed, cfg.n_outside, seen)
    for r in evaluation + outside:
        validate_eval_record(r)
    check_unique_ids(evaluation + outside)
    check_no_leakage(sft + extra + dpo, evaluation + outside)
    return sft, extra, dpo, evaluation, outside


def format_summary(stats: dict[str, Any]) -> str:
    """One screen: labels x split, slices x split, confidences x split, rejection kinds."""
    splits = list(stats["label"])
    width = max(len(p) for p in PATHOLOGIES) + 2
    head = "".join(f"{s:>16}" for s in splits)
    lines = [f"{'label':<{width}}{head}"]
    for p in PATHOLOGIES:
        lines.append(f"{p:<{width}}" + "".join(f"{stats['label'][s][p]:>16}" for s in splits))
    lines.append("")
    lines.append(f"{'slice':<{width}}{head}")
    for sl in SLICES:
        lines.append(f"{sl:<{width}}" + "".join(f"{stats['slice'][s][sl]:>16}" for s in splits))
    lines.append("")
    lines.append(f"{'confidence':<{width}}{head}")
    for c in CONFIDENCES:
        lines.append(f"{c:<{width}}" + "".join(f"{stats['confidence'][s][c]:>16}" for s in splits))
    lines.append("")
    kinds = ", ".join(f"{k} {n}" for k, n in stats["rejection_kind"].items())
    lines.append(f"DPO rejection kinds: {kinds}")
    return "\n".join(lines)


def main(cfg: GenerateConfig, settings: Settings) -> dict[str, Any]:
    """Generate, validate and write the datasets and stats.json (under cfg.out_dir, else the
    settings' data folder); prints the counts table and the JSON line, returns the stats."""
    start = time.perf_counter()
    out_dir = Path(cfg.out_dir) if cfg.out_dir is not None else settings.aria_data_dir
    sft, extra, dpo, evaluation, outside = build_datasets(cfg)
    stats = dataset_stats(sft, dpo, evaluation)
    stats["generation"] = {
        **{k: v for k, v in asdict(cfg).items() if k != "out_dir"},
        "report_share": REPORT_SHARE,
        "report_no_context_share": REPORT_NO_CONTEXT_SHARE,
        "independent_share": INDEPENDENT_SHARE,
        "command": "python -m preparation.generate_datasets"
        + f" --seed {cfg.seed} --n-sft {cfg.n_sft} --n-dpo {cfg.n_dpo} --n-eval {cfg.n_eval}"
        + f" --n-sft-extended {cfg.n_sft_extended} --n-outside {cfg.n_outside}"
        + f" --extended-report-share {cfg.extended_report_share}",
        "sft_extended_records": len(sft) + len(extra),
    }
    atomic_write_jsonl(out_dir / "eval" / "eval.jsonl", evaluation)
    atomic_write_jsonl(out_dir / "eval" / "outside.jsonl", outside)
    atomic_write_jsonl(out_dir / "training" / "sft.jsonl", sft)
    atomic_write_jsonl(out_dir / "training" / "sft_extended.jsonl", sft + extra)
    atomic_write_jsonl(out_dir / "training" / "dpo.jsonl", dpo)
    atomic_write_json(out_dir / "training" / "stats.json", stats)
    print(format_summary(stats))
    log.info(
        "wrote %d SFT (%d in sft_extended.jsonl), %d DPO, %d eval and %d outside records under %s "
        "in %.1f s (no eval profile in training)",
        len(sft),
        len(sft) + len(extra),
        len(dpo),
        len(evaluation),
        len(outside),
        out_dir,
        time.perf_counter() - start,
    )
    print(json.dumps({"records": stats["records"], "out_dir": str(out_dir)}))
    return stats


def parse_args(argv: list[str] | None = None) -> GenerateConfig:
    """CLI flags -> GenerateConfig."""
    defaults = GenerateConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--n-sft", type=int, default=defaults.n_sft)
    parser.add_argument("--n-dpo", type=int, default=defaults.n_dpo)
    parser.add_argument("--n-eval", type=int, default=defaults.n_eval)
    parser.add_argument(
        "--n-sft-extended",
        type=int,
        default=defaults.n_sft_extended,
        help="size of sft_extended.jsonl (sft.jsonl plus fresh draws; the tiny profile's SFT set)",
    )
    parser.add_argument(
        "--extended-report-share",
        type=float,
        default=defaults.extended_report_share,
        help="share of reports among the extra runners of sft_extended.jsonl",
    )
    parser.add_argument(
        "--n-outside",
        type=int,
        default=defaults.n_outside,
        help="size of eval/outside.jsonl (independent uniform profiles, equal share per slice)",
    )
    parser.add_argument("--out-dir", type=Path, default=None, help="default: ARIA_DATA_DIR")
    args = parser.parse_args(argv)
    for name in ("n_sft", "n_dpo", "n_eval"):
        if getattr(args, name) < len(PATHOLOGIES):
            parser.error(f"--{name.replace('_', '-')} must be at least {len(PATHOLOGIES)}")
    try:
        return GenerateConfig(**vars(args))
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    main(parse_args(sys.argv[1:]), settings)
