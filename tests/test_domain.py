"""The labelling rule, confidence bands and profile validation, exactly as DOMAIN.md states them."""

import math

import pytest

from aria.domain import (
    CONFIDENCES,
    MEASUREMENT_KEYS,
    PATHOLOGIES,
    RULES,
    exceedances,
    fired_rules,
    label,
    relative_exceedance,
    runner_up,
    validate_measurements,
)

# Every signal comfortably below its threshold: no rule fires.
CALM = {
    "inclinaison_tronc": 3.0,
    "valgus_genou": 4.0,
    "adduction_hanche": 5.0,
    "longueur_foulee": 1.0,
    "pronation_pied": 3.0,
    "heel_strike_index": 0.3,
    "dorsiflexion_max": 8.0,
}


def with_(**changes):
    return {**CALM, **changes}


def test_six_canonical_labels_in_table_order():
    assert PATHOLOGIES == (
        "Lombalgie mécanique",
        "Syndrome fémoro-patellaire",
        "Syndrome bandelette ilio-tibiale",
        "Périostite tibiale",
        "Fasciite plantaire",
        "Tendinite Achille",
    )
    assert CONFIDENCES == ("élevée", "modérée", "faible")
    assert len(MEASUREMENT_KEYS) == 7


@pytest.mark.parametrize(
    ("key", "threshold", "pathology"),
    [
        ("inclinaison_tronc", 7.0, "Lombalgie mécanique"),
        ("valgus_genou", 10.0, "Syndrome fémoro-patellaire"),
        ("adduction_hanche", 10.0, "Syndrome bandelette ilio-tibiale"),
        ("longueur_foulee", 1.35, "Périostite tibiale"),
        ("pronation_pied", 6.0, "Fasciite plantaire"),
    ],
)
def test_single_signal_rules_fire_strictly_above_threshold(key, threshold, pathology):
    assert pathology not in fired_rules(with_(**{key: threshold}))  # at the threshold: no
    assert fired_rules(with_(**{key: threshold * 1.01})) == [pathology]  # just above: yes
    assert label(with_(**{key: threshold * 1.01})) == (pathology, "faible")
    assert label(with_(**{key: threshold * 1.10})) == (pathology, "modérée")
    assert label(with_(**{key: threshold * 1.30})) == (pathology, "élevée")


def test_achilles_needs_both_signals_and_takes_the_smaller_exceedance():
    only_heel = with_(heel_strike_index=0.95)
    only_dorsi = with_(dorsiflexion_max=25.0)
    assert "Tendinite Achille" not in fired_rules(only_heel)
    assert "Tendinite Achille" not in fired_rules(only_dorsi)
    both = with_(heel_strike_index=0.91, dorsiflexion_max=16.5)
    e = exceedances(both)["Tendinite Achille"]
    assert math.isclose(e, min((0.91 - 0.7) / 0.7, (16.5 - 15) / 15))
    assert label(both) == ("Tendinite Achille", "modérée")  # e = 0.10 → modérée


def test_confidence_band_edges():
    # e exactly 0.25 with one rule firing is élevée; just under is modérée.
    assert label(with_(valgus_genou=12.5)) == ("Syndrome fémoro-patellaire", "élevée")
    assert label(with_(valgus_genou=12.4)) == ("Syndrome fémoro-patellaire", "modérée")
    # e exactly 0.10 is modérée; just under is faible.
    assert label(with_(valgus_genou=11.0)) == ("Syndrome fémoro-patellaire", "modérée")
    assert label(with_(valgus_genou=10.9)) == ("Syndrome fémoro-patellaire", "faible")


def test_two_rules_firing_cap_confidence_at_moderee():
    measurements = with_(valgus_genou=15.0, pronation_pied=6.5)  # e = 0.5 and 0.083
    assert fired_rules(measurements) == ["Syndrome fémoro-patellaire", "Fasciite plantaire"]
    assert label(measurements) == ("Syndrome fémoro-patellaire", "modérée")
    assert runner_up(measurements) == "Fasciite plantaire"


