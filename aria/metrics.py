"""Benchmark maths: latency percentiles, exact match, calibration, grounding, the verdicts on a
justification and a report, the release gate over both diagnostic bodies.

    >>> from aria.metrics import percentile, latency_summary
    >>> percentile([10, 20, 30, 40], 50)
    25.0

Pure Python and numpy (no torch), so the benchmark's numbers are unit-tested in milliseconds.
Every function takes plain lists and dicts and returns JSON-serialisable values (no NaN: a
quantity that cannot be computed is None).

Over 400 lines: it is the one place where each figure of summary.json and each gate check is
defined (five sections: latency, accuracy, text verdicts, guided JSON, gate), so that the
benchmark, the soak, the dataset validators and the model card read the same definitions.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aria.domain import (
    CONFIDENCES,
    MEASUREMENT_BY_KEY,
    PATHOLOGIES,
    RULE_BY_PATHOLOGY,
    RULES,
    exceedances,
    validate_profile,
)
from aria.prompts import DIAGNOSTIC_BODIES

INVALID = "(invalide)"  # confusion-matrix column of answers that name no canonical label
NEAR_THRESHOLD_MARGIN = 0.05  # |top exceedance| or top-two gap below this: a borderline profile


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


# ---------------------------------------------------------------- labels and accuracy


def _fold(text: str) -> str:
    """Lower case, no accents, single spaces: how labels are compared leniently."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.lower().replace("-", " ").replace("_", " ").split())


_LENIENT_LABELS: dict[str, str] = {_fold(p): p for p in PATHOLOGIES} | {
    _fold(r.abbreviation): r.pathology for r in RULES if r.abbreviation
}


def normalise_pathology(text: Any) -> str | None:
    """The canonical label a free answer names (case, accents, spacing, SFP/SBIT), else None."""
    if not isinstance(text, str):
        return None
    return _LENIENT_LABELS.get(_fold(text))


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


def profile_slices(profile: Mapping[str, Any]) -> list[str]:
    """The slices the rule puts a profile in: how many rules fire, and whether it is borderline.

    `no_rule` / `one_rule` / `two_rules` (two or more fire); `near_threshold` when the top
    exceedance is within NEAR_THRESHOLD_MARGIN of zero or of the runner-up's.
    """
    ranked = sorted(exceedances(profile).values(), reverse=True)
    n_fired = sum(1 for e in ranked if e > 0)
    slices = ["no_rule" if n_fired == 0 else "one_rule" if n_fired == 1 else "two_rules"]
    if abs(ranked[0]) < NEAR_THRESHOLD_MARGIN or ranked[0] - ranked[1] < NEAR_THRESHOLD_MARGIN:
        slices.append("near_threshold")
    return slices


def confusion_matrix(expected: Sequence[str], predicted: Sequence[str | None]) -> dict[str, Any]:
    """Counts with rows = true label, columns = predicted label (the six, then INVALID).

    A prediction that is not one of the six canonical labels (None included) lands in INVALID.
    """
    columns = [*PATHOLOGIES, INVALID]
    index = {p: i for i, p in enumerate(PATHOLOGIES)}
    matrix = [[0] * len(columns) for _ in PATHOLOGIES]
    for e, p in zip(expected, predicted, strict=True):
        if e not in index:
            raise ValueError(f"expected label {e!r} is not one of the six pathologies")
        matrix[index[e]][index.get(p, len(PATHOLOGIES))] += 1
    return {"rows": list(PATHOLOGIES), "columns": columns, "matrix": matrix}


def confidence_accuracy(expected: Sequence[str], predicted: Sequence[str | None]) -> float | None:
    """Share of items whose `confiance` equals the rule's confidence band."""
    return exact_match(expected, predicted)


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


# ---------------------------------------------------------------- grounding of numbers

# A list marker at a line start ("1." or "2)") numbers the text, it does not cite a value.
_LIST_MARKER = re.compile(r"(?m)^\s*\d+[.)]\s")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def cited_numbers(text: str) -> list[float]:
    """Unsigned numbers a text cites, in order; a French decimal comma reads as a point."""
    text = _LIST_MARKER.sub(" ", text)
    return [float(m.group().replace(",", ".")) for m in _NUMBER.finditer(text)]


