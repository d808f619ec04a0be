"""The rejected answers of the DPO pairs: a plausible wrong answer of each kind for a runner.

    >>> from preparation.rejected import rejected_answer
    >>> rejected_answer(random.Random(0), measurements, "wrong_confidence", reference_json)

Each kind differs from the reference answer in one way a reader can name: the runner-up
pathology, another confidence band, a cited value the input does not hold, or broken JSON (what
max_tokens does to a guided answer). `aria.records.REJECTION_KINDS` lists them.
"""

from __future__ import annotations

import random
from typing import Any

from aria.domain import (
    CONFIDENCES,
    MEASUREMENT_BY_KEY,
    deciding_evidence,
    fired_rules,
    format_value,
    label,
    runner_up,
)
from aria.records import REJECTION_KINDS, grounded_numbers
from aria.references import justification, reference_justification
from aria.schema import FIELD_ORDER, GUIDED_SEPARATORS, Diagnostic


def ungrounded_justification(rng: random.Random, measurements: dict[str, Any]) -> str:
    """The reference justification with the deciding value replaced by one the input lacks
    (the pair differs in the cited value alone)."""
    pathology = label(measurements)[0]
    allowed = grounded_numbers(measurements)
    evidence = deciding_evidence(measurements, pathology)
    key, value, threshold = evidence[0]
    m = MEASUREMENT_BY_KEY[key]
    for _ in range(100):
        delta = rng.uniform(0.08, 0.35) * rng.choice((-1.0, 1.0))
        fake = float(value) * (1.0 + delta) if float(value) else delta * 10
        fake = min(max(fake, m.low + 0.01), m.high)
        text = format_value(key, fake)
        if float(text) not in allowed:
            break
    else:
        raise RuntimeError(f"could not invent an ungrounded value for {key}")
    return justification(len(fired_rules(measurements)), [(key, text, threshold), *evidence[1:]])


def invalid_json(rng: random.Random, reference: str) -> str:
    """A broken version of the reference JSON: cut mid-string, unclosed, or single-quoted."""
    variant = rng.randrange(3)
    if variant == 0:  # what max_tokens does to a guided answer: cut inside the justification
        marker = '"justification"' + GUIDED_SEPARATORS[1] + '"'
        start = reference.index(marker) + len(marker)
        return reference[: rng.randint(start + 1, len(reference) - 3)]
    if variant == 1:
        return reference[:-1]
    return reference.replace('"', "'")


def rejected_answer(
    rng: random.Random,
    measurements: dict[str, Any],
    kind: str,
    reference: str,
    order: tuple[str, ...] = FIELD_ORDER,
) -> str:
    """A plausible wrong answer of the given kind for `measurements`, its fields in `order`."""
    if kind == "invalid_json":
        return invalid_json(rng, reference)
    pathology, confiance = label(measurements)
    if kind == "wrong_pathology":
        pathology = runner_up(measurements)
        text = reference_justification(measurements, pathology)
    elif kind == "wrong_confidence":
        confiance = rng.choice([c for c in CONFIDENCES if c != confiance])
        text = reference_justification(measurements, pathology)
    elif kind == "ungrounded_value":
        text = ungrounded_justification(rng, measurements)
    else:
        raise ValueError(
            f"unknown rejection kind {kind!r}; expected one of {', '.join(REJECTION_KINDS)}"
        )
    return Diagnostic(pathologie=pathology, confiance=confiance, justification=text).to_json(order)
