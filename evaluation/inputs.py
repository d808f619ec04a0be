"""What the benchmark sends: the eval sets, their items, the prompts, the field-order subsets.

Items come from data/eval/eval.jsonl and, when it exists, data/eval/outside.jsonl; each carries
what the labelling rule (aria.domain) says about its measurements.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from aria import metrics
from aria.domain import RULES, format_value, label, validate_measurements
from aria.prompts import DIAGNOSTIC_TEMPLATE, render_prompt
from evaluation.config import (
    DEFAULT_PROMPT,
    EVAL_SET,
    OUTSIDE_SET,
    BenchmarkConfig,
    SetupError,
    Target,
)


@dataclass
class EvalItem:
    """One eval runner's measurements with what the rule says about them."""

    id: str
    measurements: dict
    pathology: str
    confidence: str
    slices: list[str]
    set: str = EVAL_SET  # the eval set it comes from
    rank: int = 0  # position in its set's seeded shuffle: --limit and limit=N keep the lowest


def parse_eval_record(record: dict) -> EvalItem:
    """An eval line ({id, profile, label, confidence, slice}, as `make datasets` writes) -> EvalItem.

    The truth is the rule's label (a stored `label`/`confidence` must agree with it); slices are the
    record's `slice` (or `slices`), else derived from the rule by metrics.measurement_slices.
    """
    measurements = record.get("profile") or record.get("input") or record
    if not isinstance(measurements, dict):
        raise ValueError("`profile` must be an object of measurements")
    validate_measurements(measurements)
    pathology, confidence = label(measurements)
    for field_name, truth in (("label", pathology), ("confidence", confidence)):
        if record.get(field_name) is not None and record[field_name] != truth:
            raise ValueError(
                f"{field_name} {record[field_name]!r} disagrees with the rule's {truth!r}"
            )
    slices = record.get("slices") or record.get("slice") or metrics.measurement_slices(measurements)
    slices = [slices] if isinstance(slices, str) else [str(s) for s in slices]
    if "id" not in record:
        raise ValueError("missing `id`")
    return EvalItem(str(record["id"]), measurements, pathology, confidence, slices)


def eval_sets(cfg: BenchmarkConfig) -> dict[str, Path]:
    """{set name: path} of the run: `eval`, then `outside` when there is one."""
    sets = {EVAL_SET: cfg.eval_path}
    if cfg.outside_path is not None:
        sets[OUTSIDE_SET] = cfg.outside_path
    return sets


def load_eval(cfg: BenchmarkConfig, limit: int | None = None) -> list[EvalItem]:
    """Every eval set's items, or for each set its seeded sample of `limit` items, in file order.

    Each item's `rank` is its place in a shuffle of its set seeded by --seed, so the items of
    rank < N are a seeded sample of N, and a smaller sample is part of a larger one.
    """
    from aria.files import DataError, read_jsonl

    items: list[EvalItem] = []
    for name, path in eval_sets(cfg).items():
        if not path.exists():
            fix = "run `make datasets` first" if name == EVAL_SET else "or pass --no-outside"
            raise SetupError(f"{path} does not exist: {fix}")
        try:
            loaded = read_jsonl(path, parse_eval_record)
        except DataError as e:
            raise SetupError(str(e)) from None
        if not loaded:
            raise SetupError(f"{path} is empty: run `make datasets` again")
        order = list(range(len(loaded)))
        random.Random(f"{cfg.seed}-{name}").shuffle(order)
        for rank, index in enumerate(order):
            loaded[index].set, loaded[index].rank = name, rank
        items += [it for it in loaded if limit is None or it.rank < limit]
    ids = Counter(it.id for it in items)
    if len(ids) != len(items):
        twice = next(i for i, n in ids.items() if n > 1)
        raise SetupError(
            f"eval id {twice!r} appears twice in {', '.join(map(str, eval_sets(cfg).values()))}"
        )
    return items


def report_order(items: list[EvalItem]) -> list[EvalItem]:
    """The report runners' order: one seeded order mixing the sets (each set's rank, then the
    set), so that the first N alternate between eval.jsonl and outside.jsonl. The benchmark's
    report pass and `tiny.quick_reports` take its first N."""
    return sorted(items, key=lambda it: (it.rank, it.set))


def target_items(t: Target, items: list[EvalItem]) -> list[EvalItem]:
    """The run's items this target is asked: its sets, and per set its `limit` lowest ranks."""
    return [
        it
        for it in items
        if (t.sets is None or it.set in t.sets) and (t.limit is None or it.rank < t.limit)
    ]


def order_key(order: tuple[str, ...]) -> str:
    """A field order as summary.json names it: `pathologie,confiance,justification`."""
    return ",".join(order)


def order_slug(order: tuple[str, ...]) -> str:
    """A field order's short, stable file name: the keys' initials (`cjp`)."""
    return "".join(key[0] for key in order)


def order_items(t: Target, items: list[EvalItem]) -> list[EvalItem]:
    """The items of the target's field-order passes, from its own items (target_items): all
    of them, or with orders=N the N lowest ranks of its first eval set, so that they are part
    of what its project pass asks."""
    if t.orders is None or not items:
        return items
    first_set = items[0].set  # the run's items come set by set, eval.jsonl's first
    return [it for it in items if it.set == first_set and it.rank < t.orders]


def thresholds_text() -> str:
    """The signal thresholds of the rule, for a prompt's `{thresholds}` field."""
    clauses = [
        " et ".join(f"{key} > {format_value(key, t)}" for key, t in rule.thresholds)
        for rule in RULES
    ]
    return ", ".join(clauses)


def load_prompts(cfg: BenchmarkConfig, example: dict) -> dict[str, str]:
    """{name: template}: `default` is aria.prompts.DIAGNOSTIC_TEMPLATE, the others the folder's files,
    each checked by rendering it with one runner's `example` measurements.

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
            render_prompt(example, template)
        except (KeyError, IndexError, ValueError) as e:
            raise SetupError(
                f"{cfg.prompts_dir / (name + '.txt')}: bad template field {e}; "
                "use {measurements}, {context} and {thresholds} only"
            ) from None
    return chosen
