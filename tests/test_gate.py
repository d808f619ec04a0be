"""The release gate's thresholds, its config, and the comparison's verdicts (evaluation.gate)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evaluation import gate

SEED_GATE = [
    {"metric": "json_valid_rate", "op": ">=", "target": 1.0},
    {"metric": "exact_match", "op": ">=", "target": 0.80},
    {"metric": "latency_p50_ms", "op": "<", "target": 1500},
    {"metric": "latency_p99_ms", "op": "<", "target": 3000},
]


@pytest.mark.parametrize(
    ("gain", "band"),
    [
        (10.01, "effective"),
        (10.0, "moderate"),
        (5.0, "moderate"),
        (4.99, "insufficient"),
        (-3.0, "insufficient"),
    ],
)
def test_recommendation_bands_at_their_edges(gain, band):
    assert gate.recommendation_band(gain) == band


def test_pick_winner_quality_first_latency_second():
    models = [
        {"name": "base", "exact_match": 0.5, "json_valid_rate": 1.0, "latency_ms": {"p50": 100}},
        {"name": "sft", "exact_match": 0.9, "json_valid_rate": 1.0, "latency_ms": {"p50": 900}},
        {"name": "dpo", "exact_match": 0.9, "json_valid_rate": 1.0, "latency_ms": {"p50": 800}},
        {"name": "down", "exact_match": None, "json_valid_rate": None, "latency_ms": {}},
    ]
    assert gate.pick_winner(models) == "dpo"
    assert gate.pick_winner(models[3:]) is None


def test_gate_passes_and_fails_with_messages():
    passing = {
        "json_valid_rate": 1.0,
        "exact_match": 0.8,
        "latency_p50_ms": 900,
        "latency_p99_ms": 2500,
    }
    result = gate.evaluate_gate(passing, SEED_GATE)
    assert result["passed"] is True
    assert result["failures"] == []
    assert len(result["checked"]) == 4

    failing = passing | {"exact_match": 0.62, "latency_p50_ms": 1500, "latency_p99_ms": None}
    result = gate.evaluate_gate(failing, SEED_GATE)
    assert result["passed"] is False
    by_metric = {f["metric"]: f for f in result["failures"]}
    assert set(by_metric) == {"exact_match", "latency_p50_ms", "latency_p99_ms"}
    assert by_metric["exact_match"]["by"] == pytest.approx(0.18)
    assert "exact_match = 0.62 misses >= 0.8 by 0.18" in by_metric["exact_match"]["message"]
    assert by_metric["latency_p50_ms"]["by"] == 0  # P50 < 1500 is strict: 1500 fails
    assert by_metric["latency_p99_ms"]["by"] is None
    assert "not measured" in by_metric["latency_p99_ms"]["message"]


def test_validate_gate_rejects_bad_entries():
    with pytest.raises(ValueError, match="op"):
        gate.validate_gate([{"metric": "exact_match", "op": "=>", "target": 0.8}])
    with pytest.raises(ValueError, match="target"):
        gate.validate_gate([{"metric": "exact_match", "op": ">=", "target": "80%"}])
    with pytest.raises(ValueError, match="non-empty"):
        gate.validate_gate([])


GROUNDED_GATE = {"metric": "justification_grounded_rate", "op": ">=", "target": 0.99}
WHOLE_GATE = {"metric": "whole_answer_rate", "op": ">=", "target": 0.90}
ELEVEE_GATE = {"metric": "confidence_rate_elevee", "op": ">=", "target": 0.85}


def test_release_gate_config_holds_the_seed_targets_on_both_bodies_and_a_tiny_grounding_bar():
    path = Path(__file__).resolve().parents[1] / "configs" / "release_gate.yaml"
    doc = yaml.safe_load(path.read_text())

    def triples(thresholds):
        return {(t["metric"], t["op"], float(t["target"])) for t in thresholds}

    production = gate.resolve_gate(doc, "medgemma")
    assert production["bodies"] == ["seed", "project"]
    assert triples(production["thresholds"]) == triples(
        [*SEED_GATE, GROUNDED_GATE, WHOLE_GATE, ELEVEE_GATE]
    )
    assert production["overridden"] == []
    tiny = gate.resolve_gate(doc, "tiny")
    assert triples(tiny["thresholds"]) == triples(
        [
            *SEED_GATE,
            GROUNDED_GATE | {"target": 0.90},
            WHOLE_GATE | {"target": 0.70},
            ELEVEE_GATE | {"target": 0.20},
        ]
    )
    assert tiny["overridden"] == [
        "justification_grounded_rate",
        "whole_answer_rate",
        "confidence_rate_elevee",
    ]


def test_the_gate_fails_a_model_below_its_confidence_bars():
    """The right pathology with the wrong confidence is a wrong answer: the gate says so."""
    from aria.metrics import per_confidence, whole_answer_rate

    correct = [True] * 10
    expected = ["élevée"] * 6 + ["faible"] * 4
    answered = ["modérée"] * 3 + ["élevée"] * 3 + ["faible"] * 4  # 3 of 6 élevée as modérée
    summary = {
        "exact_match": 1.0,
        "whole_answer_rate": whole_answer_rate(correct, expected, answered),
        "per_confidence": per_confidence(correct, expected, answered),
    }
    flat = gate.flat_metrics(summary)
    assert flat["whole_answer_rate"] == 0.7 and flat["confidence_rate_elevee"] == 0.5
    result = gate.evaluate_gate(flat, [WHOLE_GATE, ELEVEE_GATE])
    assert not result["passed"]
    assert [f["metric"] for f in result["failures"]] == [
        "whole_answer_rate",
        "confidence_rate_elevee",
    ]


def test_resolve_gate_overrides_by_metric_and_rejects_bad_documents():
    doc = {
        "thresholds": SEED_GATE,
        "profiles": {
            "tiny": {"thresholds": [{"metric": "exact_match", "op": ">=", "target": 0.5}]}
        },
    }
    resolved = gate.resolve_gate(doc, "tiny")
    targets = {t["metric"]: t["target"] for t in resolved["thresholds"]}
    assert targets["exact_match"] == 0.5 and len(resolved["thresholds"]) == 4
    assert gate.resolve_gate(doc, "other")["bodies"] == ["seed", "project"]  # the default
    with pytest.raises(ValueError, match="bodies"):
        gate.resolve_gate({"thresholds": SEED_GATE, "bodies": ["seed", "nope"]}, "tiny")
    with pytest.raises(ValueError, match=r"profiles\.tiny"):
        gate.resolve_gate({"thresholds": SEED_GATE, "profiles": {"tiny": [1]}}, "tiny")


def test_gate_over_two_bodies_fails_on_the_seed_body_alone():
    good = {
        "json_valid_rate": 1.0,
        "exact_match": 0.9,
        "latency_p50_ms": 400,
        "latency_p99_ms": 900,
    }
    seed_cut = good | {"json_valid_rate": 0.63, "exact_match": 0.0}
    passing = gate.evaluate_gate_bodies(
        {"seed": good, "project": good}, SEED_GATE, ["seed", "project"]
    )
    assert passing["passed"] is True and passing["by_body"] == {"seed": True, "project": True}
    assert len(passing["checked"]) == 8
    result = gate.evaluate_gate_bodies(
        {"seed": seed_cut, "project": good}, SEED_GATE, ["seed", "project"]
    )
    assert result["passed"] is False
    assert result["by_body"] == {"seed": False, "project": True}
    assert {(f["body"], f["metric"]) for f in result["failures"]} == {
        ("seed", "json_valid_rate"),
        ("seed", "exact_match"),
    }
    assert result["failures"][0]["message"].startswith("[seed] json_valid_rate = 0.63 misses")
    # A body the gate requires but the run did not measure fails too.
    missing = gate.evaluate_gate_bodies({"project": good}, SEED_GATE, ["seed", "project"])
    assert missing["passed"] is False and missing["by_body"]["seed"] is False
    assert "--bodies seed" in missing["failures"][0]["message"]


def test_gate_reads_the_trained_prompt_and_refuses_a_default_file(tmp_path: Path):
    # The release gate is read on the `default` prompt: a stale data/prompts/default.txt (with the
    # context line the diagnostic prompt dropped) once scored the tiny DPO model 23 % instead of 81 %.
    from aria.domain import MEASUREMENTS, THRESHOLD_BY_KEY
    from aria.prompts import DIAGNOSTIC_TEMPLATE
    from evaluation.config import BenchmarkConfig, SetupError
    from evaluation.inputs import load_prompts

    measurements = {m.key: THRESHOLD_BY_KEY[m.key] for m in MEASUREMENTS}
    shipped = Path(__file__).resolve().parents[1] / "data" / "prompts"
    cfg = BenchmarkConfig([], Path("eval.jsonl"), tmp_path, prompts_dir=shipped, prompts=["all"])
    templates = load_prompts(cfg, measurements)
    assert templates["default"] == DIAGNOSTIC_TEMPLATE
    assert len(templates) > 1  # the variants of data/prompts are offered beside it

    (tmp_path / "default.txt").write_text("{measurements}\n{context}Diagnostic.", encoding="utf-8")
    stale = BenchmarkConfig([], Path("eval.jsonl"), tmp_path, prompts_dir=tmp_path)
    with pytest.raises(SetupError, match=r"default\.txt would replace the trained prompt"):
        load_prompts(stale, measurements)


def test_a_band_with_no_runner_is_not_checked_but_a_missing_metric_still_fails():
    optional = ELEVEE_GATE | {"if_measured": True}
    result = gate.evaluate_gate({"confidence_rate_elevee": None}, [optional])
    assert result["passed"] and "not checked" in result["checked"][0]["message"]
    assert not gate.evaluate_gate({}, [ELEVEE_GATE])["passed"]
    with pytest.raises(ValueError, match="if_measured"):
        gate.validate_gate([optional | {"if_measured": "yes"}])
