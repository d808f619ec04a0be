"""Hand-checked cases for the verdicts on a model's text (aria.verdicts): pure, milliseconds."""

from __future__ import annotations

import pytest

from aria import verdicts
from aria.domain import PATHOLOGIES
from tests.test_metrics import RUNNER

LOMBALGIE, SFP, SBIT, PERIOSTITE, FASCIITE, ACHILLE = PATHOLOGIES


def test_normalise_pathology_reads_variants_of_the_six_labels():
    assert verdicts.normalise_pathology("sfp") == SFP
    assert verdicts.normalise_pathology("  syndrome  FEMORO-patellaire ") == SFP
    assert verdicts.normalise_pathology("SBIT") == SBIT
    assert verdicts.normalise_pathology("tendinite") is None
    assert verdicts.normalise_pathology(3) is None


# ---------------------------------------------------------------- grounding and hallucination


def test_grounding_flags_invented_numbers_and_allows_thresholds():
    good = verdicts.grounding("inclinaison_tronc 9.1 > 7.0 ; 34 ans", RUNNER)
    assert good == {"cited": 3, "ungrounded": [], "grounded_rate": 1.0}
    bad = verdicts.grounding("inclinaison_tronc 9.8 > 7 et valgus 1,35", RUNNER)
    # 9.8 is made up; 7 and 1,35 are thresholds of the rule (decimal comma read as a point)
    assert bad["ungrounded"] == [9.8]
    assert bad["grounded_rate"] == pytest.approx(2 / 3)
    assert verdicts.grounding("rien de chiffré", RUNNER)["grounded_rate"] == 1.0
    # list markers number the text, they cite nothing
    assert verdicts.cited_numbers("1. Constats\n2) Conseils : 1.12 m") == [1.12]


def test_anchoring_insertion_length_ratio():
    source = "le tronc penche de 9.1 degres au dessus du seuil de 7.0"
    assert verdicts.anchoring("le tronc penche de 9.1 degres", source) == 1.0
    # trigrams: (le tronc penche) in source, (tronc penche fort) not -> 1/2
    assert verdicts.anchoring("le tronc penche fort", source) == pytest.approx(0.5)
    assert verdicts.anchoring("", source) == 1.0
    assert verdicts.insertion_rate("tronc lune", source) == pytest.approx(0.5)
    assert verdicts.length_ratio("abcd", "ab") == 2.0
    assert verdicts.length_ratio("abcd", "  ") is None


def test_hallucinated_blocks_bridge_one_known_token():
    source = "le tronc penche de 9.1 degres"
    out = "le tronc penche car la lune est pleine de nuit"
    # "car la lune est pleine" (5 unknown) then "de" (known, bridged) then "nuit" (unknown)
    assert verdicts.hallucinated_blocks(out, source) == ["car la lune est pleine de nuit"]
    assert verdicts.hallucinated_blocks("le tronc lune de mars", source) == []  # 2 unknown < 4
    scores = verdicts.hallucination_scores(out, source, reference="le tronc penche")
    assert scores["flagged"] is True
    assert verdicts.hallucination_scores(source, source, source)["flagged"] is False


def test_keyword_coverage_by_key_or_french_label():
    assert verdicts.keyword_coverage("valgus_genou 12.0 > 10.0", SFP) == 1.0
    assert verdicts.keyword_coverage("Le valgus du genou dépasse le seuil", SFP) == 1.0
    assert verdicts.keyword_coverage("heel_strike_index 0.8 > 0.7", ACHILLE) == 0.5
    assert verdicts.keyword_coverage("pronation_pied 8.0", SFP) == 0.0
    assert verdicts.deciding_keys(ACHILLE) == ["heel_strike_index", "dorsiflexion_max"]


# ---------------------------------------------------------------- justification and report verdicts


def test_grounding_accepts_the_numbers_the_prompt_shows():
    prompt = "- inclinaison_tronc : 9.1 ° (130 % du seuil)"
    assert verdicts.grounding("130 % du seuil", RUNNER)["ungrounded"] == [130.0]
    assert verdicts.grounding("130 % du seuil", RUNNER, prompt)["ungrounded"] == []


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("G<T H<T F>T P<F I>F D>F ; pronation_pied 7.2 > 6.0", True),
        ("G>T", True),
        ("P >= F", True),
        ("Seul signal d'alerte : valgus_genou 13.4 (seuil 10.0).", False),
        ("inclinaison_tronc 9.1 > 7.0", False),
        ("Aucun signal d'alerte ; le plus proche : pronation_pied 5.8 (seuil 6.0).", False),
    ],
)
def test_code_trace_is_single_capital_comparisons(text, code):
    assert verdicts.looks_like_code_trace(text) is code


