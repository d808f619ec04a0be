"""Validators of dataset records (SFT, DPO, eval), shared by `make datasets` and `make copy-datasets`.

    >>> from aria.files import read_jsonl
    >>> from aria.records import validate_sft_record
    >>> records = read_jsonl("data/training/sft.jsonl", validate_sft_record)

One validator per record kind. Each returns the record unchanged or raises ValueError naming the
field and the fix; `aria.files.read_jsonl` turns that into `file:line: reason`. Pure (no torch).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from aria.domain import (
    CONFIDENCES,
    PATHOLOGIES,
    label,
    validate_measurements,
)
from aria.population import SLICES, canonical_measurements
from aria.prompts import REPORT_TEMPLATE, render_measurements, render_prompt
from aria.schema import parse_diagnostic
from aria.verdicts import allowed_numbers
from aria.verdicts import ungrounded_numbers as verdict_ungrounded

SFT_KINDS: tuple[str, ...] = ("diagnostic", "report")
REJECTION_KINDS: tuple[str, ...] = (
    "wrong_pathology",
    "wrong_confidence",
    "ungrounded_value",
    "invalid_json",
)


def grounded_numbers(measurements: Mapping[str, Any]) -> set[float]:
    """The numbers a text about `measurements` may cite (aria.verdicts.allowed_numbers): the report's
    prompt is the larger input, showing every value, its percent of threshold and the context."""
    return allowed_numbers(measurements, render_prompt(measurements, REPORT_TEMPLATE))


def ungrounded_numbers(text: str, measurements: Mapping[str, Any], prompt: str = "") -> list[float]:
    """Numbers cited in `text` that are not in grounded_numbers(measurements), nor in `prompt`."""
    return verdict_ungrounded(
        text, measurements, render_prompt(measurements, REPORT_TEMPLATE) + "\n" + prompt
    )


def _require(record: Mapping[str, Any], keys: Iterable[str]) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")


# A record holds a runner's measurements under the JSON key "profile": the published format of the
# data files and the Hub dataset, kept unchanged; in Python they are called `measurements`.
def _checked_measurements(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record's measurements (its `profile` field), after checking that its label, confidence and slice are the rule's."""
    measurements = record["profile"]
    if not isinstance(measurements, dict):
        raise ValueError("field 'profile' must be an object of measurements")
    validate_measurements(measurements)
    pathology, confiance = label(measurements)
    if record["label"] != pathology:
        raise ValueError(f"label {record['label']!r} is not the rule's label {pathology!r}")
    if record["confidence"] != confiance:
        raise ValueError(
            f"confidence {record['confidence']!r} is not the rule's confidence {confiance!r}"
        )
    if record["slice"] not in SLICES:
        raise ValueError(f"slice {record['slice']!r} is not one of {', '.join(SLICES)}")
    return measurements


def _single_message(messages: Any, role: str, field: str) -> str:
    """The content of a one-message conversational list with `role`; raises otherwise."""
    if (
        not isinstance(messages, list)
        or len(messages) != 1
        or not isinstance(messages[0], dict)
        or messages[0].get("role") != role
        or not isinstance(messages[0].get("content"), str)
        or not messages[0]["content"].strip()
    ):
        raise ValueError(
            f'field \'{field}\' must be [{{"role": "{role}", "content": <non-empty text>}}] '
            "(TRL conversational format)"
        )
    return messages[0]["content"]


def _check_prompt(record: Mapping[str, Any], measurements: Mapping[str, Any]) -> str:
    prompt = _single_message(record["prompt"], "user", "prompt")
    if render_measurements(measurements) not in prompt:
        raise ValueError("the prompt does not show the profile's measurements (regenerate it)")
    return prompt


def _check_reference_diagnostic(text: str, field: str, pathology: str, confiance: str) -> None:
    try:
        diagnostic = parse_diagnostic(text)
    except ValueError as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"'{field}' is not a valid diagnostic JSON ({first})") from None
    if diagnostic.pathologie != pathology or diagnostic.confiance != confiance:
        raise ValueError(
            f"'{field}' says ({diagnostic.pathologie}, {diagnostic.confiance}) but the rule says "
            f"({pathology}, {confiance})"
        )


def validate_sft_record(record: dict) -> dict:
    """An SFT record: TRL prompt/completion messages, the rule's label, a grounded completion."""
    _require(record, ("prompt", "completion", "kind", "profile", "label", "confidence", "slice"))
    measurements = _checked_measurements(record)
    _check_prompt(record, measurements)
    completion = _single_message(record["completion"], "assistant", "completion")
    if record["kind"] == "diagnostic":
        _check_reference_diagnostic(completion, "completion", record["label"], record["confidence"])
    elif record["kind"] == "report":
        if record["label"] not in completion:
            raise ValueError(f"the report does not name the label {record['label']!r}")
        bad = ungrounded_numbers(completion, measurements)
        if bad:
            cited = ", ".join(f"{n:g}" for n in bad)
            raise ValueError(f"the report cites number(s) absent from the input: {cited}")
    else:
        raise ValueError(f"kind {record['kind']!r} is not one of {', '.join(SFT_KINDS)}")
    return record


