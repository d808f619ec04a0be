"""Measurements, pathologies and the rule that labels a runner's measurements.

This module is the single home of the domain contract: thresholds, labels, the labelling rule and the
confidence rule. It is pure Python (no torch) so that everything can import it cheaply.

    >>> from aria.domain import label
    >>> label({"inclinaison_tronc": 9.1, "valgus_genou": 6.0, "adduction_hanche": 7.0,
    ...        "longueur_foulee": 1.1, "pronation_pied": 4.0, "heel_strike_index": 0.4,
    ...        "dorsiflexion_max": 10.0})
    ('Lombalgie mécanique', 'élevée')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Measurement:
    """One biomechanical measurement: its key, French label, unit and physically possible range."""

    key: str
    label_fr: str
    unit: str
    low: float  # smallest physically possible value (inclusive unless low_exclusive)
    high: float  # largest physically possible value (inclusive)
    decimals: int  # how many decimals the prompts and datasets show
    low_exclusive: bool = False

    def in_range(self, value: float) -> bool:
        """True when `value` is physically possible for this measurement (low to high)."""
        too_low = value <= self.low if self.low_exclusive else value < self.low
        return not too_low and value <= self.high


# Bounds are what a motion-capture system can physically report, not what is healthy.
MEASUREMENTS: tuple[Measurement, ...] = (
    Measurement("inclinaison_tronc", "Inclinaison du tronc", "°", -30.0, 60.0, 1),
    Measurement("valgus_genou", "Valgus du genou", "°", -30.0, 45.0, 1),
    Measurement("adduction_hanche", "Adduction de la hanche", "°", -30.0, 45.0, 1),
    Measurement("longueur_foulee", "Longueur de foulée", "m", 0.0, 3.0, 2, low_exclusive=True),
    Measurement("pronation_pied", "Pronation du pied", "°", -30.0, 40.0, 1),
    Measurement("heel_strike_index", "Indice d'attaque talon", "", 0.0, 1.0, 2),
    Measurement("dorsiflexion_max", "Dorsiflexion maximale", "°", -30.0, 60.0, 1),
)
MEASUREMENT_KEYS: tuple[str, ...] = tuple(m.key for m in MEASUREMENTS)
MEASUREMENT_BY_KEY: dict[str, Measurement] = {m.key: m for m in MEASUREMENTS}
# The seed spells the stride key with an accent; accept it on input, never emit it.
KEY_ALIASES: dict[str, str] = {"longueur_foulée": "longueur_foulee"}


@dataclass(frozen=True)
class Rule:
    """A pathology and the signal(s) pointing to it; every listed measurement must exceed its threshold."""

    pathology: str
    thresholds: tuple[tuple[str, float], ...]
    abbreviation: str | None = None


# Table order matters: it breaks ties.
RULES: tuple[Rule, ...] = (
    Rule("Lombalgie mécanique", (("inclinaison_tronc", 7.0),)),
    Rule("Syndrome fémoro-patellaire", (("valgus_genou", 10.0),), "SFP"),
    Rule("Syndrome bandelette ilio-tibiale", (("adduction_hanche", 10.0),), "SBIT"),
    Rule("Périostite tibiale", (("longueur_foulee", 1.35),)),
    Rule("Fasciite plantaire", (("pronation_pied", 6.0),)),
    Rule("Tendinite Achille", (("heel_strike_index", 0.7), ("dorsiflexion_max", 15.0))),
)
PATHOLOGIES: tuple[str, ...] = tuple(r.pathology for r in RULES)
RULE_BY_PATHOLOGY: dict[str, Rule] = {r.pathology: r for r in RULES}
# Every measurement has exactly one threshold (the Achilles rule uses two measurements).
THRESHOLD_BY_KEY: dict[str, float] = {key: t for rule in RULES for key, t in rule.thresholds}

CONFIDENCES: tuple[str, ...] = ("élevée", "modérée", "faible")
HIGH_CONFIDENCE_MIN_EXCEEDANCE = 0.25
MODERATE_CONFIDENCE_MIN_EXCEEDANCE = 0.10

# Context a runner's measurements may carry; realistic, never used by the rule.
CONTEXT_KEYS: tuple[str, ...] = (
    "age",
    "sexe",
    "distance_hebdo_km",
    "vitesse_kmh",
    "cadence_pas_min",
    "localisation_douleur",
)

# An illustrative runner for docs, cards and health checks: trunk lean 9.1 > 7 fires alone.
EXAMPLE_MEASUREMENTS: dict[str, float] = {
    "inclinaison_tronc": 9.1,
    "valgus_genou": 6.0,
    "adduction_hanche": 7.0,
    "longueur_foulee": 1.1,
    "pronation_pied": 4.0,
    "heel_strike_index": 0.4,
    "dorsiflexion_max": 10.0,
}


def validate_measurements(measurements: Mapping[str, Any]) -> dict[str, float]:
    """Return the seven measurements of `measurements` as floats, or raise ValueError naming the bad key.

    Accepts the seed's accented key `longueur_foulée`. Rejects a missing key, a non-numeric value
    (strings and booleans included), NaN or infinity, and a value outside the physical range.
    """
    if not isinstance(measurements, Mapping):
        raise ValueError(
            f"a profile must be a dict of measurements, got {type(measurements).__name__}"
        )
    normalised = {KEY_ALIASES.get(k, k): v for k, v in measurements.items()}
    values: dict[str, float] = {}
    for m in MEASUREMENTS:
        if m.key not in normalised:
            raise ValueError(
                f"profile is missing the measurement '{m.key}' ({m.label_fr}); "
                f"a profile needs all of: {', '.join(MEASUREMENT_KEYS)}"
            )
        raw = normalised[m.key]
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError(
                f"measurement '{m.key}' must be a number in {m.unit or 'index units'}, got {raw!r}"
            )
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError(f"measurement '{m.key}' must be finite, got {raw!r}")
        if not m.in_range(value):
            low_bracket = "]" if m.low_exclusive else "["
            raise ValueError(
                f"measurement '{m.key}' = {value:g} is physically impossible: "
                f"expected a value in {low_bracket}{m.low:g}, {m.high:g}] {m.unit}".rstrip()
            )
        values[m.key] = value
    return values


def relative_exceedance(value: float, threshold: float) -> float:
    """(value - threshold) / threshold: positive when the value is above the threshold."""
    return (value - threshold) / threshold


def percent_of_threshold(key: str, value: float) -> str:
    """`value / threshold` in whole percent: above 100 the measurement's signal fires.

    The prompts show it beside each value; the rule's ranking is the ranking of these ratios
    (relative exceedance = ratio - 1), so a reader compares like with like across units. Whole
    percent suffices: one step of any value's displayed precision moves its ratio by at least
    0.67 %, so a value just above its threshold shows 101, never 100.
    """
    return f"{value / THRESHOLD_BY_KEY[key] * 100:.0f}"


def exceedances(measurements: Mapping[str, Any]) -> dict[str, float]:
    """Relative exceedance of every rule, in table order; a two-signal rule takes the smaller one."""
    values = validate_measurements(measurements)
    return {
        rule.pathology: min(relative_exceedance(values[key], t) for key, t in rule.thresholds)
        for rule in RULES
    }


def keys_by_exceedance(measurements: Mapping[str, Any]) -> list[str]:
    """The seven measurement keys, the largest relative exceedance first; ties keep the table's order.

    Read in this order, the rule is positional: the label is Tendinite Achille when its two
    measurements come first and second (its exceedance is the smaller of the two, so both are
    above every other), otherwise the pathology of the first measurement that is not one of them.
    """
    values = validate_measurements(measurements)
    # sorted() is stable and MEASUREMENT_KEYS follows RULES, so ties break as the rule does.
    return sorted(
        MEASUREMENT_KEYS, key=lambda key: -relative_exceedance(values[key], THRESHOLD_BY_KEY[key])
    )


def fired_rules(measurements: Mapping[str, Any]) -> list[str]:
    """Pathologies whose rule fires (exceedance > 0), in table order."""
    return [p for p, e in exceedances(measurements).items() if e > 0]


def ranked_pathologies(measurements: Mapping[str, Any]) -> list[tuple[str, float]]:
    """All pathologies with their exceedance, largest first; ties keep the table's order."""
    # sorted() is stable, so equal exceedances stay in table order.
    return sorted(exceedances(measurements).items(), key=lambda item: -item[1])


