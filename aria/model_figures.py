"""The figures of one served model in summary.json: each diagnostic body, the report call, the
concurrency sweep, the field orders; and `Schema`, the base of every object of the file.

aria.summary holds what contains them (the model, the run) and reads and writes the file; import
from there. Validation is pydantic's, strict: a key not declared, a missing key or a value of the
wrong type raises SummaryError with pydantic's account of each (the key's path, the problem). A
field with a default (None) is one that newer runs add or older files hold; it is left out of the
JSON while None (`model_dump(exclude_defaults=True)`: every default is None, and a key without a
default is written even when null).
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError


class SummaryError(ValueError):
    """summary.json does not match the schema of aria.summary; the message says where."""


class Schema(BaseModel):
    """One JSON object of summary.json: strict types, no unknown key, keys in field order."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def from_dict(cls, value: Any, where: str | None = None) -> Self:
        """An instance from its JSON object; raises SummaryError naming the keys at fault."""
        try:
            return cls.model_validate(value)
        except ValidationError as error:
            raise SummaryError(
                f"{where or cls.__name__} does not match the schema of aria.summary (written by "
                "another version? rerun `make benchmark`; a key new to the benchmark is declared "
                f"in aria.summary or aria.model_figures, with a default for older files): {error}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in the order of the fields, optional ones left out while None."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


# ---------------------------------------------------------------- figures of one body


class Latency(Schema):
    """Latency percentiles in ms (aria.metrics.latency_summary); None when nothing answered."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    min: float | None
    max: float | None


class Accuracy(Schema):
    """Items, right answers and their share in one group (a pathology, a slice)."""

    n: int
    correct: int
    accuracy: float


class Confusion(Schema):
    """Counts with rows = true label, columns = predicted label (the six, then INVALID)."""

    rows: list[str]
    columns: list[str]
    matrix: list[list[int]]


class Band(Schema):
    """Items announced in one confidence band and how often their pathology was right."""

    n: int
    accuracy: float | None


class ConfidenceRow(Schema):
    """The runners the rule puts in one confidence band: how often the model answered the band
    and how often the whole answer (pathology and confidence) was right."""

    n: int
    confidence_rate: float | None
    whole_answer_rate: float | None


class Calibration(Schema):
    """Accuracy per announced confidence band; monotonic when it never rises toward faible."""

    bands: dict[str, Band]
    monotonic: bool


class Justification(Schema):
    """The justification's verdict rates, then its text means (grounding and hallucination,
    the keys ReportSummary holds too: evaluation.summary computes both with one function)."""

    n: int
    grounded_rate: float | None
    code_trace_rate: float | None
    readable_rate: float | None
    grounded_rate_mean: float | None
    with_ungrounded_rate: float | None
    anchoring_mean: float | None
    insertion_rate_mean: float | None
    length_ratio_mean: float | None
    hallucinated_rate: float | None
    keyword_coverage_mean: float | None
    # Share whose lead states the input's count of alert signals, the rules that fire
    # (aria.verdicts); summaries written before it have none.
    crossings_right_rate: float | None = None


class SetFigures(Schema):
    """The headline figures of one eval set (eval, outside)."""

    n: int
    exact_match: float | None
    exact_match_ci95: list[float] | None
    json_valid_rate: float | None
    cut_by_length_rate: float | None
    justification_grounded_rate: float | None
    per_slice: dict[str, Accuracy]
    # The whole answer (pathology and confidence); summaries written before it have none.
    whole_answer_rate: float | None = None
    per_confidence: dict[str, ConfidenceRow] | None = None


class DiagnosticSummary(Schema):
    """Quality and latency of one model on one diagnostic body (seed or project)."""

    body: str | None
    n: int
    json_valid_rate: float | None
    schema_valid_rate: float | None
    cut_by_length_rate: float | None
    key_order_rate: float | None
    canonical_label_rate: float | None
    exact_match: float | None
    exact_match_ci95: list[float] | None
    exact_match_lenient: float | None
    confidence_accuracy: float | None
    latency_ms: Latency
    ttft_ms: Latency
    output_tokens_mean: float | None
    tokens_per_s_mean: float | None
    goodput: float | None
    error_rate: float | None
    errors: dict[str, int]
    failed_ids: dict[str, list[str]]
    per_pathology: dict[str, Accuracy]
    per_slice: dict[str, Accuracy]
    confusion: Confusion
    calibration: Calibration
    justification: Justification
    # Older summaries only ({sent, skipped}: images sent with the prompt); no run sends one.
    images: dict[str, int] | None = None
    per_set: dict[str, SetFigures]
    # The whole answer (pathology and confidence) by the rule's band; older summaries have none.
    whole_answer_rate: float | None = None
    per_confidence: dict[str, ConfidenceRow] | None = None
    confidence_confusion: Confusion | None = None


# ---------------------------------------------------------------- the other passes of a model


class ReportSummary(Schema):
    """The report call: verdict rates over the reports asked, why texts fail, grounding means
    (the text means of Justification, over the answered reports)."""

    n: int
    answered: int
    prose_rate: float | None
    names_pathology_rate: float | None
    grounded_rate: float | None
    passed_rate: float | None
    cut_by_length_rate: float | None
    problems: dict[str, int]
    text_n: int
    grounded_rate_mean: float | None
    with_ungrounded_rate: float | None
    anchoring_mean: float | None
    insertion_rate_mean: float | None
    length_ratio_mean: float | None
    hallucinated_rate: float | None
    keyword_coverage_mean: float | None
    similarity_mean: float | None
    errors: dict[str, int]


class SweepStep(Schema):
    """Throughput, latency and goodput at one concurrency."""

    concurrency: int
    n: int
    wall_s: float
    throughput_rps: float | None
    output_tokens_per_s: float | None
    latency_ms: Latency
    goodput: float | None


class FieldOrderSummary(Schema):
    """The project's body in one field order (issue 18), not gated."""

    order: list[str]
    slug: str
    canonical: bool
    records: str
    n: int
    exact_match: float | None
    exact_match_ci95: list[float] | None
    json_valid_rate: float | None
    schema_valid_rate: float | None
    cut_by_length_rate: float | None
    key_order_rate: float | None
    canonical_label_rate: float | None
    latency_p50_ms: float | None
    errors: dict[str, int]
