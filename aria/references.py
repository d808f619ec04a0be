"""Reference answers derived from the rule: what a perfect model says for a runner's measurements.

Datasets teach these texts and the benchmark scores against them. The justification is written for
the runner's clinician: French words (without accents, in the ASCII alphabet the schema allows),
how many thresholds are crossed, and the deciding measurement(s) with the measured value and the
threshold, copied as the prompt shows them. It cites no other number and no code, and it never
needs the label to be written after it: in the seed's field order the label comes first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aria.domain import RULE_BY_PATHOLOGY, deciding_evidence, fired_rules, label
from aria.schema import Diagnostic

# How many rules fire, in words: a digit there would be a number the input does not contain.
_COUNT_FR = {2: "deux", 3: "trois", 4: "quatre", 5: "cinq", 6: "six"}


def justification_lead(n_fired: int) -> str:
    """What the justification says first: how many thresholds are crossed."""
    if n_fired == 0:
        return "Aucun seuil franchi ; le plus proche :"
    if n_fired == 1:
        return "Seul seuil franchi :"
    return f"Le plus net de {_COUNT_FR[n_fired]} seuils franchis :"


def justification(n_fired: int, evidence: list[tuple[str, str, str]]) -> str:
    """`<lead> key value (seuil threshold)`, one clause per cited signal joined by `et`."""
    clauses = " et ".join(
        f"{key} {value} (seuil {threshold})" for key, value, threshold in evidence
    )
    return f"{justification_lead(n_fired)} {clauses}."


def reference_justification(measurements: Mapping[str, Any], pathology: str | None = None) -> str:
    """How many thresholds the measurements cross, then each signal of `pathology` (default: the label)
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


# What drives each pathology and what helps, in words a runner reads; no number, so that a report
# only ever cites the input's values and the thresholds.
MECHANISM: dict[str, str] = {
    "Lombalgie mécanique": (
        "Un tronc trop penché vers l'avant augmente le cisaillement sur le rachis lombaire et "
        "sollicite en continu les muscles extenseurs du dos."
    ),
    "Syndrome fémoro-patellaire": (
        "Un valgus du genou marqué déporte la rotule vers l'extérieur et concentre la pression "
        "sur le cartilage fémoro-patellaire."
    ),
    "Syndrome bandelette ilio-tibiale": (
        "Une adduction de hanche excessive tend la bandelette ilio-tibiale, qui frotte sur la "
        "face externe du genou à chaque flexion."
    ),
    "Périostite tibiale": (
        "Une foulée trop longue fait attaquer le sol loin devant le centre de masse : le freinage "
        "répété charge le tibia et son périoste."
    ),
    "Fasciite plantaire": (
        "Une pronation excessive affaisse la voûte plantaire et étire le fascia plantaire à son "
        "insertion sur le talon."
    ),
    "Tendinite Achille": (
        "Une attaque marquée du talon associée à une forte dorsiflexion met le tendon d'Achille "
        "en tension maximale à chaque appui."
    ),
}
ADVICE: dict[str, str] = {
    "Lombalgie mécanique": (
        "Renforcer le gainage et les extenseurs du dos, courir le buste plus droit et réduire "
        "temporairement le volume."
    ),
    "Syndrome fémoro-patellaire": (
        "Renforcer les fessiers et le quadriceps, travailler le contrôle du genou à l'appui et "
        "limiter les descentes."
    ),
    "Syndrome bandelette ilio-tibiale": (
        "Renforcer les abducteurs de hanche, assouplir la chaîne latérale et éviter les pistes "
        "inclinées."
    ),
    "Périostite tibiale": (
        "Raccourcir la foulée en augmentant un peu la cadence, poser le pied sous le bassin et "
        "privilégier des surfaces souples."
    ),
    "Fasciite plantaire": (
        "Étirer le mollet et le fascia plantaire, renforcer les muscles du pied et vérifier "
        "l'usure des chaussures."
    ),
    "Tendinite Achille": (
        "Renforcement excentrique du mollet, progression prudente du volume et pas de côtes au "
        "début."
    ),
}


def reference_report(measurements: Mapping[str, Any]) -> str:
    """The report a perfect model writes: findings, likely pathology, what drives it, advice.

    French prose for the runner and their clinician, in four labelled parts. The findings are the
    diagnostic's justification (how many thresholds are crossed, the deciding measurement(s) with
    value and threshold, keyed as the prompt shows them), so the report reasons before it names
    the pathology and a small model reuses what the diagnostic taught it. The runner's context is
    not repeated: the only numbers are the deciding values and their thresholds (copies are where
    a small model errs). One wording per pathology: with two, the tiny model sampled at
    temperature 0.3 spliced them into sentences that meant nothing.
    """
    pathology, confiance = label(dict(measurements))
    return (
        f"Constats : {reference_justification(measurements, pathology)}\n"
        f"Pathologie probable : {pathology} (confiance {confiance}).\n"
        f"Mécanisme : {MECHANISM[pathology]}\n"
        f"Conseils : {ADVICE[pathology]}\n"
        "Ce rapport ne remplace pas un examen clinique."
    )
