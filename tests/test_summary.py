"""aria.summary: summary.json read and written through the same typed classes.

tests/fixtures/summary_v2.json is the summary of the tiny demo's benchmark of 2026-11-30 (run
20261130-152205), cut to two models (base, dpo), two field orders and four gate checks.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from aria.summary import (
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


def test_a_real_summary_round_trips_key_for_key(tmp_path) -> None:
    summary = read_summary(FIXTURE)
    assert summary.to_dict() == raw()
    out = tmp_path / "summary.json"
    write_summary(out, summary)
    # Same keys in the same order: the file the benchmark writes is the file readers read.
    assert json.dumps(json.loads(out.read_text()), ensure_ascii=False) == json.dumps(
        raw(), ensure_ascii=False
    )
    assert read_summary(out) == summary


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
        SummaryError, match=r"models\[1\]\.bodies\.seed\.latency_ms.*'p42'.*aria\.summary"
    ):
        RunSummary.from_dict(data)


def test_a_missing_key_names_it() -> None:
    data = raw()
    del data["gate"]["by_body"]
    with pytest.raises(SummaryError, match=r"gate.*'by_body'.*make benchmark"):
        RunSummary.from_dict(data)


def test_a_wrong_type_names_the_key() -> None:
    data = raw()
    data["eval"]["n_items"] = "many"
    with pytest.raises(SummaryError, match=r"eval\.n_items: expected int"):
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
