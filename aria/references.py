"""Reference answers derived from the rule: what a perfect model says for a runner's measurements.

Datasets teach these texts and the benchmark scores against them. The justification is written for
the runner's clinician: French words (without accents, in the ASCII alphabet the schema allows),
how many alert signals fire, and the deciding measurement(s) with the measured value and the
threshold, copied as the prompt shows them. A signal is one rule of the domain's table: one
measurement above its threshold, or for the Achilles tendinitis both of its measurements above
theirs. The lead counts signals, not thresholds: a heel-strike index above 0.70 with a dorsiflexion
under 15 crosses a threshold and fires no signal, where "no threshold crossed" would be false. It
cites no other number and no code, and it never needs the label to be written after it: in the
seed's field order the label comes first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aria.domain import RULE_BY_PATHOLOGY, deciding_evidence, fired_rules, label
from aria.schema import Diagnostic

# How many signals fire, in words: a digit there would be a number the input does not contain.
_COUNT_FR = {2: "deux", 3: "trois", 4: "quatre", 5: "cinq", 6: "six"}


def justification_lead(n_fired: int) -> str:
    """What the justification says first: how many alert signals (rules) fire."""
    if n_fired == 0:
        return "Aucun signal d'alerte ; le plus proche :"
    if n_fired == 1:
        return "Seul signal d'alerte :"
    return f"Le plus net de {_COUNT_FR[n_fired]} signaux d'alerte :"


def justification(n_fired: int, evidence: list[tuple[str, str, str]]) -> str:
    """`<lead> key value (seuil threshold)`, one clause per cited signal joined by `et`."""
    clauses = " et ".join(
        f"{key} {value} (seuil {threshold})" for key, value, threshold in evidence
    )
    return f"{justification_lead(n_fired)} {clauses}."


def reference_justification(measurements: Mapping[str, Any], pathology: str | None = None) -> str:
    """How many alert signals the measurements fire, then each signal of `pathology` (default: the label)
    with its measured value and threshold.

    For another pathology than the label (the DPO pairs' wrong answers), the same lead with that
    pathology's signals: what a model says when it picked the wrong measurement.
    Within the schema's bound of JUSTIFICATION_MAX_CHARS for any valid measurements: the test checks
    every extreme runner (tests/test_schema_prompts.py).
    """
    pathology = pathology or label(dict(measurements))[0]
    if pathology not in RULE_BY_PATHOLOGY:
        raise ValueError(
            f"unknown pathology {pathology!r}: expected one of {', '.join(RULE_BY_PATHOLOGY)}"
        )
    return justification(len(fired_rules(measurements)), deciding_evidence(measurements, pathology))


def reference_diagnostic(measurements: Mapping[str, Any]) -> Diagnostic:
    """The diagnostic a perfect model returns: the rule's label and confidence, and its evidence."""
    pathology, confiance = label(dict(measurements))
    return Diagnostic(
        pathologie=pathology,
        confiance=confiance,
        justification=reference_justification(measurements, pathology),
    )


# What the report writes on the line before the pathology.
REPORT_PATHOLOGY_LEAD = "Pathologie probable :"
REPORT_CONFIDENCE_LEAD = "(confiance"

# What drives each pathology and what helps, in words a runner reads; no number, so that a report
# only ever cites the input's values and the thresholds. One short sentence each, with few words
# shared between pathologies: sampled at temperature 0.3, the tiny model spliced the longer
# sentences of two pathologies at a shared word and looped there (docs/training.md, "What the
# answers teach").
MECHANISM: dict[str, str] = {
    "Lombalgie mécanique": "Un tronc penché en avant surcharge les muscles du bas du dos.",
    "Syndrome fémoro-patellaire": "Un genou qui rentre en dedans comprime la rotule sur le fémur.",
    "Syndrome bandelette ilio-tibiale": (
        "Une hanche qui bascule en dedans tend la bandelette sur la face externe du genou."
    ),
    "Périostite tibiale": "Une foulée trop longue freine chaque pas et charge le tibia.",
    "Fasciite plantaire": "Un pied qui s'affaisse étire le fascia sous la voûte plantaire.",
    "Tendinite Achille": "Une attaque talon avec une forte dorsiflexion tire sur le tendon d'Achille.",
}
ADVICE: dict[str, str] = {
    "Lombalgie mécanique": "Renforcer le gainage et courir le buste plus droit.",
    "Syndrome fémoro-patellaire": "Renforcer les fessiers et le quadriceps, limiter les descentes.",
    "Syndrome bandelette ilio-tibiale": "Renforcer les abducteurs et éviter les pistes inclinées.",
    "Périostite tibiale": "Raccourcir la foulée et courir sur un sol souple.",
    "Fasciite plantaire": "Étirer le mollet et vérifier l'usure des chaussures.",
    "Tendinite Achille": "Renforcer le mollet en excentrique et progresser prudemment.",
}


def reference_report(measurements: Mapping[str, Any]) -> str:
    """The report a perfect model writes: likely pathology, findings, what drives it, advice.

    French prose for the runner and their clinician, in four labelled parts. The pathology comes
    first, on a line of its own, so that its tokens are the diagnostic's (`Tendinite`, not
    ` Tendinite`) and the report makes the choice the diagnostic learns, at the same distance
    from the table (`aria.prompts.REPORT_TEMPLATE`). The findings are the diagnostic's
    justification (how many alert signals fire, the deciding measurement(s) with value and
    threshold, keyed as the prompt shows them). The runner's context is not repeated: the only
    numbers are the deciding values and their thresholds (copies are where a small model errs).
    One wording per pathology: with two, the tiny model sampled at temperature 0.3 spliced them
    into sentences that meant nothing.
    """
    pathology, confiance = label(dict(measurements))
    return (
        f"{REPORT_PATHOLOGY_LEAD}\n{pathology} {REPORT_CONFIDENCE_LEAD} {confiance}).\n"
        f"Constats : {reference_justification(measurements, pathology)}\n"
        f"Mécanisme : {MECHANISM[pathology]}\n"
        f"Conseils : {ADVICE[pathology]}\n"
        "Ce rapport ne remplace pas un examen clinique."
    )