def validate_dpo_record(record: dict) -> dict:
    """A DPO record: the reference as `chosen`, a `rejected` answer that is wrong in its stated way."""
    _require(
        record,
        ("prompt", "chosen", "rejected", "rejection_kind", "profile", "label", "confidence"),
    )
    _require(record, ("slice",))
    measurements = _checked_measurements(record)
    prompt = _check_prompt(record, measurements)
    chosen = _single_message(record["chosen"], "assistant", "chosen")
    rejected = _single_message(record["rejected"], "assistant", "rejected")
    _check_reference_diagnostic(chosen, "chosen", record["label"], record["confidence"])
    if rejected == chosen:
        raise ValueError("'rejected' is identical to 'chosen'")
    kind = record["rejection_kind"]
    if kind == "invalid_json":
        try:
            json.loads(rejected)
        except json.JSONDecodeError:
            return record
        raise ValueError("rejection_kind invalid_json but 'rejected' is valid JSON")
    if kind not in REJECTION_KINDS:
        raise ValueError(f"rejection_kind {kind!r} is not one of {', '.join(REJECTION_KINDS)}")
    try:
        wrong = parse_diagnostic(rejected)
    except ValueError:
        raise ValueError(f"rejection_kind {kind} needs a 'rejected' that parses") from None
    if kind == "wrong_pathology" and wrong.pathologie == record["label"]:
        raise ValueError("rejection_kind wrong_pathology but 'rejected' names the right pathology")
    if kind == "wrong_confidence" and (
        wrong.pathologie != record["label"] or wrong.confiance == record["confidence"]
    ):
        raise ValueError(
            "rejection_kind wrong_confidence needs the right label, a wrong confidence"
        )
    if kind == "ungrounded_value" and not ungrounded_numbers(
        wrong.justification, measurements, prompt
    ):
        raise ValueError("rejection_kind ungrounded_value but every cited number is in the input")
    return record


def validate_eval_record(record: dict) -> dict:
    """An eval record: an id, valid measurements, and the rule's label, confidence and slice."""
    _require(record, ("id", "profile", "label", "confidence", "slice"))
    if not isinstance(record["id"], str) or not record["id"]:
        raise ValueError("field 'id' must be a non-empty string such as 'eval-0001'")
    _checked_measurements(record)
    return record


# Dataset file name -> the validator of its records.
VALIDATORS = {
    "sft.jsonl": validate_sft_record,
    "dpo.jsonl": validate_dpo_record,
    "eval.jsonl": validate_eval_record,
}


def check_unique_ids(records: Iterable[Mapping[str, Any]]) -> None:
    """Raise ValueError naming the first eval id that appears twice."""
    seen: set[str] = set()
    for r in records:
        if r["id"] in seen:
            raise ValueError(f"eval id {r['id']!r} appears twice")
        seen.add(r["id"])


def check_no_leakage(
    training: Iterable[Mapping[str, Any]], evaluation: Iterable[Mapping[str, Any]]
) -> None:
    """Raise ValueError if an eval runner's measurements also appear in a training record."""
    train_keys = {canonical_measurements(r["profile"]) for r in training}
    for r in evaluation:
        if canonical_measurements(r["profile"]) in train_keys:
            raise ValueError(
                f"eval record {r.get('id', '?')} has the same measurements as a training record: "
                "the evaluation would leak; regenerate with `make datasets`"
            )


def dataset_stats(
    sft: list[Mapping[str, Any]], dpo: list[Mapping[str, Any]], evaluation: list[Mapping[str, Any]]
) -> dict[str, Any]:
    """Counts per split of labels, confidences, slices and DPO rejection kinds (JSON-ready)."""
    splits = {
        "sft_diagnostic": [r for r in sft if r["kind"] == "diagnostic"],
        "sft_report": [r for r in sft if r["kind"] == "report"],
        "dpo": dpo,
        "eval": evaluation,
    }
    return {
        "records": {"sft": len(sft), "dpo": len(dpo), "eval": len(evaluation)},
        "label": {
            name: {p: sum(r["label"] == p for r in rs) for p in PATHOLOGIES}
            for name, rs in splits.items()
        },
        "confidence": {
            name: {c: sum(r["confidence"] == c for r in rs) for c in CONFIDENCES}
            for name, rs in splits.items()
        },
        "slice": {
            name: {s: sum(r["slice"] == s for r in rs) for s in SLICES}
            for name, rs in splits.items()
        },
        "rejection_kind": {k: sum(r["rejection_kind"] == k for r in dpo) for k in REJECTION_KINDS},
    }
