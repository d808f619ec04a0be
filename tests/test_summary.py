"""aria.summary: summary.json read and written through the same pydantic models.

tests/fixtures/summary_v2.json is the summary of the tiny demo's benchmark of 2026-11-30 (run
20261130-152205), cut to two models (base, dpo), two field orders and four gate checks. It was
written before the benchmark dropped its image path and the top-level copy of each model's
primary body: it holds `vision`, `images` and that copy, which current runs no longer write.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from aria.summary import (
    PRIMARY_KEYS,
    ROLES,
    SCHEMA_VERSION,
    STAGE_ROLES,
    ModelSummary,
    RunSummary,
    SummaryError,
    read_summary,
    write_summary,
)

FIXTURE = Path(__file__).parent / "fixtures" / "summary_v2.json"


def raw() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def current(data: dict) -> dict:
    """`data` as a current run writes it: no vision, no images, no top-level copy."""
    data = copy.deepcopy(data)
    for i, model in enumerate(data["models"]):
        kept = {k: v for k, v in model.items() if k not in PRIMARY_KEYS and k != "vision"}
        for body in kept["bodies"].values():
            del body["images"]
        data["models"][i] = kept
    return data


def test_a_real_summary_round_trips_byte_for_byte(tmp_path) -> None:
    summary = read_summary(FIXTURE)
    assert summary.to_dict() == raw()
    # Same keys in the same order and the same values: the file as the benchmark wrote it.
    text = FIXTURE.read_text(encoding="utf-8")
    assert json.dumps(summary.to_dict(), ensure_ascii=False) + "\n" == text
    out = tmp_path / "summary.json"
    write_summary(out, summary)
    assert json.dumps(json.loads(out.read_text()), ensure_ascii=False) + "\n" == text
    assert read_summary(out) == summary


def test_a_current_summary_has_no_image_key_nor_top_level_copy(tmp_path) -> None:
    data = current(raw())
    assert "exact_match" not in data["models"][1] and "vision" not in data["models"][1]
    summary = RunSummary.from_dict(data)
    assert summary.to_dict() == data
    assert list(summary.to_dict()["models"][1]) == list(data["models"][1])
    # The figures read are the same, with or without the older keys.
    old = read_summary(FIXTURE).models[1]
    assert old.primary.images == {"sent": 0, "skipped": 0} and old.vision is False
    assert summary.models[1].primary == old.primary.model_copy(update={"images": None})
    assert (summary.models[1].vision, summary.models[1].primary.images) == (None, None)


def test_fields_are_typed_and_the_primary_body_is_one_copy() -> None:
    summary = read_summary(FIXTURE)
    assert summary.schema_version == SCHEMA_VERSION
    assert summary.finished_at.startswith("2026-11-30")
    dpo = summary.model_for("aria-ft-dpo")
    assert isinstance(dpo, ModelSummary) and dpo.role == "dpo"
    assert dpo.primary is dpo.bodies[dpo.primary_body]
    assert dpo.primary.latency_ms.p50 == raw()["models"][1]["latency_ms"]["p50"]
    assert summary.comparison.deltas[0].from_role == "base"
    assert summary.gate.passed is False and summary.gate.failures[0].by is not None


def test_model_for_matches_the_served_name_then_the_role() -> None:
    summary = read_summary(FIXTURE)
    assert summary.model_for("aria-ft-dpo").name == "aria-ft-dpo"
    assert summary.model_for("aria-ft", role="dpo").name == "aria-ft-dpo"
    assert summary.model_for("aria-ft-sft", role="sft") is None


def test_stage_roles_cover_every_stage() -> None:
    from aria.settings import STAGES

    assert tuple(STAGE_ROLES) == STAGES
    assert ROLES == ("base", "sft", "dpo")


def test_an_unknown_key_names_where_it_is_and_the_fix() -> None:
    data = raw()
    data["models"][1]["bodies"]["seed"]["latency_ms"]["p42"] = 1.0
    with pytest.raises(
        SummaryError,
        match=r"(?s)aria\.summary.*models\.1\.bodies\.seed\.latency_ms\.p42\n\s+Extra inputs",
    ):
        RunSummary.from_dict(data)


def test_a_missing_key_names_it() -> None:
    data = raw()
    del data["gate"]["by_body"]
    with pytest.raises(
        SummaryError, match=r"(?s)make benchmark.*\ngate\.by_body\n\s+Field required"
    ):
        RunSummary.from_dict(data)


def test_a_wrong_type_names_the_key() -> None:
    data = raw()
    data["eval"]["n_items"] = "many"
    with pytest.raises(
        SummaryError, match=r"\neval\.n_items\n\s+Input should be a valid integer.*'many'"
    ):
        RunSummary.from_dict(data)


def test_another_schema_version_is_refused_with_the_fix() -> None:
    data = raw() | {"schema_version": 1}
    with pytest.raises(SummaryError, match=r"schema_version 1.*make benchmark"):
        RunSummary.from_dict(data)


def test_top_level_figures_must_repeat_the_primary_body() -> None:
    data = raw()
    data["models"][1]["exact_match"] = 0.5
    with pytest.raises(SummaryError, match=r"top-level figures differ from bodies\.seed"):
        RunSummary.from_dict(data)


def test_the_primary_body_must_be_measured() -> None:
    data = current(raw())
    data["models"][0]["primary_body"] = "json"
    with pytest.raises(SummaryError, match=r"\nmodels\.0\n.*primary_body 'json' is not in bodies"):
        RunSummary.from_dict(data)


def test_an_optional_field_is_left_out_while_none() -> None:
    data = copy.deepcopy(raw())
    assert "reason" not in data["gate"]
    data["gate"] |= {"model": None, "role": None, "passed": None}
    data["gate"]["reason"] = "several targets and none with role dpo"
    summary = RunSummary.from_dict(data)
    assert summary.gate.reason.startswith("several")
    assert summary.to_dict() == data
    assert "reason" not in read_summary(FIXTURE).to_dict()["gate"]


def test_bad_json_names_the_line(tmp_path) -> None:
    path = tmp_path / "summary.json"
    path.write_text('{"schema_version": 2,\n oops}')
    with pytest.raises(SummaryError, match=r"summary\.json:2: not valid JSON"):
        read_summary(path)


def test_the_report_renders_from_the_typed_summary() -> None:
    from evaluation.report import models_table, render_report

    summary = read_summary(FIXTURE)
    text = render_report(summary, ["latency.png"])
    assert text.startswith("# Benchmark 20261130-152205\n")
    assert f"finished {summary.finished_at}" in text
    assert "Model **aria-ft-dpo** (dpo): **FAILED**" in text
    assert "| dpo | aria-ft-dpo | seed | 300 | 100.0% |" in models_table(summary.models)
    assert text.endswith("![latency.png](latency.png)\n")