def allowed_numbers(profile: Mapping[str, Any], prompt: str | None = None) -> set[float]:
    """Numbers a text about `profile` may cite: its measured values, its numeric context, the
    thresholds of the rules, and every number the `prompt` shows (such as its percent of
    threshold); absolute values, since signs are not part of what cited_numbers reads."""
    allowed = {abs(round(v, 6)) for v in validate_profile(profile).values()}
    for value in profile.values():
        if isinstance(value, int | float) and not isinstance(value, bool):
            allowed.add(abs(round(float(value), 6)))
    for rule in RULES:
        allowed.update(abs(round(t, 6)) for _, t in rule.thresholds)
    if prompt:
        allowed |= {abs(round(n, 6)) for n in cited_numbers(prompt)}
    return allowed


def ungrounded_numbers(
    text: str, profile: Mapping[str, Any], prompt: str | None = None
) -> list[float]:
    """The numbers `text` cites that are not allowed_numbers(profile, prompt), in order: made up."""
    allowed = allowed_numbers(profile, prompt)
    return [c for c in cited_numbers(text) if round(c, 6) not in allowed]


def grounding(text: str, profile: Mapping[str, Any], prompt: str | None = None) -> dict[str, Any]:
    """Which numbers of `text` come from the input (allowed_numbers) and which do not.

    `grounded_rate` is the share of cited numbers that are allowed (1.0 when nothing is cited);
    `ungrounded` lists the others: a number the model made up.
    """
    cited = cited_numbers(text)
    ungrounded = ungrounded_numbers(text, profile, prompt)
    return {
        "cited": len(cited),
        "ungrounded": ungrounded,
        "grounded_rate": 1.0 if not cited else 1 - len(ungrounded) / len(cited),
    }


# ---------------------------------------------------------------- hallucination (text vs source)

_TOKEN = re.compile(r"\d+(?:[.,]\d+)?|\w+")


def text_tokens(text: str) -> list[str]:
    """Lower-case word and number tokens; accents folded, decimal commas read as points."""
    return [t.replace(",", ".") for t in _TOKEN.findall(_fold(text))]


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    n = min(n, len(tokens))
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)] if n else []


def anchoring(output: str, source: str, n: int = 3) -> float:
    """Share of the output's n-grams that also occur in the source (1.0 for an empty output).

    An output shorter than n tokens is one n-gram; the source's n-grams of that size are compared.
    """
    out_tokens = text_tokens(output)
    if not out_tokens:
        return 1.0
    size = min(n, len(out_tokens))
    source_grams = set(_ngrams(text_tokens(source), size))
    grams = _ngrams(out_tokens, size)
    return sum(1 for g in grams if g in source_grams) / len(grams)


def insertion_rate(output: str, source: str) -> float:
    """Share of the output's tokens that never occur in the source (0.0 for an empty output)."""
    out_tokens = text_tokens(output)
    if not out_tokens:
        return 0.0
    vocabulary = set(text_tokens(source))
    return sum(1 for t in out_tokens if t not in vocabulary) / len(out_tokens)


def length_ratio(output: str, reference: str) -> float | None:
    """Characters of the output over characters of the reference (None for an empty reference)."""
    ref = len(reference.strip())
    return len(output.strip()) / ref if ref else None


def hallucinated_blocks(
    output: str, source: str, min_unknown: int = 4, max_gap: int = 1
) -> list[str]:
    """Runs of the output made of tokens absent from the source.

    A block starts and ends on an unknown token; up to `max_gap` known tokens in a row may sit
    inside it (a stray "de" does not break a made-up sentence). Blocks with fewer than
    `min_unknown` unknown tokens are not reported.
    """
    tokens = text_tokens(output)
    vocabulary = set(text_tokens(source))
    blocks: list[str] = []
    start: int | None = None
    last_unknown = -1
    unknown = 0

    def close() -> None:
        if start is not None and unknown >= min_unknown:
            blocks.append(" ".join(tokens[start : last_unknown + 1]))

    for i, token in enumerate(tokens):
        if token in vocabulary:
            if start is not None and i - last_unknown > max_gap:
                close()
                start, unknown = None, 0
            continue
        if start is None:
            start = i
        last_unknown = i
        unknown += 1
    close()
    return blocks


