"""The schema of the benchmark's summary.json (schema_version 2), as typed dataclasses.

    >>> from aria.summary import read_summary
    >>> summary = read_summary(Path("reports/latest/summary.json"))
    >>> summary.finished_at, summary.models[0].primary.exact_match, summary.gate.passed

`evaluation.runner` (python -m scripts.benchmark) writes summary.json through `RunSummary.from_dict(...).to_dict()` and every
reader goes through `read_summary`, so the file and its readers cannot drift apart: a key the
classes do not declare, a missing key or a value of the wrong type raises SummaryError naming
where it is. A field that newer runs add and older files lack is declared with a default and
`OPTIONAL` metadata (left out of the JSON while it is None).

Each model's figures of its primary body (the seed's when measured) are also written at the model's
top level (cards and plots of schema_version 1 read them there); in memory there is one copy,
`ModelSummary.primary`, and reading checks that both copies agree.

Over 400 lines because it is the schema: one dataclass per JSON object of the file, field lists
only, plus the ~120 lines that read and write any of them.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any, Self

from aria.files import atomic_write_json

SCHEMA_VERSION = 2
# The benchmark's role of each model stage (aria.settings.STAGES): a target is served as a stage
# and benchmarked under its role; `ROLES` are the roles a target may take, in pipeline order.
STAGE_ROLES: dict[str, str] = {"base": "base", "aria-ft-sft": "sft", "aria-ft-dpo": "dpo"}
ROLES: tuple[str, ...] = tuple(STAGE_ROLES.values())
# Field metadata: the JSON key when it is not the attribute's name ("from" is a Python keyword),
# OPTIONAL for a key that is left out while None, and FLAT for a dataclass whose keys sit in the
# enclosing object (the JSON has no key of its own for it).
OPTIONAL = {"optional": True}
FLAT = {"flat": True}


class SummaryError(ValueError):
    """summary.json does not match the schema of aria.summary; the message says where."""


def _json_key(f: Any) -> str:
    return f.metadata.get("json", f.name)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _load(kind: Any, value: Any, where: str) -> Any:
    """`value` read from JSON as `kind` (a dataclass, list, dict, union or scalar type)."""
    origin = typing.get_origin(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None:
            if len(options) < len(typing.get_args(kind)):
                return None
            raise SummaryError(f"{where}: null where {kind} is expected")
        errors = []
        for option in options:
            try:
                return _load(option, value, where)
            except SummaryError as error:
                errors.append(str(error))
        raise SummaryError(errors[0])
    if isinstance(kind, type) and issubclass(kind, Schema):
        return kind.from_dict(value, where)
    if origin is list:
        if not isinstance(value, list):
            raise SummaryError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(kind)
        return [_load(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SummaryError(f"{where}: expected an object, got {type(value).__name__}")
        _, item = typing.get_args(kind)
        return {k: _load(item, v, f"{where}.{k}") for k, v in value.items()}
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise SummaryError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _load_dataclass(cls: type, value: Any, where: str) -> Any:
    """An instance of `cls` from a JSON object, strict about unknown and missing keys."""
    if not isinstance(value, dict):
        raise SummaryError(f"{where}: expected an object for {cls.__name__}, got {value!r}")
    hints = _hints(cls)
    flat = [f for f in fields(cls) if f.metadata.get("flat")]
    flat_keys = {f.name: [_json_key(g) for g in fields(hints[f.name])] for f in flat}
    declared = {_json_key(f): f for f in fields(cls) if f.init and f not in flat}
    taken = set(declared).union(*flat_keys.values())
    unknown = [k for k in value if k not in taken]
    if unknown:
        raise SummaryError(
            f"{where}: key {unknown[0]!r} is not in the schema ({cls.__name__}); declare it in "
            "aria.summary (with a default if older files lack it)"
        )
    kwargs = {}
    for f in flat:
        part = {k: value[k] for k in flat_keys[f.name] if k in value}
        kwargs[f.name] = _load_dataclass(hints[f.name], part, where)
    for key, f in declared.items():
        if key in value:
            kwargs[f.name] = _load(hints[f.name], value[key], f"{where}.{key}")
        elif f.default is MISSING and f.default_factory is MISSING:
            raise SummaryError(
                f"{where}: missing key {key!r} ({cls.__name__}); is the file older than "
                f"schema_version {SCHEMA_VERSION}? rerun `make benchmark`"
            )
    return cls(**kwargs)


def _dump(value: Any) -> Any:
    """A dataclass, list or dict of them as plain JSON values (OPTIONAL Nones left out)."""
    if is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict"):
            return value.to_dict()
        return _dump_fields(value)
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _dump_fields(value: Any) -> dict[str, Any]:
    out = {}
    for f in fields(value):
        item = getattr(value, f.name)
        if item is None and f.metadata.get("optional"):
            continue
        if f.metadata.get("flat"):
            out |= _dump(item)
            continue
        out[_json_key(f)] = _dump(item)
    return out


class Schema:
    """from_dict / to_dict of a summary dataclass, through its type hints."""

    @classmethod
    def from_dict(cls, value: Any, where: str | None = None) -> Self:
        """An instance from its JSON object; raises SummaryError naming the key at fault."""
        return _load_dataclass(cls, value, where or cls.__name__)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in the order of the fields."""
        return _dump_fields(self)


