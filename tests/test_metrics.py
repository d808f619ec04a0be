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


# ---------------------------------------------------------------- justification and report verdicts


def test_grounding_accepts_the_numbers_the_prompt_shows():
    prompt = "- inclinaison_tronc : 9.1 ° (130 % du seuil)"
    assert metrics.grounding("130 % du seuil", PROFILE)["ungrounded"] == [130.0]
    assert metrics.grounding("130 % du seuil", PROFILE, prompt)["ungrounded"] == []


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("G<T H<T F>T P<F I>F D>F ; pronation_pied 7.2 > 6.0", True),
        ("G>T", True),
        ("P >= F", True),
        ("Seul seuil franchi : valgus_genou 13.4 (seuil 10.0).", False),
        ("inclinaison_tronc 9.1 > 7.0", False),
        ("Aucun seuil franchi ; le plus proche : pronation_pied 5.8 (seuil 6.0).", False),
    ],
)
def test_code_trace_is_single_capital_comparisons(text, code):
    assert metrics.looks_like_code_trace(text) is code


def test_clinician_readable_needs_words_and_no_code():
    assert metrics.clinician_readable("Seul seuil franchi : valgus_genou 13.4 (seuil 10.0).")
    assert not metrics.clinician_readable("G<T H<T seuil franchi nettement")
    assert not metrics.clinician_readable("13.4 > 10.0")
    verdict = metrics.justification_verdict("Seul seuil franchi : inclinaison_tronc 9.8", PROFILE)
    assert verdict == {
        "grounded": False,
        "ungrounded": [9.8],
        "code_trace": False,
        "readable": True,
    }


REPORT = (
    "Constats : Inclinaison du tronc 9.1 ° (seuil 7.0 °) dépasse son seuil.\n"
    "Pathologie probable : Lombalgie mécanique (confiance élevée).\n"
    "Mécanisme : Un tronc trop penché vers l'avant augmente le cisaillement sur le rachis "
    "lombaire et sollicite en continu les muscles extenseurs du dos.\n"
    "Conseils : Renforcer le gainage, courir le buste plus droit et réduire le volume."
)


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (REPORT, []),
        ("", ["empty"]),
        (
            '{"justification": "Tendinite Achille Achille Achille","pathologie":"Lombalgie"}',
            ["json", "too_short", "repetition"],
        ),
        (REPORT + ' "pathologie": "x"', ["json"]),
        ("Lombalgie mécanique, confiance élevée.", ["too_short"]),
        (" ".join(["9.1 7.0 130 % 1.12 0.40"] * 20) + " " + REPORT, ["not_words"]),
        (REPORT + " dos dos dos", ["repetition"]),
        (REPORT + " le tendon le tendon le tendon", ["repetition"]),
        (" ".join(["courir le buste plus droit et réduire"] * 12), ["repetition"]),
    ],
)
def test_prose_problems_name_why_a_text_is_not_a_report(text, problems):
    assert metrics.prose_problems(text) == problems


def test_named_pathologies_in_order_with_variants():
    text = "Plutôt une lombalgie MECANIQUE qu'un SFP ; pas de Fasciite plantaire."
    assert metrics.named_pathologies(text) == [LOMBALGIE, SFP, FASCIITE]
    assert metrics.names_pathology(text, LOMBALGIE)
    assert not metrics.names_pathology(text, SFP)  # named, but not as the likely one
    assert not metrics.names_pathology("Tendinite du genou", ACHILLE)
    assert metrics.named_pathologies("sfpx et sbits") == []  # abbreviations as whole words only


def test_report_verdict_three_checks_and_all_of_them():
    prompt = "- inclinaison_tronc : 9.1 ° (130 % du seuil)"
    good = metrics.report_verdict(REPORT, PROFILE, LOMBALGIE, prompt)
    assert good == {
        "prose": True, "problems": [], "names_pathology": True, "grounded": True,
        "ungrounded": [], "passed": True,
    }  # fmt: skip
    wrong_label = metrics.report_verdict(REPORT, PROFILE, SFP, prompt)
    assert wrong_label["names_pathology"] is False and wrong_label["passed"] is False
    invented = metrics.report_verdict(REPORT.replace("9.1", "9.6"), PROFILE, LOMBALGIE, prompt)
    assert invented["ungrounded"] == [9.6] and invented["passed"] is False
    assert metrics.report_verdict(None, PROFILE, LOMBALGIE)["problems"] == ["empty"]


def test_reference_reports_pass_the_verdict():
    from aria.domain import label
    from aria.prompts import REPORT_TEMPLATE, render_prompt
    from aria.references import reference_report
    from evaluation.soak import soak_profiles

    for profile in soak_profiles(200, seed=5):
        verdict = metrics.report_verdict(
            reference_report(profile),
            profile,
            label(profile)[0],
            render_prompt(profile, REPORT_TEMPLATE),
        )
        assert verdict["passed"], (profile, verdict)