def hallucination_scores(
    output: str, source: str, reference: str, n: int = 3, min_anchoring: float = 0.5
) -> dict[str, Any]:
    """Anchoring and insertion against `source` (the input plus the reference), length against the
    reference, made-up blocks; `flagged` when anchoring is below `min_anchoring` or a block exists."""
    score = anchoring(output, source, n)
    blocks = hallucinated_blocks(output, source)
    return {
        "anchoring": score,
        "insertion_rate": insertion_rate(output, source),
        "length_ratio": length_ratio(output, reference),
        "hallucinated_blocks": blocks,
        "flagged": score < min_anchoring or bool(blocks),
    }


# ---------------------------------------------------------------- keywords


def deciding_keys(pathology: str) -> list[str]:
    """The measurement key(s) whose threshold decides `pathology`."""
    return [key for key, _ in RULE_BY_PATHOLOGY[pathology].thresholds]


def keyword_coverage(text: str, pathology: str) -> float:
    """Share of the deciding measurements of `pathology` that the text names.

    A measurement counts when its key (`valgus_genou`) or its French label (`Valgus du genou`)
    appears, ignoring case, accents and underscores.
    """
    folded = _fold(text)
    keys = deciding_keys(pathology)
    named = sum(
        1
        for key in keys
        if _fold(key) in folded or _fold(MEASUREMENT_BY_KEY[key].label_fr) in folded
    )
    return named / len(keys)


# ---------------------------------------------------------------- the justification a clinician reads

# A ranking code such as `G<T H<T F>T`: one capital letter compared with another (`G<T`, `P >= F`).
_CODE_TRACE = re.compile(r"(?<![\w.])[A-Z]\s?[<>=]=?\s?[A-Z](?![\w])")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
MIN_JUSTIFICATION_WORDS = 3  # "Seul seuil franchi" is three words; a code is none


def looks_like_code_trace(text: str) -> bool:
    """True when `text` holds a ranking code such as `G<T H<T F>T` (single-capital comparisons)."""
    return bool(_CODE_TRACE.search(text))


def words(text: str) -> list[str]:
    """The words of a text (letters, with inner apostrophes or hyphens), in order, as written."""
    return _WORD.findall(text)


def clinician_readable(text: str) -> bool:
    """A justification a clinician reads: no ranking code, and at least MIN_JUSTIFICATION_WORDS
    words of two letters or more."""
    if looks_like_code_trace(text):
        return False
    return sum(1 for w in words(text) if len(w) >= 2) >= MIN_JUSTIFICATION_WORDS


def justification_verdict(
    text: str, profile: Mapping[str, Any], prompt: str | None = None
) -> dict[str, Any]:
    """Is the justification grounded (every number from the input), free of a code trace, and
    readable by a clinician? `ungrounded` lists the numbers that are not from the input."""
    ground = grounding(text, profile, prompt)
    return {
        "grounded": not ground["ungrounded"],
        "ungrounded": ground["ungrounded"],
        "code_trace": looks_like_code_trace(text),
        "readable": clinician_readable(text),
    }


# ---------------------------------------------------------------- the report a runner reads

MIN_REPORT_WORDS = 20  # the reference reports hold 50 to 90 words
MIN_ALPHABETIC_SHARE = 0.6  # of the tokens that hold a letter or digit: words, not numbers or codes
MAX_REPEAT_RUN = 3  # the same word or phrase (up to 4 words) this many times in a row: a loop
MIN_DISTINCT_SHARE = 0.3  # distinct words over words, for texts of DISTINCT_CHECK_WORDS or more
DISTINCT_CHECK_WORDS = 40
# A JSON fragment: a brace, or a quoted key followed by a colon (`"pathologie":`).
_JSON_FRAGMENT = re.compile(r'[{}]|"\s*[^"\s]{1,40}\s*"\s*:')


def _repeat_run(tokens: Sequence[str], max_n: int = 4) -> int:
    """The longest run of one n-gram (n <= max_n) repeated back to back, in repetitions."""
    best = 1 if tokens else 0
    for n in range(1, max_n + 1):
        for start in range(len(tokens) - 2 * n + 1):
            gram = tokens[start : start + n]
            run = 1
            while tokens[start + run * n : start + (run + 1) * n] == gram:
                run += 1
            best = max(best, run)
    return best