# ---------------------------------------------------------------- figures of one body


@dataclass
class Latency(Schema):
    """Latency percentiles in ms (aria.metrics.latency_summary); None when nothing answered."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    min: float | None
    max: float | None


@dataclass
class Accuracy(Schema):
    """Items, right answers and their share in one group (a pathology, a slice)."""

    n: int
    correct: int
    accuracy: float


@dataclass
class Confusion(Schema):
    """Counts with rows = true label, columns = predicted label (the six, then INVALID)."""

    rows: list[str]
    columns: list[str]
    matrix: list[list[int]]


@dataclass
class Band(Schema):
    """Items announced in one confidence band and how often their pathology was right."""

    n: int
    accuracy: float | None


@dataclass
class ConfidenceRow(Schema):
    """The runners the rule puts in one confidence band: how often the model answered the band
    and how often the whole answer (pathology and confidence) was right."""

    n: int
    confidence_rate: float | None
    whole_answer_rate: float | None


@dataclass
class Calibration(Schema):
    """Accuracy per announced confidence band; monotonic when it never rises toward faible."""

    bands: dict[str, Band]
    monotonic: bool


@dataclass
class TextMeans(Schema):
    """Grounding and hallucination means over texts (justifications or reports), as keys of the
    object that holds them."""

    grounded_rate_mean: float | None
    with_ungrounded_rate: float | None
    anchoring_mean: float | None
    insertion_rate_mean: float | None
    length_ratio_mean: float | None
    hallucinated_rate: float | None
    keyword_coverage_mean: float | None


@dataclass
class Justification(Schema):
    """The justification's verdict rates and its text means."""

    n: int
    grounded_rate: float | None
    code_trace_rate: float | None
    readable_rate: float | None
    text: TextMeans = field(metadata=FLAT)
    # Share whose lead states the input's count of alert signals, the rules that fire
    # (aria.verdicts); summaries written before it have none.
    crossings_right_rate: float | None = field(default=None, metadata=OPTIONAL)


@dataclass
class Images(Schema):
    """Eval images sent with the prompt, and skipped for a model without a vision tower."""

    sent: int
    skipped: int


@dataclass
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
    whole_answer_rate: float | None = field(default=None, metadata=OPTIONAL)
    per_confidence: dict[str, ConfidenceRow] | None = field(default=None, metadata=OPTIONAL)


@dataclass
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
    images: Images
    per_set: dict[str, SetFigures]
    # The whole answer (pathology and confidence) by the rule's band; older summaries have none.
    whole_answer_rate: float | None = field(default=None, metadata=OPTIONAL)
    per_confidence: dict[str, ConfidenceRow] | None = field(default=None, metadata=OPTIONAL)
    confidence_confusion: Confusion | None = field(default=None, metadata=OPTIONAL)