def test_conforms_to_schema_reads_the_seed_schema():
    from aria.schema import SEED_DIAGNOSTIC_SCHEMA, diagnostic_json_schema

    ok = {"pathologie": "lombalgie", "confiance": "faible", "justification": "x", "extra": 1}
    assert metrics.conforms_to_schema(ok, SEED_DIAGNOSTIC_SCHEMA)  # free string, extras allowed
    assert not metrics.conforms_to_schema(ok | {"confiance": "haute"}, SEED_DIAGNOSTIC_SCHEMA)
    assert not metrics.conforms_to_schema(
        {"pathologie": "x", "confiance": "faible"}, SEED_DIAGNOSTIC_SCHEMA
    )
    assert not metrics.conforms_to_schema(ok | {"justification": 3}, SEED_DIAGNOSTIC_SCHEMA)
    strict = diagnostic_json_schema()
    assert not metrics.conforms_to_schema(ok, strict)  # not an enum label, extra key
    good = {"pathologie": LOMBALGIE, "confiance": "faible", "justification": "Seul seuil franchi"}
    assert metrics.conforms_to_schema(good, strict)
    assert not metrics.conforms_to_schema(good | {"justification": 'a"b'}, strict)  # pattern


ORDER = ("pathologie", "confiance", "justification")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ('{"pathologie":"Lombalgie mécanique","confiance":"faible","justification":"x"}', True),
        ('{"pathologie": "A", "confiance": "b", "justification": "c"}', True),  # spaces
        ('{"pathologie":"G<T H<T ; pronation 7.2 > 6', True),  # cut in a value
        ('{"pathologie":"A","confi', True),  # cut in a key
        ('{"pathologie":', True),
        ('{"pathologie":"a\\"b","conf', True),  # an escaped quote inside a value
        ("{", True),
        ('{"confiance":"faible"', False),  # wrong first key
        ('{"pathologie":"A","confiance":"b"}', False),  # closed before the last key
        ('{"pathologie":"A",}', False),
        ('{"pathologie":"A""confiance":"b"}', False),
        ('{"pathologie":"A","confiance":"b","justification":"c"} x', False),
        ('{"pathologie":"A","confiance":"b","justification":"c","x":"d"}', False),
        ("Lombalgie mécanique", False),
    ],
)
def test_is_json_prefix_in_the_schema_order(text, ok):
    assert metrics.is_json_prefix(text, ORDER) is ok


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


GROUNDED_GATE = {"metric": "justification_grounded_rate", "op": ">=", "target": 0.99}


def test_release_gate_config_holds_the_seed_targets_on_both_bodies_and_a_tiny_grounding_bar():
    path = Path(__file__).resolve().parents[1] / "configs" / "release_gate.yaml"
    doc = yaml.safe_load(path.read_text())

    def triples(thresholds):
        return {(t["metric"], t["op"], float(t["target"])) for t in thresholds}

    production = metrics.resolve_gate(doc, "medgemma")
    assert production["bodies"] == ["seed", "project"]
    assert triples(production["thresholds"]) == triples([*SEED_GATE, GROUNDED_GATE])
    assert production["overridden"] == []
    tiny = metrics.resolve_gate(doc, "tiny")
    assert triples(tiny["thresholds"]) == triples([*SEED_GATE, GROUNDED_GATE | {"target": 0.90}])
    assert tiny["overridden"] == ["justification_grounded_rate"]


def test_resolve_gate_overrides_by_metric_and_rejects_bad_documents():
    doc = {
        "thresholds": SEED_GATE,
        "profiles": {
            "tiny": {"thresholds": [{"metric": "exact_match", "op": ">=", "target": 0.5}]}
        },
    }
    gate = metrics.resolve_gate(doc, "tiny")
    targets = {t["metric"]: t["target"] for t in gate["thresholds"]}
    assert targets["exact_match"] == 0.5 and len(gate["thresholds"]) == 4
    assert metrics.resolve_gate(doc, "other")["bodies"] == ["seed", "project"]  # the default
    with pytest.raises(ValueError, match="bodies"):
        metrics.resolve_gate({"thresholds": SEED_GATE, "bodies": ["seed", "nope"]}, "tiny")
    with pytest.raises(ValueError, match=r"profiles\.tiny"):
        metrics.resolve_gate({"thresholds": SEED_GATE, "profiles": {"tiny": [1]}}, "tiny")


def test_gate_over_two_bodies_fails_on_the_seed_body_alone():
    good = {
        "json_valid_rate": 1.0,
        "exact_match": 0.9,
        "latency_p50_ms": 400,
        "latency_p99_ms": 900,
    }
    seed_cut = good | {"json_valid_rate": 0.63, "exact_match": 0.0}
    passing = metrics.evaluate_gate_bodies(
        {"seed": good, "project": good}, SEED_GATE, ["seed", "project"]
    )
    assert passing["passed"] is True and passing["by_body"] == {"seed": True, "project": True}
    assert len(passing["checked"]) == 8
    result = metrics.evaluate_gate_bodies(
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
    missing = metrics.evaluate_gate_bodies({"project": good}, SEED_GATE, ["seed", "project"])
    assert missing["passed"] is False and missing["by_body"]["seed"] is False
    assert "--bodies seed" in missing["failures"][0]["message"]


def test_gate_reads_the_trained_prompt_and_refuses_a_default_file(tmp_path: Path):
    # The release gate is read on the `default` prompt: a stale data/prompts/default.txt (with the
    # context line the diagnostic prompt dropped) once scored the tiny DPO model 23 % instead of 81 %.
    from aria.domain import MEASUREMENTS, THRESHOLD_BY_KEY
    from aria.prompts import DIAGNOSTIC_TEMPLATE
    from evaluation.config import BenchmarkConfig, SetupError
    from evaluation.inputs import load_prompts

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
