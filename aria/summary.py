"""The schema of the benchmark's summary.json (schema_version 2), as pydantic models.

    >>> from aria.summary import read_summary
    >>> summary = read_summary(Path("reports/latest/summary.json"))
    >>> summary.finished_at, summary.models[0].primary.exact_match, summary.gate.passed

`evaluation.runner` (python -m scripts.benchmark) checks the summary it built with
`RunSummary.from_dict` and writes it with `write_summary`; every reader goes through
`read_summary`, so the file and its readers cannot drift apart. Here: the run, its models, the
comparison and the gate; the figures of one model's bodies and passes are aria.model_figures'
(validation, errors and optional keys are explained there).

Older summaries hold keys that current runs no longer write, read and written back as found so
that such a file round-trips unchanged: `vision` and `images` (a benchmark path for images the
product never sends: its base has no vision tower and its data no image), and each model's figures
of its primary body repeated at the model's top level (what schema_version 1 readers read). In
memory there is one copy of those figures, `ModelSummary.primary`; reading checks that the top
level's copy agrees with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

from pydantic import Field, PrivateAttr, field_validator, model_serializer, model_validator

from aria.files import atomic_write_json
from aria.model_figures import (
    DiagnosticSummary,
    FieldOrderSummary,
    ReportSummary,
    Schema,
    SummaryError,
    SweepStep,
)
from aria.settings import STAGES

SCHEMA_VERSION = 2
# The roles a benchmark target may take, in pipeline order, and the role of each model stage
# (aria.settings.STAGES, in the same order): a target is served as a stage, benchmarked as its role.
ROLES: tuple[str, ...] = ("base", "sft", "dpo")
STAGE_ROLES: dict[str, str] = dict(zip(STAGES, ROLES, strict=True))

# ---------------------------------------------------------------- one served model

# Keys of an older model entry that repeat its primary body's DiagnosticSummary.
PRIMARY_KEYS: tuple[str, ...] = tuple(DiagnosticSummary.model_fields)


class ModelSummary(Schema):
    """One served model (a benchmark target): every body it was asked, its other passes."""

    name: str
    role: str
    slug: str
    base_url: str
    prompt: str
    vision: bool | None = None  # older summaries only: whether images were sent
    bodies_measured: list[str]
    sets: list[str]
    primary_body: str
    bodies: dict[str, DiagnosticSummary]
    cold_ms: float | None
    warmup_ms: list[float]
    report: ReportSummary | None
    sweep: list[SweepStep]
    field_orders: dict[str, FieldOrderSummary] | None
    # Whether the file read held the primary body's figures at the top level too (older files).
    _repeats_primary: bool = PrivateAttr(default=False)

    @property
    def primary(self) -> DiagnosticSummary:
        """The figures of the primary body (the seed's when measured): cards and plots read them."""
        return self.bodies[self.primary_body]

    @model_validator(mode="wrap")
    @classmethod
    def _read_top_level_copy(cls, value: Any, handler: Any) -> ModelSummary:
        """Validate without the older files' top-level copy, then check that it agrees."""
        copy = {k: value[k] for k in PRIMARY_KEYS if k in value} if isinstance(value, dict) else {}
        model = handler({k: v for k, v in value.items() if k not in copy} if copy else value)
        if model.primary_body not in model.bodies:
            raise ValueError(f"primary_body {model.primary_body!r} is not in bodies")
        if copy and copy != model.primary.to_dict():
            raise ValueError(f"the top-level figures differ from bodies.{model.primary_body}")
        model._repeats_primary = bool(copy)
        return model

    @model_serializer(mode="wrap")
    def _write_top_level_copy(self, handler: Any) -> dict[str, Any]:
        """The JSON object; a model read with the top-level copy writes it back before `bodies`."""
        out = handler(self)
        if not self._repeats_primary:
            return out
        keys = list(out)
        head, tail = keys[: keys.index("bodies")], keys[keys.index("bodies") :]
        copy = out["bodies"][self.primary_body]
        return {k: out[k] for k in head} | copy | {k: out[k] for k in tail}


# ---------------------------------------------------------------- the run


class EvalInfo(Schema):
    """The eval sets of the run and how many items each gave."""

    path: str
    sets: dict[str, str]
    n_items: int
    n_per_set: dict[str, int]
    limit: int | None
    seed: int


class HeadlineLatency(Schema):
    """The two percentiles an experiment row shows."""

    p50: float | None
    p99: float | None


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


class DeltaCI(Schema):
    """A paired difference of exact match and its bootstrap 95 % interval."""

    delta: float
    ci95_low: float
    ci95_high: float


class PairedDelta(Schema):
    """What one stage gains over another on the items both were asked."""

    from_role: str = Field(alias="from")  # "from" is a Python keyword
    to: str
    body: str
    n_paired: int
    exact_match: DeltaCI | None
    per_pathology: dict[str, float]
    per_slice: dict[str, float]


class Recommendation(Schema):
    """The seed's verdict on fine-tuning: gain in points and its band."""

    from_role: str = Field(alias="from")
    to: str
    body: str
    gain_points: float
    band: str
    text: str


class Comparison(Schema):
    """The winner (a role), the paired deltas base -> sft -> dpo and the recommendation."""

    winner: str | None
    deltas: list[PairedDelta]
    recommendation: Recommendation | None


class GateRow(Schema):
    """What a gate check and a gate failure share: the threshold on one body and the measure."""

    body: str
    metric: str
    op: str
    target: float | None
    measured: float | None
    passed: bool


class GateCheck(GateRow):
    """One threshold checked on one body."""

    message: str


class GateFailure(GateRow):
    """A check that failed, and how far on the wrong side (`by`; None when not measured)."""

    by: float | None
    message: str


class ServingMemory(Schema):
    """Memory of the local server's process tree (serve.memory): GPU memory through NVML on a
    GPU (`gpu_nvml`; `gpu_device_used`, the cards' used memory, where NVML lists none of the
    tree's pids), resident memory on a CPU (`cpu_rss`); GB are 10^9 bytes."""

    gb: float
    source: str
    pid: int
    processes: int


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
    reason: str | None = None
    # Checked (body "serving") wherever measured; None against a remote endpoint.
    serving_memory: ServingMemory | None = None
    serving_note: str | None = None


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

    @field_validator("schema_version")
    @classmethod
    def _current_version(cls, version: int) -> int:
        """Another schema_version is refused with the command that writes a current one."""
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {version!r}, expected {SCHEMA_VERSION}; rerun `make benchmark` "
                "to write a current summary"
            )
        return version

    @classmethod
    def from_dict(cls, value: Any, where: str | None = None) -> Self:
        """As Schema.from_dict, the errors located from `summary`."""
        return super().from_dict(value, where or "summary")

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
    """Write summary.json atomically, through the same models that read it."""
    atomic_write_json(path, summary.to_dict())