def prose_problems(text: str) -> list[str]:
    """Why `text` is not prose, or [] when it is.

    `empty`; `json` (a brace or a quoted key with a colon: JSON or its fragments); `too_short`
    (fewer than MIN_REPORT_WORDS words); `not_words` (under MIN_ALPHABETIC_SHARE of its
    letter-or-digit tokens are words); `repetition` (one word or phrase MAX_REPEAT_RUN times in a
    row, or under MIN_DISTINCT_SHARE distinct words in a long text).
    """
    if not text or not text.strip():
        return ["empty"]
    problems = []
    if _JSON_FRAGMENT.search(text):
        problems.append("json")
    found = [w.lower() for w in words(text)]
    if len(found) < MIN_REPORT_WORDS:
        problems.append("too_short")
    tokens = [t for t in text.split() if any(c.isalnum() for c in t)]
    alphabetic = sum(1 for t in tokens if _WORD.fullmatch(t.strip(".,;:!?()«»\"'[]")))
    if tokens and alphabetic / len(tokens) < MIN_ALPHABETIC_SHARE:
        problems.append("not_words")
    distinct_low = (
        len(found) >= DISTINCT_CHECK_WORDS and len(set(found)) / len(found) < MIN_DISTINCT_SHARE
    )
    if _repeat_run([_fold(w) for w in found]) >= MAX_REPEAT_RUN or distinct_low:
        problems.append("repetition")
    return problems


def named_pathologies(text: str) -> list[str]:
    """The canonical labels a text names, in order of first mention.

    A label counts under case, accent, hyphen and whitespace variants, or as the seed's
    abbreviation (SFP, SBIT) written as a word.
    """
    folded = f" {_fold(text)} "
    found = []
    for variant, label in _LENIENT_LABELS.items():
        match = re.search(rf"(?<![\w]){re.escape(variant)}(?![\w])", folded)
        if match:
            found.append((match.start(), label))
    ordered: list[str] = []
    for _, label in sorted(found):
        if label not in ordered:
            ordered.append(label)
    return ordered


def names_pathology(text: str, pathology: str) -> bool:
    """True when the first pathology the text names is `pathology` (the likely one is stated
    before any other is mentioned)."""
    named = named_pathologies(text)
    return bool(named) and named[0] == pathology


def report_verdict(
    text: str | None, profile: Mapping[str, Any], pathology: str, prompt: str | None = None
) -> dict[str, Any]:
    """The three checks of a report: prose, names the rule's `pathology`, cites only numbers of the
    input; `passed` when all three hold. `problems` and `ungrounded` say why one does not."""
    text = text or ""
    problems = prose_problems(text)
    ground = grounding(text, profile, prompt)
    verdict = {
        "prose": not problems,
        "problems": problems,
        "names_pathology": names_pathology(text, pathology),
        "grounded": not ground["ungrounded"],
        "ungrounded": ground["ungrounded"],
    }
    verdict["passed"] = verdict["prose"] and verdict["names_pathology"] and verdict["grounded"]
    return verdict


# ---------------------------------------------------------------- guided JSON


def conforms_to_schema(obj: Any, schema: Mapping[str, Any]) -> bool:
    """Whether `obj` satisfies a flat object schema such as the seed's diagnostic schema.

    Supports what the diagnostic schemas use: `type` object/string, `properties`, `required`,
    `additionalProperties: false`, `enum` and `pattern` (searched as Python regex).
    """
    if not isinstance(obj, dict):
        return False
    properties = schema.get("properties", {})
    if any(key not in obj for key in schema.get("required", ())):
        return False
    if schema.get("additionalProperties") is False and set(obj) - set(properties):
        return False
    for key, rule in properties.items():
        if key not in obj:
            continue
        value = obj[key]
        if rule.get("type") == "string" and not isinstance(value, str):
            return False
        if "enum" in rule and value not in rule["enum"]:
            return False
        if "pattern" in rule and not (isinstance(value, str) and re.search(rule["pattern"], value)):
            return False
    return True