def confidence(top_exceedance: float, n_fired: int) -> str:
    """The confidence band of DOMAIN.md from the top exceedance and the number of rules that fire."""
    if top_exceedance >= HIGH_CONFIDENCE_MIN_EXCEEDANCE and n_fired == 1:
        return "élevée"
    if top_exceedance >= MODERATE_CONFIDENCE_MIN_EXCEEDANCE:
        return "modérée"
    return "faible"


def label(measurements: dict) -> tuple[str, str]:
    """(pathology, confidence) of a runner's measurements, by the total and deterministic rule of DOMAIN.md."""
    ranked = ranked_pathologies(measurements)
    pathology, top = ranked[0]
    n_fired = sum(1 for _, e in ranked if e > 0)
    return pathology, confidence(top, n_fired)


def runner_up(measurements: Mapping[str, Any]) -> str:
    """The second pathology by exceedance: the most plausible wrong answer."""
    return ranked_pathologies(measurements)[1][0]


def format_value(key: str, value: float) -> str:
    """A measurement's value with the decimals the prompts and datasets use."""
    return f"{value:.{MEASUREMENT_BY_KEY[key].decimals}f}"


def deciding_evidence(
    measurements: Mapping[str, Any], pathology: str
) -> list[tuple[str, str, str]]:
    """(key, measured value, threshold) for each signal of `pathology`, formatted for citation."""
    values = validate_measurements(measurements)
    return [
        (key, format_value(key, values[key]), format_value(key, threshold))
        for key, threshold in RULE_BY_PATHOLOGY[pathology].thresholds
    ]
