"""Benchmark statistics: latency percentiles, goodput, shares, exact match and accuracy by group,
the confusion matrix, calibration, bootstrap intervals.

    >>> from aria.metrics import percentile, latency_summary
    >>> percentile([10, 20, 30, 40], 50)
    25.0

Pure Python and numpy (no torch), so the benchmark's numbers are unit-tested in milliseconds.
Every function takes plain lists and dicts and returns JSON-serialisable values (no NaN: a
quantity that cannot be computed is None). The verdicts on one answer's text are in aria.verdicts,
guided JSON's conformance in aria.schema, the release gate in evaluation.gate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aria.domain import CONFIDENCES, PATHOLOGIES, exceedances

INVALID = "(invalide)"  # confusion-matrix column of answers that name no canonical label
NEAR_THRESHOLD_MARGIN = 0.05  # |top exceedance| or top-two gap below this: a borderline runner


# ---------------------------------------------------------------- latency


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks.

    Sorted values x[0..n-1] sit at ranks 0..n-1; the percentile is read at rank q/100*(n-1) and
    interpolated linearly between its two neighbours (NumPy's default "linear" method, R type 7).
    None for an empty input.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    xs = sorted(float(v) for v in values)
    if not xs:
        return None
    rank = q / 100 * (len(xs) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(xs) - 1)
    return xs[low] + (xs[high] - xs[low]) * (rank - low)


def latency_summary(values_ms: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p95, p99, mean, min and max of latencies in milliseconds (None when empty)."""
    xs = [float(v) for v in values_ms]
    return {
        "count": len(xs),
        "p50": percentile(xs, 50),
        "p95": percentile(xs, 95),
        "p99": percentile(xs, 99),
        "mean": sum(xs) / len(xs) if xs else None,
        "min": min(xs) if xs else None,
        "max": max(xs) if xs else None,
    }


def goodput(latencies_ms: Sequence[float | None], target_ms: float) -> float | None:
    """Share of requests that succeeded under `target_ms`; a failed request (None) counts as missed."""
    if not latencies_ms:
        return None
    good = sum(1 for v in latencies_ms if v is not None and v < target_ms)
    return good / len(latencies_ms)


# ---------------------------------------------------------------- shares


def share(flags: Sequence[bool]) -> float | None:
    """Share of True in `flags`, None when empty."""
    return sum(map(bool, flags)) / len(flags) if flags else None


def as_percent(value: float | None, missing: str = "—") -> str:
    """A share in [0, 1] as a percentage with one decimal (`12.5 %`), or `missing` for None."""
    return missing if value is None else f"{100 * value:.1f} %"


# ---------------------------------------------------------------- accuracy


def exact_match(expected: Sequence[str], predicted: Sequence[str | None]) -> float | None:
    """Share of items whose predicted label equals the expected canonical string."""
    if len(expected) != len(predicted):
        raise ValueError("expected and predicted must have the same length")
    if not expected:
        return None
    return sum(1 for e, p in zip(expected, predicted, strict=True) if e == p) / len(expected)


def accuracy_by_group(groups: Sequence[str], correct: Sequence[bool]) -> dict[str, dict[str, Any]]:
    """{group: {n, correct, accuracy}} in first-seen order."""
    out: dict[str, dict[str, Any]] = {}
    for group, ok in zip(groups, correct, strict=True):
        cell = out.setdefault(group, {"n": 0, "correct": 0, "accuracy": None})
        cell["n"] += 1
        cell["correct"] += int(bool(ok))
    for cell in out.values():
        cell["accuracy"] = cell["correct"] / cell["n"]
    return out


def per_pathology_accuracy(
    expected: Sequence[str], predicted: Sequence[str | None]
) -> dict[str, dict[str, Any]]:
    """Accuracy per true pathology, in the table's order; pathologies absent from the set are left out."""
    by_group = accuracy_by_group(
        list(expected), [e == p for e, p in zip(expected, predicted, strict=True)]
    )
    return {p: by_group[p] for p in PATHOLOGIES if p in by_group}


def per_slice_accuracy(
    slices: Sequence[Sequence[str]], correct: Sequence[bool]
) -> dict[str, dict[str, Any]]:
    """Accuracy per slice; an item belongs to every slice it lists (slices overlap)."""
    groups: list[str] = []
    flags: list[bool] = []
    for item_slices, ok in zip(slices, correct, strict=True):
        for name in item_slices:
            groups.append(name)
            flags.append(bool(ok))
    return dict(sorted(accuracy_by_group(groups, flags).items()))


def measurement_slices(measurements: Mapping[str, Any]) -> list[str]:
    """The slices the rule puts a runner's measurements in: how many rules fire, and whether it is borderline.

    `no_rule` / `one_rule` / `two_rules` (two or more fire); `near_threshold` when the top
    exceedance is within NEAR_THRESHOLD_MARGIN of zero or of the runner-up's.
    """
    ranked = sorted(exceedances(measurements).values(), reverse=True)
    n_fired = sum(1 for e in ranked if e > 0)
    slices = ["no_rule" if n_fired == 0 else "one_rule" if n_fired == 1 else "two_rules"]
    if abs(ranked[0]) < NEAR_THRESHOLD_MARGIN or ranked[0] - ranked[1] < NEAR_THRESHOLD_MARGIN:
        slices.append("near_threshold")
    return slices


