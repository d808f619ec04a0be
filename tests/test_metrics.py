"""Hand-checked cases for the benchmark statistics (aria.metrics): pure, milliseconds."""

from __future__ import annotations

import pytest

from aria import metrics
from aria.domain import PATHOLOGIES

LOMBALGIE, SFP, SBIT, PERIOSTITE, FASCIITE, ACHILLE = PATHOLOGIES
RUNNER = {
    "inclinaison_tronc": 9.1,
    "valgus_genou": 6.0,
    "adduction_hanche": 7.0,
    "longueur_foulee": 1.12,
    "pronation_pied": 4.0,
    "heel_strike_index": 0.4,
    "dorsiflexion_max": 10.0,
    "age": 34,
}


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


def test_share_and_its_percentage():
    assert metrics.share([True, False, True, True]) == 0.75
    assert metrics.share([]) is None
    assert metrics.as_percent(0.125) == "12.5 %"
    assert metrics.as_percent(None) == "—"
    assert metrics.as_percent(None, missing="-") == "-"


# ---------------------------------------------------------------- accuracy


def test_exact_match_compares_canonical_strings():
    assert (
        metrics.exact_match([SFP, SBIT, FASCIITE, ACHILLE], [SFP, None, FASCIITE, LOMBALGIE]) == 0.5
    )
    assert metrics.exact_match([], []) is None


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


def test_measurement_slices_follow_the_rule():
    assert metrics.measurement_slices(RUNNER) == ["one_rule"]  # 9.1 vs 7: e = 0.3, nothing else
    near = RUNNER | {"inclinaison_tronc": 7.2}  # e = 0.029
    assert "near_threshold" in metrics.measurement_slices(near)
    two = RUNNER | {"valgus_genou": 13.0}  # e = 0.3 as well
    assert metrics.measurement_slices(two)[0] == "two_rules"
    none = RUNNER | {"inclinaison_tronc": 5.0}
    assert metrics.measurement_slices(none)[0] == "no_rule"


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


def test_confidence_confusion_counts_the_rules_band_against_the_answered_one():
    from aria.metrics import INVALID, confidence_confusion

    out = confidence_confusion(
        ["élevée", "élevée", "modérée", "faible"], ["modérée", "élevée", "modérée", None]
    )
    assert out["rows"] == ["élevée", "modérée", "faible"]
    assert out["columns"] == ["élevée", "modérée", "faible", INVALID]
    assert out["matrix"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