# ---------------------------------------------------------------- the other passes of a model


@dataclass
class ReportSummary(Schema):
    """The report call: verdict rates over the reports asked, why texts fail, grounding means."""

    n: int
    answered: int
    prose_rate: float | None
    names_pathology_rate: float | None
    grounded_rate: float | None
    passed_rate: float | None
    cut_by_length_rate: float | None
    problems: dict[str, int]
    text_n: int
    text: TextMeans = field(metadata=FLAT)
    similarity_mean: float | None
    errors: dict[str, int]


@dataclass
class SweepStep(Schema):
    """Throughput, latency and goodput at one concurrency."""

    concurrency: int
    n: int
    wall_s: float
    throughput_rps: float | None
    output_tokens_per_s: float | None
    latency_ms: Latency
    goodput: float | None


@dataclass
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


# Keys of a model entry that repeat its primary body's DiagnosticSummary.
PRIMARY_KEYS: tuple[str, ...] = tuple(f.name for f in fields(DiagnosticSummary))


@dataclass
class ModelSummary(Schema):
    """One served model (a benchmark target): every body it was asked, its other passes."""

    name: str
    role: str
    slug: str
    base_url: str
    prompt: str
    vision: bool | None
    bodies_measured: list[str]
    sets: list[str]
    primary_body: str
    bodies: dict[str, DiagnosticSummary]
    cold_ms: float | None
    warmup_ms: list[float]
    report: ReportSummary | None
    sweep: list[SweepStep]
    field_orders: dict[str, FieldOrderSummary] | None

    @property
    def primary(self) -> DiagnosticSummary:
        """The figures of the primary body, which the top level of the JSON repeats."""
        return self.bodies[self.primary_body]

    @classmethod
    def from_dict(cls, value: Any, where: str | None = None) -> Self:
        """As Schema.from_dict, after checking the top-level copy of the primary body's figures."""
        where = where or cls.__name__
        if not isinstance(value, dict):
            raise SummaryError(f"{where}: expected an object for {cls.__name__}, got {value!r}")
        rest = {k: v for k, v in value.items() if k not in PRIMARY_KEYS}
        model = _load_dataclass(cls, rest, where)
        if model.primary_body not in model.bodies:
            raise SummaryError(f"{where}: primary_body {model.primary_body!r} is not in bodies")
        copy = {k: value[k] for k in PRIMARY_KEYS if k in value}
        if copy and copy != _dump(model.primary):
            raise SummaryError(
                f"{where}: the top-level figures differ from bodies.{model.primary_body}"
            )
        return model

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: metadata, the primary body's figures, then bodies and the passes."""
        out = _dump_fields(self)
        head = {k: out.pop(k) for k in list(out) if k in _MODEL_HEAD}
        return head | _dump(self.primary) | out


_MODEL_HEAD = ("name", "role", "slug", "base_url", "prompt", "vision")
_MODEL_HEAD += ("bodies_measured", "sets", "primary_body")


# ---------------------------------------------------------------- the run


@dataclass
class EvalInfo(Schema):
    """The eval sets of the run and how many items each gave."""

    path: str
    sets: dict[str, str]
    n_items: int
    n_per_set: dict[str, int]
    limit: int | None
    seed: int


@dataclass
class HeadlineLatency(Schema):
    """The two percentiles an experiment row shows."""

    p50: float | None
    p99: float | None


@dataclass
class Experiment(Schema):
    """One row per model x prompt x body."""

    name: str
    role: str
    prompt: str
    body: str
    n: int
    exact_match: float | None
    json_valid_rate: float | None
    latency_ms: HeadlineLatency


@dataclass
class DeltaCI(Schema):
    """A paired difference of exact match and its bootstrap 95 % interval."""

    delta: float
    ci95_low: float
    ci95_high: float