def test_clinician_readable_needs_words_and_no_code():
    assert verdicts.clinician_readable("Seul signal d'alerte : valgus_genou 13.4 (seuil 10.0).")
    assert not verdicts.clinician_readable("G<T H<T seuil franchi nettement")
    assert not verdicts.clinician_readable("13.4 > 10.0")
    verdict = verdicts.justification_verdict("Seul signal d'alerte : inclinaison_tronc 9.8", RUNNER)
    assert verdict == {
        "grounded": False,
        "ungrounded": [9.8],
        "code_trace": False,
        "readable": True,
        "crossings_right": True,
    }


def test_crossings_right_reads_the_lead_against_the_input():
    """The lead states how many alert signals (rules) fire; `Aucun signal d'alerte` beside a
    firing rule is grounded (its numbers are the input's) and still false."""
    import random

    from aria.domain import fired_rules
    from aria.population import balanced_plan, sample_measurements
    from aria.references import reference_justification

    assert len(fired_rules(RUNNER)) == 1
    false = "Aucun signal d'alerte ; le plus proche : inclinaison_tronc 9.1 (seuil 7.0)."
    verdict = verdicts.justification_verdict(false, RUNNER)
    assert verdict["grounded"] and not verdict["crossings_right"]
    assert verdicts.stated_crossings(false) == 0
    assert verdicts.stated_crossings("Le plus net de  trois signaux d'alerte : x") == 3
    assert verdicts.stated_crossings("inclinaison_tronc 9.1 > 7.0") is None
    assert not verdicts.justification_verdict("inclinaison_tronc 9.1", RUNNER)["crossings_right"]
    # Every reference justification states its runner's count, whatever the count.
    counts = set()
    rng = random.Random(3)
    for target, slice_name in balanced_plan(240):
        runner = sample_measurements(rng, target, slice_name)
        text = reference_justification(runner)
        assert verdicts.justification_verdict(text, runner)["crossings_right"], text
        counts.add(verdicts.stated_crossings(text))
    assert {0, 1, 2} <= counts


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
    assert verdicts.prose_problems(text) == problems


def test_named_pathologies_in_order_with_variants():
    text = "Plutôt une lombalgie MECANIQUE qu'un SFP ; pas de Fasciite plantaire."
    assert verdicts.named_pathologies(text) == [LOMBALGIE, SFP, FASCIITE]
    assert verdicts.names_pathology(text, LOMBALGIE)
    assert not verdicts.names_pathology(text, SFP)  # named, but not as the likely one
    assert not verdicts.names_pathology("Tendinite du genou", ACHILLE)
    assert verdicts.named_pathologies("sfpx et sbits") == []  # abbreviations as whole words only


def test_report_verdict_three_checks_and_all_of_them():
    prompt = "- inclinaison_tronc : 9.1 ° (130 % du seuil)"
    good = verdicts.report_verdict(REPORT, RUNNER, LOMBALGIE, prompt)
    assert good == {
        "prose": True, "problems": [], "names_pathology": True, "grounded": True,
        "ungrounded": [], "passed": True,
    }  # fmt: skip
    wrong_label = verdicts.report_verdict(REPORT, RUNNER, SFP, prompt)
    assert wrong_label["names_pathology"] is False and wrong_label["passed"] is False
    invented = verdicts.report_verdict(REPORT.replace("9.1", "9.6"), RUNNER, LOMBALGIE, prompt)
    assert invented["ungrounded"] == [9.6] and invented["passed"] is False
    assert verdicts.report_verdict(None, RUNNER, LOMBALGIE)["problems"] == ["empty"]


def test_reference_reports_pass_the_verdict():
    from aria.domain import label
    from aria.prompts import REPORT_TEMPLATE, render_prompt
    from aria.references import reference_report
    from evaluation.soak import soak_measurements

    for measurements in soak_measurements(200, seed=5):
        verdict = verdicts.report_verdict(
            reference_report(measurements),
            measurements,
            label(measurements)[0],
            render_prompt(measurements, REPORT_TEMPLATE),
        )
        assert verdict["passed"], (measurements, verdict)