def _read_string(text: str, i: int) -> tuple[str | None, int, bool]:
    """(raw content, index after it, closed) of the JSON string starting at text[i]; content None
    when text[i] does not open a string."""
    if i >= len(text) or text[i] != '"':
        return None, i, False
    j = i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text[j] == '"':
            return text[i + 1 : j], j + 1, True
        j += 1
    return text[i + 1 :], len(text), False


def is_json_prefix(text: str, order: Sequence[str]) -> bool:
    """Whether `text` is a JSON object of string values whose keys come exactly in `order`, or a
    beginning of one (what guided decoding returns when max_tokens cuts it).

    A complete text must close the object after the last key of `order`; a cut text may stop
    anywhere, even inside a key or a value.
    """
    n = len(text)

    def skip(i: int) -> int:
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    i = skip(0)
    if i >= n or text[i] != "{":
        return False
    i, k = i + 1, 0  # k: how many keys are complete
    while True:
        i = skip(i)
        if i >= n:
            return True
        if text[i] == "}" and k == 0:
            return not order and skip(i + 1) == n
        if k >= len(order):
            return False
        key, i, closed = _read_string(text, i)
        if key is None or (closed and key != order[k]):
            return False
        if not closed:
            return order[k].startswith(key)
        i = skip(i)
        if i >= n:
            return True
        if text[i] != ":":
            return False
        value, i, closed = _read_string(text, skip(i + 1))
        if i >= n and value is None:
            return True  # cut right after the colon
        if value is None:
            return False
        if not closed:
            return True
        k += 1
        i = skip(i)
        if i >= n:
            return True
        if text[i] == "}":
            return k == len(order) and skip(i + 1) == n
        if text[i] != "," or k >= len(order):
            return False
        i += 1


# ---------------------------------------------------------------- comparison


def recommendation_band(gain_points: float) -> str:
    """The fine-tuning verdict of a gain in percentage points of exact match.

    `effective` above 10 points, `moderate` from 5 to 10 inclusive, `insufficient` below 5.
    """
    if gain_points > 10:
        return "effective"
    if gain_points >= 5:
        return "moderate"
    return "insufficient"


def pick_winner(models: Sequence[Mapping[str, Any]]) -> str | None:
    """The name of the best model: highest exact match, then JSON-valid rate, then lowest P50.

    Each model is a dict with `name`, `exact_match`, `json_valid_rate` and `latency_ms.p50`;
    a model with no exact match (nothing answered) cannot win.
    """
    candidates = [m for m in models if m.get("exact_match") is not None]
    if not candidates:
        return None

    def key(m: Mapping[str, Any]) -> tuple[float, float, float]:
        p50 = (m.get("latency_ms") or {}).get("p50")
        return (
            -round(m["exact_match"], 6),
            -round(m.get("json_valid_rate") or 0.0, 6),
            p50 if p50 is not None else math.inf,
        )

    return min(candidates, key=key)["name"]


# ---------------------------------------------------------------- release gate

_OPS = {
    ">=": lambda measured, target: measured >= target,
    ">": lambda measured, target: measured > target,
    "<=": lambda measured, target: measured <= target,
    "<": lambda measured, target: measured < target,
}


def validate_gate(thresholds: Any) -> list[dict[str, Any]]:
    """Check a gate's thresholds (a list of {metric, op, target}); raises ValueError naming the entry."""
    if not isinstance(thresholds, list) or not thresholds:
        raise ValueError("the gate needs a non-empty list `thresholds` of {metric, op, target}")
    for i, t in enumerate(thresholds):
        if not isinstance(t, Mapping) or set(t) - {"metric", "op", "target", "why"}:
            raise ValueError(f"thresholds[{i}] must be a mapping with metric, op, target (+ why)")
        if not isinstance(t.get("metric"), str):
            raise ValueError(
                f"thresholds[{i}].metric must be a metric name, got {t.get('metric')!r}"
            )
        if t.get("op") not in _OPS:
            raise ValueError(
                f"thresholds[{i}].op must be one of {', '.join(_OPS)}, got {t.get('op')!r}"
            )
        target = t.get("target")
        if isinstance(target, bool) or not isinstance(target, int | float):
            raise ValueError(f"thresholds[{i}].target must be a number, got {target!r}")
    return [dict(t) for t in thresholds]