@dataclass
class PairedDelta(Schema):
    """What one stage gains over another on the items both were asked."""

    from_role: str = field(metadata={"json": "from"})
    to: str
    body: str
    n_paired: int
    exact_match: DeltaCI | None
    per_pathology: dict[str, float]
    per_slice: dict[str, float]


@dataclass
class Recommendation(Schema):
    """The seed's verdict on fine-tuning: gain in points and its band."""

    from_role: str = field(metadata={"json": "from"})
    to: str
    body: str
    gain_points: float
    band: str
    text: str


@dataclass
class Comparison(Schema):
    """The winner (a role), the paired deltas base -> sft -> dpo and the recommendation."""

    winner: str | None
    deltas: list[PairedDelta]
    recommendation: Recommendation | None


@dataclass
class GateRow(Schema):
    """What a gate check and a gate failure share: the threshold on one body and the measure."""

    body: str
    metric: str
    op: str
    target: float | None
    measured: float | None
    passed: bool


@dataclass
class GateCheck(GateRow):
    """One threshold checked on one body."""

    message: str


@dataclass
class GateFailure(GateRow):
    """A check that failed, and how far on the wrong side (`by`; None when not measured)."""

    by: float | None
    message: str


@dataclass
class ServingMemory(Schema):
    """Memory of the local server's process tree (serve.memory): GPU memory through NVML on a
    GPU (`gpu_nvml`; `gpu_device_used`, the cards' used memory, where NVML lists none of the
    tree's pids), resident memory on a CPU (`cpu_rss`); GB are 10^9 bytes."""

    gb: float
    source: str
    pid: int
    processes: int


@dataclass
class Gate(Schema):
    """The release gate on the production model; passed is None when no model could be chosen."""

    model: str | None
    role: str | None
    config: str
    profile: str
    bodies: list[str]
    overridden: list[str]
    passed: bool | None
    by_body: dict[str, bool]
    checked: list[GateCheck]
    failures: list[GateFailure]
    reason: str | None = field(default=None, metadata=OPTIONAL)
    # Checked (body "serving") wherever measured; None against a remote endpoint.
    serving_memory: ServingMemory | None = field(default=None, metadata=OPTIONAL)
    serving_note: str | None = field(default=None, metadata=OPTIONAL)


@dataclass
class RunSummary(Schema):
    """summary.json: one benchmark run."""

    schema_version: int
    run_id: str
    started_at: str
    finished_at: str
    profile: str
    eval: EvalInfo
    bodies: list[str]
    prompts: list[str]
    slo_ms: float
    notes: list[str]
    models: list[ModelSummary]
    experiments: list[Experiment]
    comparison: Comparison
    gate: Gate

    @classmethod
    def from_dict(cls, value: Any, where: str | None = None) -> Self:
        """As Schema.from_dict, refusing another schema_version with the command that fixes it."""
        version = value.get("schema_version") if isinstance(value, dict) else None
        if version != SCHEMA_VERSION:
            raise SummaryError(
                f"{where or 'summary'}: schema_version {version!r}, expected {SCHEMA_VERSION}; "
                "rerun `make benchmark` to write a current summary"
            )
        return _load_dataclass(cls, value, where or "summary")

    def model_for(self, stage: str, role: str | None = None) -> ModelSummary | None:
        """The model served as `stage` (its served name), else the one benchmarked as `role`."""
        for wanted, key in ((stage, "name"), (role, "role")):
            for model in self.models:
                if wanted is not None and getattr(model, key) == wanted:
                    return model
        return None


def read_summary(path: Path) -> RunSummary:
    """summary.json as a RunSummary; raises SummaryError naming the file and the key at fault."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SummaryError(
            f"{path}:{error.lineno}: not valid JSON ({error.msg}); rerun `make benchmark`"
        ) from None
    return RunSummary.from_dict(data, where=str(path))


def write_summary(path: Path, summary: RunSummary) -> None:
    """Write summary.json atomically, through the same classes that read it."""
    atomic_write_json(path, summary.to_dict())
