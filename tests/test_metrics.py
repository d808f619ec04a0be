"""Hand-checked cases for the benchmark maths (aria.metrics): pure, milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aria import metrics
from aria.domain import PATHOLOGIES

LOMBALGIE, SFP, SBIT, PERIOSTITE, FASCIITE, ACHILLE = PATHOLOGIES
PROFILE = {
    "inclinaison_tronc": 9.1,
    "valgus_genou": 6.0,
    "adduction_hanche": 7.0,
    "longueur_foulee": 1.12,
    "pronation_pied": 4.0,
    "heel_strike_index": 0.4,
    "dorsiflexion_max": 10.0,
    "age": 34,
}
SEED_GATE = [
    {"metric": "json_valid_rate", "op": ">=", "target": 1.0},
    {"metric": "exact_match", "op": ">=", "target": 0.80},
    {"metric": "latency_p50_ms", "op": "<", "target": 1500},
    {"metric": "latency_p99_ms", "op": "<", "target": 3000},
]


# ---------------------------------------------------------------- latency


def test_percentile_linear_interpolation_known_values():
    # ranks 0..3; q=50 reads rank 1.5 -> halfway between 20 and 30
    assert metrics.percentile([40, 10, 30, 20], 50) == pytest.approx(25.0)
    assert metrics.percentile([1, 2, 3, 4, 5], 99) == pytest.approx(4.96)
    assert metrics.percentile([1, 2, 3, 4, 5], 0) == 1.0
    assert metrics.percentile([1, 2, 3, 4, 5], 100) == 5.0
    assert metrics.percentile([7.5], 99) == 7.5
    assert metrics.percentile([], 50) is None
    with pytest.raises(ValueError):
        metrics.percentile([1, 2], 101)


def test_latency_summary():
    s = metrics.latency_summary(list(range(1, 101)))  # 1..100 ms
    assert s["count"] == 100
    assert s["p50"] == pytest.approx(50.5)
    assert s["p95"] == pytest.approx(95.05)
    assert s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5)
    assert (s["min"], s["max"]) == (1.0, 100.0)
    assert metrics.latency_summary([])["p99"] is None


def test_goodput_counts_failures_as_missed():
    assert metrics.goodput([100, 3500, None, 2999.9], 3000) == pytest.approx(0.5)
    assert metrics.goodput([3000], 3000) == 0.0  # the target is strict
    assert metrics.goodput([], 3000) is None


# ---------------------------------------------------------------- accuracy


def test_exact_match_and_normalisation():
    assert (
        metrics.exact_match([SFP, SBIT, FASCIITE, ACHILLE], [SFP, None, FASCIITE, LOMBALGIE]) == 0.5
    )
    assert metrics.normalise_pathology("sfp") == SFP
    assert metrics.normalise_pathology("  syndrome  FEMORO-patellaire ") == SFP
    assert metrics.normalise_pathology("SBIT") == SBIT
    assert metrics.normalise_pathology("tendinite") is None
    assert metrics.normalise_pathology(3) is None


def test_per_pathology_and_per_slice_accuracy():
    expected = [SFP, SFP, ACHILLE, LOMBALGIE]
    predicted = [SFP, SBIT, ACHILLE, None]
    per = metrics.per_pathology_accuracy(expected, predicted)
    assert list(per) == [LOMBALGIE, SFP, ACHILLE]  # table order, absent ones left out
    assert per[SFP] == {"n": 2, "correct": 1, "accuracy": 0.5}
    assert per[LOMBALGIE]["accuracy"] == 0.0
    slices = metrics.per_slice_accuracy(
        [["two_rules", "near_threshold"], ["near_threshold"], ["clear"]], [True, False, True]
    )
    assert slices["near_threshold"] == {"n": 2, "correct": 1, "accuracy": 0.5}
    assert slices["two_rules"]["accuracy"] == 1.0


def test_profile_slices_follow_the_rule():
    assert metrics.profile_slices(PROFILE) == ["one_rule"]  # 9.1 vs 7: e = 0.3, nothing else
    near = PROFILE | {"inclinaison_tronc": 7.2}  # e = 0.029
    assert "near_threshold" in metrics.profile_slices(near)
    two = PROFILE | {"valgus_genou": 13.0}  # e = 0.3 as well
    assert metrics.profile_slices(two)[0] == "two_rules"
    none = PROFILE | {"inclinaison_tronc": 5.0}
    assert metrics.profile_slices(none)[0] == "no_rule"


def test_confusion_matrix_rows_true_columns_predicted():
    cm = metrics.confusion_matrix([SFP, SFP, ACHILLE, ACHILLE], [SFP, SBIT, None, "bogus"])
    assert cm["columns"][-1] == metrics.INVALID
    sfp, achille = PATHOLOGIES.index(SFP), PATHOLOGIES.index(ACHILLE)
    assert cm["matrix"][sfp][sfp] == 1
    assert cm["matrix"][sfp][PATHOLOGIES.index(SBIT)] == 1
    assert cm["matrix"][achille][-1] == 2
    assert sum(map(sum, cm["matrix"])) == 4
    with pytest.raises(ValueError):
        metrics.confusion_matrix(["not a label"], [SFP])


def test_confidence_accuracy_and_calibration():
    assert metrics.confidence_accuracy(["élevée", "faible"], ["élevée", "modérée"]) == 0.5
    calibrated = metrics.calibration(
        ["élevée", "élevée", "modérée", "modérée", "faible"], [True, True, True, False, False]
    )
    assert calibrated["bands"]["élevée"] == {"n": 2, "accuracy": 1.0}
    assert calibrated["bands"]["modérée"]["accuracy"] == 0.5
    assert calibrated["monotonic"] is True
    inverted = metrics.calibration(["élevée", "faible"], [False, True])
    assert inverted["monotonic"] is False
    empty_band = metrics.calibration(["élevée"], [True])
    assert empty_band["bands"]["faible"] == {"n": 0, "accuracy": None}


# ---------------------------------------------------------------- uncertainty


def test_bootstrap_ci_contains_point_and_is_seeded():
    hits = [1.0] * 17 + [0.0] * 3
    low, high = metrics.bootstrap_ci(hits, seed=7)
    assert low <= 0.85 <= high
    assert 0.6 < low < 0.85 < high <= 1.0
    assert metrics.bootstrap_ci(hits, seed=7) == (low, high)
    assert metrics.bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert metrics.bootstrap_ci([]) is None


def test_paired_bootstrap_delta():
    a = [0.0] * 10 + [1.0] * 10
    b = [1.0] * 20
    d = metrics.paired_bootstrap_delta(a, b)
    assert d["delta"] == pytest.approx(0.5)
    assert d["ci95_low"] <= 0.5 <= d["ci95_high"]
    with pytest.raises(ValueError):
        metrics.paired_bootstrap_delta([1.0], [1.0, 0.0])


# ---------------------------------------------------------------- grounding and hallucination


def test_grounding_flags_invented_numbers_and_allows_thresholds():
    good = metrics.grounding("inclinaison_tronc 9.1 > 7.0 ; 34 ans", PROFILE)
    assert good == {"cited": 3, "ungrounded": [], "grounded_rate": 1.0}
    bad = metrics.grounding("inclinaison_tronc 9.8 > 7 et valgus 1,35", PROFILE)
    # 9.8 is made up; 7 and 1,35 are thresholds of the rule (decimal comma read as a point)
    assert bad["ungrounded"] == [9.8]
    assert bad["grounded_rate"] == pytest.approx(2 / 3)
    assert metrics.grounding("rien de chiffré", PROFILE)["grounded_rate"] == 1.0
    # list markers number the text, they cite nothing
    assert metrics.cited_numbers("1. Constats\n2) Conseils : 1.12 m") == [1.12]


def test_anchoring_insertion_length_ratio():
    source = "le tronc penche de 9.1 degres au dessus du seuil de 7.0"
    assert metrics.anchoring("le tronc penche de 9.1 degres", source) == 1.0
    # trigrams: (le tronc penche) in source, (tronc penche fort) not -> 1/2
    assert metrics.anchoring("le tronc penche fort", source) == pytest.approx(0.5)
    assert metrics.anchoring("", source) == 1.0
    assert metrics.insertion_rate("tronc lune", source) == pytest.approx(0.5)
    assert metrics.length_ratio("abcd", "ab") == 2.0
    assert metrics.length_ratio("abcd", "  ") is None


def test_hallucinated_blocks_bridge_one_known_token():
    source = "le tronc penche de 9.1 degres"
    out = "le tronc penche car la lune est pleine de nuit"
    # "car la lune est pleine" (5 unknown) then "de" (known, bridged) then "nuit" (unknown)
    assert metrics.hallucinated_blocks(out, source) == ["car la lune est pleine de nuit"]
    assert metrics.hallucinated_blocks("le tronc lune de mars", source) == []  # 2 unknown < 4
    scores = metrics.hallucination_scores(out, source, reference="le tronc penche")
    assert scores["flagged"] is True
    assert metrics.hallucination_scores(source, source, source)["flagged"] is False


def test_keyword_coverage_by_key_or_french_label():
    assert metrics.keyword_coverage("valgus_genou 12.0 > 10.0", SFP) == 1.0
    assert metrics.keyword_coverage("Le valgus du genou dépasse le seuil", SFP) == 1.0
    assert metrics.keyword_coverage("heel_strike_index 0.8 > 0.7", ACHILLE) == 0.5
    assert metrics.keyword_coverage("pronation_pied 8.0", SFP) == 0.0
    assert metrics.deciding_keys(ACHILLE) == ["heel_strike_index", "dorsiflexion_max"]


# ---------------------------------------------------------------- comparison and gate


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
    assert metrics.recommendation_band(gain) == band


def test_pick_winner_quality_first_latency_second():
    models = [
        {"name": "base", "exact_match": 0.5, "json_valid_rate": 1.0, "latency_ms": {"p50": 100}},
        {"name": "sft", "exact_match": 0.9, "json_valid_rate": 1.0, "latency_ms": {"p50": 900}},
        {"name": "dpo", "exact_match": 0.9, "json_valid_rate": 1.0, "latency_ms": {"p50": 800}},
        {"name": "down", "exact_match": None, "json_valid_rate": None, "latency_ms": {}},
    ]
    assert metrics.pick_winner(models) == "dpo"
    assert metrics.pick_winner(models[3:]) is None


def test_gate_passes_and_fails_with_messages():
    passing = {
        "json_valid_rate": 1.0,
        "exact_match": 0.8,
        "latency_p50_ms": 900,
        "latency_p99_ms": 2500,
    }
    result = metrics.evaluate_gate(passing, SEED_GATE)
    assert result["passed"] is True
    assert result["failures"] == []
    assert len(result["checked"]) == 4

    failing = passing | {"exact_match": 0.62, "latency_p50_ms": 1500, "latency_p99_ms": None}
    result = metrics.evaluate_gate(failing, SEED_GATE)
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
        metrics.validate_gate([{"metric": "exact_match", "op": "=>", "target": 0.8}])
    with pytest.raises(ValueError, match="target"):
        metrics.validate_gate([{"metric": "exact_match", "op": ">=", "target": "80%"}])
    with pytest.raises(ValueError, match="non-empty"):
        metrics.validate_gate([])


def test_release_gate_config_holds_the_seed_targets():
    path = Path(__file__).resolve().parents[1] / "configs" / "release_gate.yaml"
    thresholds = metrics.validate_gate(yaml.safe_load(path.read_text())["thresholds"])
    got = {(t["metric"], t["op"], float(t["target"])) for t in thresholds}
    assert got == {(t["metric"], t["op"], float(t["target"])) for t in SEED_GATE}


def test_gate_reads_the_trained_prompt_and_refuses_a_default_file(tmp_path: Path):
    # The release gate is read on the `default` prompt: a stale data/prompts/default.txt (with the
    # context line the diagnostic prompt dropped) once scored the tiny DPO model 23 % instead of 81 %.
    from aria.domain import MEASUREMENTS, THRESHOLD_BY_KEY
    from aria.prompts import DIAGNOSTIC_TEMPLATE
    from scripts.benchmark import BenchmarkConfig, SetupError, load_prompts

    profile = {m.key: THRESHOLD_BY_KEY[m.key] for m in MEASUREMENTS}
    shipped = Path(__file__).resolve().parents[1] / "data" / "prompts"
    cfg = BenchmarkConfig([], Path("eval.jsonl"), tmp_path, prompts_dir=shipped, prompts=["all"])
    templates = load_prompts(cfg, profile)
    assert templates["default"] == DIAGNOSTIC_TEMPLATE
    assert len(templates) > 1  # the variants of data/prompts are offered beside it

    (tmp_path / "default.txt").write_text("{measurements}\n{context}Diagnostic.", encoding="utf-8")
    stale = BenchmarkConfig([], Path("eval.jsonl"), tmp_path, prompts_dir=tmp_path)
    with pytest.raises(SetupError, match=r"default\.txt would replace the trained prompt"):
        load_prompts(stale, profile)