def confusion_matrix(expected: Sequence[str], predicted: Sequence[str | None]) -> dict[str, Any]:
    """Counts with rows = true label, columns = predicted label (the six, then INVALID).

    A prediction that is not one of the six canonical labels (None included) lands in INVALID.
    """
    return _confusion(PATHOLOGIES, expected, predicted, "label")


def _confusion(
    classes: Sequence[str], expected: Sequence[str], predicted: Sequence[str | None], what: str
) -> dict[str, Any]:
    """Counts with rows = the expected class, columns = the answered one (then INVALID)."""
    columns = [*classes, INVALID]
    index = {c: i for i, c in enumerate(classes)}
    matrix = [[0] * len(columns) for _ in classes]
    for e, p in zip(expected, predicted, strict=True):
        if e not in index:
            raise ValueError(f"expected {what} {e!r} is not one of {', '.join(classes)}")
        matrix[index[e]][index.get(p, len(classes))] += 1
    return {"rows": list(classes), "columns": columns, "matrix": matrix}


def confidence_accuracy(expected: Sequence[str], predicted: Sequence[str | None]) -> float | None:
    """Share of items whose `confiance` equals the rule's confidence band."""
    return exact_match(expected, predicted)


def whole_answer_rate(
    pathology_correct: Sequence[bool],
    expected_confidence: Sequence[str],
    predicted_confidence: Sequence[str | None],
) -> float | None:
    """Share of items whose answer is right as a whole: the pathology AND the rule's confidence."""
    both = [
        bool(ok) and p == e
        for ok, e, p in zip(
            pathology_correct, expected_confidence, predicted_confidence, strict=True
        )
    ]
    return share(both)


def per_confidence(
    pathology_correct: Sequence[bool],
    expected_confidence: Sequence[str],
    predicted_confidence: Sequence[str | None],
) -> dict[str, dict[str, Any]]:
    """For the runners the rule puts in each band: how many, how often the model answered that
    band (`confidence_rate`) and how often the whole answer was right (`whole_answer_rate`)."""
    rows: dict[str, dict[str, Any]] = {}
    for band in CONFIDENCES:
        picked = [
            (ok, p)
            for ok, e, p in zip(
                pathology_correct, expected_confidence, predicted_confidence, strict=True
            )
            if e == band
        ]
        rows[band] = {
            "n": len(picked),
            "confidence_rate": share([p == band for _, p in picked]),
            "whole_answer_rate": share([bool(ok) and p == band for ok, p in picked]),
        }
    return rows


def confidence_confusion(
    expected: Sequence[str], predicted: Sequence[str | None]
) -> dict[str, Any]:
    """Counts of the rule's confidence (rows) against the answered one (columns: the three bands,
    then INVALID for an answer with none)."""
    return _confusion(CONFIDENCES, expected, predicted, "confidence")


def calibration(
    predicted_confidence: Sequence[str | None], correct: Sequence[bool]
) -> dict[str, Any]:
    """How often the pathology is right within each confidence band the model announced.

    A calibrated model is right more often when it says `élevée` than `modérée`, and more often
    then than `faible`: `monotonic` is True when the announced bands' accuracies never increase
    from élevée to faible (bands with no item are skipped).
    """
    bands: dict[str, dict[str, Any]] = {}
    for band in CONFIDENCES:
        flags = [bool(ok) for c, ok in zip(predicted_confidence, correct, strict=True) if c == band]
        bands[band] = {
            "n": len(flags),
            "accuracy": sum(flags) / len(flags) if flags else None,
        }
    seen = [b["accuracy"] for b in bands.values() if b["accuracy"] is not None]
    monotonic = all(a >= b for a, b in itertools.pairwise(seen))
    return {"bands": bands, "monotonic": monotonic}


# ---------------------------------------------------------------- uncertainty


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of the mean of `values` (e.g. 0/1 hits).

    Deterministic for a given seed; None for an empty input.
    """
    xs = np.asarray(values, dtype=float)
    if xs.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = xs[rng.integers(0, xs.size, size=(n_resamples, xs.size))].mean(axis=1)
    alpha = (1 - level) / 2 * 100
    return float(np.percentile(means, alpha)), float(np.percentile(means, 100 - alpha))


def paired_bootstrap_delta(
    a: Sequence[float], b: Sequence[float], n_resamples: int = 2000, seed: int = 0
) -> dict[str, float] | None:
    """mean(b) - mean(a) on paired items with its 95% percentile-bootstrap interval."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    if not a:
        return None
    diffs = [float(y) - float(x) for x, y in zip(a, b, strict=True)]
    ci = bootstrap_ci(diffs, n_resamples=n_resamples, seed=seed)
    assert ci is not None
    return {"delta": sum(diffs) / len(diffs), "ci95_low": ci[0], "ci95_high": ci[1]}