def evaluate_gate(
    measured: Mapping[str, float | None], thresholds: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Compare measured metrics with the gate's thresholds.

    Returns {passed, checked, failures}; each failure names the metric, the op and target, the
    measured value, `by` (how far it is on the wrong side, in the metric's unit; None when the
    metric was not measured) and a one-line `message`.
    """
    checked: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for t in thresholds:
        metric, op, target = t["metric"], t["op"], float(t["target"])
        value = measured.get(metric)
        if value is None:
            ok, by = False, None
            message = f"{metric} was not measured (target {op} {target:g})"
        else:
            ok = _OPS[op](value, target)
            by = abs(value - target) if not ok else 0.0
            message = (
                f"{metric} = {value:.4g} meets {op} {target:g}"
                if ok
                else f"{metric} = {value:.4g} misses {op} {target:g} by {by:.4g}"
            )
        row = {"metric": metric, "op": op, "target": target, "measured": value, "passed": ok}
        checked.append(row | {"message": message})
        if not ok:
            failures.append(row | {"by": by, "message": message})
    return {"passed": not failures, "checked": checked, "failures": failures}


def resolve_gate(doc: Any, profile: str) -> dict[str, Any]:
    """The gate a run applies: {bodies, thresholds, overridden} from a gate config document.

    The document holds `thresholds` (applied to every body of `bodies`, default all of
    DIAGNOSTIC_BODIES) and optional `profiles: {profile: {thresholds: [...]}}`: for `profile`, an
    entry replaces the threshold on the same metric, or adds one. `overridden` lists the metrics a
    profile changed. Raises ValueError naming the entry at fault.
    """
    if not isinstance(doc, Mapping):
        raise ValueError("the gate config must be a mapping with `thresholds`")
    thresholds = validate_gate(doc.get("thresholds"))
    bodies = doc.get("bodies", list(DIAGNOSTIC_BODIES))
    if (
        not isinstance(bodies, list)
        or not bodies
        or any(b not in DIAGNOSTIC_BODIES for b in bodies)
    ):
        raise ValueError(
            f"`bodies` must be a non-empty list of {', '.join(DIAGNOSTIC_BODIES)}, got {bodies!r}"
        )
    profiles = doc.get("profiles") or {}
    if not isinstance(profiles, Mapping):
        raise ValueError("`profiles` must map a profile name to {thresholds: [...]}")
    overridden: list[str] = []
    override = profiles.get(profile)
    if override is not None:
        if not isinstance(override, Mapping):
            raise ValueError(f"profiles.{profile} must be a mapping with `thresholds`")
        for t in validate_gate(override.get("thresholds")):
            kept = [x for x in thresholds if x["metric"] != t["metric"]]
            thresholds = [*kept, t]
            overridden.append(t["metric"])
    return {"bodies": list(bodies), "thresholds": thresholds, "overridden": overridden}


def evaluate_gate_bodies(
    measured_by_body: Mapping[str, Mapping[str, float | None]],
    thresholds: Sequence[Mapping[str, Any]],
    bodies: Sequence[str],
) -> dict[str, Any]:
    """The gate over several diagnostic bodies: every threshold must hold on every body of
    `bodies`, and a body that was not measured fails.

    Returns {passed, by_body {body: passed}, checked, failures}; each row is evaluate_gate's with a
    `body` key and its message prefixed by `[body]`.
    """
    checked: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    by_body: dict[str, bool] = {}
    for body in bodies:
        measured = measured_by_body.get(body)
        if measured is None:
            message = f"[{body}] the {body} body was not measured (benchmark it: --bodies {body})"
            row = {"body": body, "metric": "body", "op": "measured", "target": None}
            row |= {"measured": None, "passed": False}
            checked.append(row | {"message": message})
            failures.append(row | {"by": None, "message": message})
            by_body[body] = False
            continue
        result = evaluate_gate(measured, thresholds)
        by_body[body] = result["passed"]
        checked += [
            {"body": body, **c, "message": f"[{body}] {c['message']}"} for c in result["checked"]
        ]
        failures += [
            {"body": body, **f, "message": f"[{body}] {f['message']}"} for f in result["failures"]
        ]
    return {"passed": not failures, "by_body": by_body, "checked": checked, "failures": failures}
