"""The verdicts on a model's text: which label it names, whether its numbers come from the input,
how much of it is anchored in the source, whether a justification is readable by a clinician and
a report is prose.

    >>> from aria.verdicts import grounding, normalise_pathology
    >>> normalise_pathology("sfp")
    'Syndrome fémoro-patellaire'

Pure Python (no torch), unit-tested in milliseconds; the benchmark scores each answer with these
(evaluation.scoring) and the dataset validators check their records with the same number readers
(aria.records). Every function returns JSON-serialisable values.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from aria.domain import (
    MEASUREMENT_BY_KEY,
    PATHOLOGIES,
    RULE_BY_PATHOLOGY,
    RULES,
    fired_rules,
    validate_measurements,
)
from aria.references import justification_lead

# ---------------------------------------------------------------- labels


def fold(text: str) -> str:
    """Lower case, no accents, single spaces: how labels are compared leniently."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.lower().replace("-", " ").replace("_", " ").split())


_LENIENT_LABELS: dict[str, str] = {fold(p): p for p in PATHOLOGIES} | {
    fold(r.abbreviation): r.pathology for r in RULES if r.abbreviation
}


def normalise_pathology(text: Any) -> str | None:
    """The canonical label a free answer names (case, accents, spacing, SFP/SBIT), else None."""
    if not isinstance(text, str):
        return None
    return _LENIENT_LABELS.get(fold(text))


# ---------------------------------------------------------------- grounding of numbers

# A list marker at a line start ("1." or "2)") numbers the text, it does not cite a value.
_LIST_MARKER = re.compile(r"(?m)^\s*\d+[.)]\s")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def cited_numbers(text: str) -> list[float]:
    """Unsigned numbers a text cites, in order; a French decimal comma reads as a point."""
    text = _LIST_MARKER.sub(" ", text)
    return [float(m.group().replace(",", ".")) for m in _NUMBER.finditer(text)]


def allowed_numbers(measurements: Mapping[str, Any], prompt: str | None = None) -> set[float]:
    """Numbers a text about `measurements` may cite: its measured values, its numeric context, the
    thresholds of the rules, and every number the `prompt` shows (such as its percent of
    threshold); absolute values, since signs are not part of what cited_numbers reads."""
    allowed = {abs(round(v, 6)) for v in validate_measurements(measurements).values()}
    for value in measurements.values():
        if isinstance(value, int | float) and not isinstance(value, bool):
            allowed.add(abs(round(float(value), 6)))
    for rule in RULES:
        allowed.update(abs(round(t, 6)) for _, t in rule.thresholds)
    if prompt:
        allowed |= {abs(round(n, 6)) for n in cited_numbers(prompt)}
    return allowed


def ungrounded_numbers(
    text: str, measurements: Mapping[str, Any], prompt: str | None = None
) -> list[float]:
    """The numbers `text` cites that are not allowed_numbers(measurements, prompt), in order: made up."""
    allowed = allowed_numbers(measurements, prompt)
    return [c for c in cited_numbers(text) if round(c, 6) not in allowed]


def grounding(
    text: str, measurements: Mapping[str, Any], prompt: str | None = None
) -> dict[str, Any]:
    """Which numbers of `text` come from the input (allowed_numbers) and which do not.

    `grounded_rate` is the share of cited numbers that are allowed (1.0 when nothing is cited);
    `ungrounded` lists the others: a number the model made up.
    """
    cited = cited_numbers(text)
    ungrounded = ungrounded_numbers(text, measurements, prompt)
    return {
        "cited": len(cited),
        "ungrounded": ungrounded,
        "grounded_rate": 1.0 if not cited else 1 - len(ungrounded) / len(cited),
    }


# ---------------------------------------------------------------- hallucination (text vs source)

_TOKEN = re.compile(r"\d+(?:[.,]\d+)?|\w+")


def text_tokens(text: str) -> list[str]:
    """Lower-case word and number tokens; accents folded, decimal commas read as points."""
    return [t.replace(",", ".") for t in _TOKEN.findall(fold(text))]


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
    folded = fold(text)
    keys = deciding_keys(pathology)
    named = sum(
        1 for key in keys if fold(key) in folded or fold(MEASUREMENT_BY_KEY[key].label_fr) in folded
    )
    return named / len(keys)


# ---------------------------------------------------------------- the justification a clinician reads

# A ranking code such as `G<T H<T F>T`: one capital letter compared with another (`G<T`, `P >= F`).
_CODE_TRACE = re.compile(r"(?<![\w.])[A-Z]\s?[<>=]=?\s?[A-Z](?![\w])")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
MIN_JUSTIFICATION_WORDS = 3  # "Seul signal d'alerte" is three words; a code is none


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


# The justification's leads (aria.references.justification_lead), by the count each states.
_LEADS: dict[str, int] = {justification_lead(n): n for n in range(len(RULES) + 1)}


def stated_crossings(text: str) -> int | None:
    """How many alert signals (rules) a justification says fire, read from its lead (`Seul signal
    d'alerte :` says 1), or None when it opens with none of the leads."""
    opening = " ".join(text.split())
    return next((n for lead, n in _LEADS.items() if opening.startswith(lead)), None)


def justification_verdict(
    text: str, measurements: Mapping[str, Any], prompt: str | None = None
) -> dict[str, Any]:
    """Is the justification grounded (every number from the input), free of a code trace,
    readable by a clinician, and right about how many alert signals fire (`crossings_right`: its
    lead states the input's count of firing rules; `Aucun signal d'alerte` beside a firing rule
    is grounded but false)? `ungrounded` lists the numbers that are not from the input."""
    ground = grounding(text, measurements, prompt)
    return {
        "grounded": not ground["ungrounded"],
        "ungrounded": ground["ungrounded"],
        "code_trace": looks_like_code_trace(text),
        "readable": clinician_readable(text),
        "crossings_right": stated_crossings(text) == len(fired_rules(measurements)),
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
    if _repeat_run([fold(w) for w in found]) >= MAX_REPEAT_RUN or distinct_low:
        problems.append("repetition")
    return problems


def named_pathologies(text: str) -> list[str]:
    """The canonical labels a text names, in order of first mention.

    A label counts under case, accent, hyphen and whitespace variants, or as the seed's
    abbreviation (SFP, SBIT) written as a word.
    """
    folded = f" {fold(text)} "
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
    text: str | None, measurements: Mapping[str, Any], pathology: str, prompt: str | None = None
) -> dict[str, Any]:
    """The three checks of a report: prose, names the rule's `pathology`, cites only numbers of the
    input; `passed` when all three hold. `problems` and `ungrounded` say why one does not."""
    text = text or ""
    problems = prose_problems(text)
    ground = grounding(text, measurements, prompt)
    verdict = {
        "prose": not problems,
        "problems": problems,
        "names_pathology": names_pathology(text, pathology),
        "grounded": not ground["ungrounded"],
        "ungrounded": ground["ungrounded"],
    }
    verdict["passed"] = verdict["prose"] and verdict["names_pathology"] and verdict["grounded"]
    return verdict