def test_no_rule_fires_labels_the_closest_signal_with_faible():
    measurements = with_(valgus_genou=9.5)  # e = -0.05, the least negative
    assert fired_rules(measurements) == []
    assert label(measurements) == ("Syndrome fémoro-patellaire", "faible")


def test_ties_follow_the_table_order():
    # Trunk 8.4 (e = 0.2) and valgus 12.0 (e = 0.2): Lombalgie comes first in the table.
    measurements = with_(inclinaison_tronc=8.4, valgus_genou=12.0)
    e = exceedances(measurements)
    assert math.isclose(e["Lombalgie mécanique"], e["Syndrome fémoro-patellaire"])
    assert label(measurements)[0] == "Lombalgie mécanique"


def test_relative_exceedance_is_signed():
    assert relative_exceedance(14.0, 10.0) == pytest.approx(0.4)
    assert relative_exceedance(5.0, 10.0) == pytest.approx(-0.5)


def test_accented_seed_key_is_accepted():
    measurements = dict(CALM)
    measurements["longueur_foulée"] = measurements.pop("longueur_foulee") + 0.5
    assert label(measurements)[0] == "Périostite tibiale"


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ({"longueur_foulee": None}, "longueur_foulee"),
        ({"valgus_genou": "12"}, "valgus_genou' must be a number"),
        ({"pronation_pied": True}, "pronation_pied' must be a number"),
        ({"longueur_foulee": -0.5}, "longueur_foulee' = -0.5 is physically impossible"),
        ({"longueur_foulee": 0.0}, "physically impossible"),
        ({"heel_strike_index": 1.2}, "heel_strike_index' = 1.2 is physically impossible"),
        ({"heel_strike_index": -0.1}, "heel_strike_index"),
        ({"dorsiflexion_max": float("nan")}, "must be finite"),
        ({"inclinaison_tronc": float("inf")}, "must be finite"),
    ],
)
def test_bad_measurements_raise_naming_the_key(bad, fragment):
    with pytest.raises(ValueError, match=fragment.replace("'", "'")):
        label(with_(**bad))


def test_missing_measurement_names_the_key():
    measurements = dict(CALM)
    del measurements["dorsiflexion_max"]
    with pytest.raises(ValueError, match="missing the measurement 'dorsiflexion_max'"):
        label(measurements)


def test_not_a_dict_is_refused():
    with pytest.raises(ValueError, match="must be a dict"):
        validate_measurements([1, 2, 3])  # type: ignore[arg-type]


def test_context_keys_never_change_the_label():
    base = with_(valgus_genou=13.0)
    noisy = {**base, "age": 70, "sexe": "F", "vitesse_kmh": 18.0, "localisation_douleur": "dos"}
    assert label(base) == label(noisy)


def test_rules_cover_each_pathology_once():
    assert [r.pathology for r in RULES] == list(PATHOLOGIES)


def test_one_range_check_for_validation_and_sampling() -> None:
    from aria.domain import EXAMPLE_MEASUREMENTS, MEASUREMENT_BY_KEY
    from aria.population import is_physical

    stride, hsi = MEASUREMENT_BY_KEY["longueur_foulee"], MEASUREMENT_BY_KEY["heel_strike_index"]
    assert not stride.in_range(0.0) and stride.in_range(0.01) and stride.in_range(3.0)
    assert hsi.in_range(0.0) and hsi.in_range(1.0) and not hsi.in_range(1.01)
    for value in (0.0, 0.01, 3.0, 3.01):
        measurements = dict(EXAMPLE_MEASUREMENTS, longueur_foulee=value)
        try:
            validate_measurements(measurements)
            valid = True
        except ValueError:
            valid = False
        assert is_physical(measurements) is valid is stride.in_range(value)
