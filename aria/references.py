"""Reference answers derived from the rule: what a perfect model says for a profile.

Datasets teach these texts and the benchmark scores against them. The justification ranks the rules
(`ranking_trace`), then cites the deciding measured value(s) and their threshold(s), in the ASCII
alphabet the schema allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aria.domain import (
    MEASUREMENT_BY_KEY,
    RULE_BY_PATHOLOGY,
    RULES,
    SIGNAL_TAGS,
    deciding_evidence,
    exceedances,
    fired_rules,
    label,
    relative_exceedance,
    validate_profile,
)
from aria.schema import Diagnostic


def ranking_trace(profile: Mapping[str, Any], winner: str | None = None) -> str:
    """The rule's ranking written out as a running maximum, one comparison per signal.

    The rules are taken in table order. Each step is `<signal><sign><leader>` in one-letter tags:
    `G<T` reads "the knee's signal is below the trunk's, the trunk still leads", `F>T` "the stride
    now leads". A two-signal rule is two steps, one per signal (`I` heel strike index, `D`
    dorsiflexion), and takes the lead only when both beat the leader, since its exceedance is the
    smaller of the two. Comparisons follow the exact exceedances, so ties keep the table's order
    as the rule does. The trace names no number: the model compares the prompt's percents, two at
    a time, and never copies one (copies were where a tiny model went wrong; docs/training.md).

    With `winner` (a pathology that is not the label), the trace as if that rule's signals beat
    the label by a hair: the ranking of a model that got one comparison wrong.
    """
    if winner is not None and winner not in RULE_BY_PATHOLOGY:
        raise ValueError(
            f"unknown pathology {winner!r}: expected one of {', '.join(RULE_BY_PATHOLOGY)}"
        )
    values = validate_profile(profile)
    signal = {k: relative_exceedance(values[k], t) for r in RULES for k, t in r.thresholds}
    if winner is not None and winner != label(dict(profile))[0]:
        top = max(exceedances(profile).values())
        for key, _ in RULE_BY_PATHOLOGY[winner].thresholds:
            signal[key] = max(signal[key], top + 1e-9)
    leader, best = RULES[0].tag, signal[RULES[0].thresholds[0][0]]
    steps: list[str] = []
    for rule in RULES[1:]:
        beats = [signal[key] > best for key, _ in rule.thresholds]
        for (key, _), wins in zip(rule.thresholds, beats, strict=True):
            steps.append(f"{SIGNAL_TAGS[key]}{'>' if wins else '<'}{leader}")
        if all(beats):
            leader, best = rule.tag, min(signal[key] for key, _ in rule.thresholds)
    return " ".join(steps)


def reference_justification(profile: Mapping[str, Any], pathology: str | None = None) -> str:
    """The ranking trace, then each signal of `pathology` (default: the label) against its threshold.

    For another pathology than the label, the trace leads to it (`ranking_trace`'s `winner`): the
    wrong answers of the DPO pairs then differ from the right ones at the comparison that decides.
    Within the schema's bound of JUSTIFICATION_MAX_CHARS for any valid profile: the test checks
    every extreme profile (tests/test_schema_prompts.py; the longest were 89 characters).
    """
    pathology = pathology or label(dict(profile))[0]
    return justification(
        ranking_trace(profile, winner=pathology), deciding_evidence(profile, pathology)
    )


def justification(trace: str, evidence: list[tuple[str, str, str]]) -> str:
    """`trace ; key value > threshold` (or `<=`), one clause per cited signal, joined by `et`."""
    return f"{trace} ; " + " et ".join(
        f"{key} {value} {'>' if float(value) > float(threshold) else '<='} {threshold}"
        for key, value, threshold in evidence
    )


def reference_diagnostic(profile: Mapping[str, Any]) -> Diagnostic:
    """The diagnostic a perfect model returns: the rule's label and confidence, and its evidence."""
    pathology, confiance = label(dict(profile))
    return Diagnostic(
        pathologie=pathology,
        confiance=confiance,
        justification=reference_justification(profile, pathology),
    )


# What drives each pathology and what helps, in words a runner reads; no number, so that a report
# only ever cites the input's values and the thresholds.
_MECHANISM: dict[str, tuple[str, ...]] = {
    "Lombalgie mécanique": (
        "Un tronc trop penché vers l'avant augmente le cisaillement sur le rachis lombaire et "
        "sollicite en continu les muscles extenseurs du dos.",
        "Le buste incliné charge les muscles paravertébraux et les disques lombaires à chaque "
        "appui, surtout quand la fatigue s'installe.",
    ),
    "Syndrome fémoro-patellaire": (
        "Un valgus du genou marqué déporte la rotule vers l'extérieur et concentre la pression "
        "sur le cartilage fémoro-patellaire.",
        "Le genou qui rentre vers l'intérieur à l'appui surcharge l'articulation entre la rotule "
        "et le fémur.",
    ),
    "Syndrome bandelette ilio-tibiale": (
        "Une adduction de hanche excessive tend la bandelette ilio-tibiale, qui frotte sur la "
        "face externe du genou à chaque flexion.",
        "La hanche qui s'effondre vers l'intérieur met la bandelette ilio-tibiale en tension et "
        "irrite la face externe du genou.",
    ),
    "Périostite tibiale": (
        "Une foulée trop longue fait attaquer le sol loin devant le centre de masse : le freinage "
        "répété charge le tibia et son périoste.",
        "Allonger la foulée augmente la force de freinage à chaque contact et les contraintes "
        "sur la face interne du tibia.",
    ),
    "Fasciite plantaire": (
        "Une pronation excessive affaisse la voûte plantaire et étire le fascia plantaire à son "
        "insertion sur le talon.",
        "Le pied qui s'écrase vers l'intérieur met le fascia plantaire en tension répétée, "
        "surtout au décollement du talon.",
    ),
    "Tendinite Achille": (
        "Une attaque marquée du talon associée à une forte dorsiflexion met le tendon d'Achille "
        "en tension maximale à chaque appui.",
        "Un contact talon appuyé et une cheville très fléchie étirent le tendon d'Achille et le "
        "surchargent à l'impulsion.",
    ),
}
_ADVICE: dict[str, tuple[str, ...]] = {
    "Lombalgie mécanique": (
        "Renforcer le gainage et les extenseurs du dos, courir le buste plus droit et réduire "
        "temporairement le volume.",
        "Travailler la posture en course, ajouter du gainage régulier et alléger "
        "les séances longues le temps que le dos se calme.",
    ),
    "Syndrome fémoro-patellaire": (
        "Renforcer les fessiers et le quadriceps, travailler le contrôle du genou à l'appui et "
        "limiter les descentes.",
        "Réduire la charge, privilégier le plat, renforcer les muscles de la hanche et contrôler "
        "l'axe du genou lors des exercices unipodaux.",
    ),
    "Syndrome bandelette ilio-tibiale": (
        "Renforcer les abducteurs de hanche, assouplir la chaîne latérale et éviter les pistes "
        "inclinées.",
        "Augmenter légèrement la cadence pour limiter l'adduction, renforcer le moyen fessier et "
        "réduire le volume quelque temps.",
    ),
    "Périostite tibiale": (
        "Raccourcir la foulée en augmentant un peu la cadence, poser le pied sous le bassin et "
        "privilégier des surfaces souples.",
        "Réduire le volume, reprendre progressivement, raccourcir la foulée et renforcer les "
        "muscles de la jambe.",
    ),
    "Fasciite plantaire": (
        "Étirer le mollet et le fascia plantaire, renforcer les muscles du pied et vérifier "
        "l'usure des chaussures.",
        "Masser la voûte plantaire, renforcer le pied, envisager un bilan podologique et réduire "
        "les séances sur sol dur.",
    ),
    "Tendinite Achille": (
        "Renforcement excentrique du mollet, progression prudente du volume et pas de côtes au "
        "début.",
        "Travailler une attaque plus médio-pied, renforcer le mollet en excentrique et éviter "
        "les changements brusques de chaussures.",
    ),
}


def _cite(key: str, value: str, threshold: str) -> str:
    """`label_fr value unit (seuil threshold unit)`, with the formatted strings given."""
    m = MEASUREMENT_BY_KEY[key]
    unit = f" {m.unit}" if m.unit else ""
    return f"{m.label_fr.lower()} {value}{unit} (seuil {threshold}{unit})"


def _report_variant(profile: Mapping[str, Any], n: int) -> int:
    """A deterministic choice among `n` variants, stable across runs (no salted hash)."""
    values = validate_profile(profile)
    return sum(round(v * 100) for v in values.values()) % n


def _runner_context(profile: Mapping[str, Any]) -> str:
    """One sentence on the runner from the context keys present, citing them as given."""
    who = {"F": "Coureuse", "M": "Coureur"}.get(str(profile.get("sexe")), "Coureur")
    parts = [f"{who} de {profile['age']} ans" if "age" in profile else who]
    if "distance_hebdo_km" in profile:
        parts.append(f"{profile['distance_hebdo_km']} km par semaine")
    if "vitesse_kmh" in profile:
        parts.append(f"allure {profile['vitesse_kmh']} km/h")
    if "cadence_pas_min" in profile:
        parts.append(f"cadence {profile['cadence_pas_min']} pas/min")
    pain = profile.get("localisation_douleur")
    if pain and pain != "aucune douleur":
        parts.append(f"douleur signalée : {pain}")
    elif pain:
        parts.append("aucune douleur signalée")
    return ", ".join(parts) + "."


def reference_report(profile: Mapping[str, Any]) -> str:
    """The report a perfect model writes: findings, likely pathology, what drives it, advice.

    French, for the runner and their clinician. It cites only the profile's own values (as the
    prompt shows them) and the rule's thresholds; the wording varies deterministically with the
    profile so that a model sees several phrasings.
    """
    pathology, confiance = label(dict(profile))
    evidence = deciding_evidence(profile, pathology)
    decided = " et ".join(_cite(*e) for e in evidence)
    fired = fired_rules(profile)
    others = [p for p in fired if p != pathology]
    if not fired:
        findings = (
            f"Aucun seuil n'est franchi ; la mesure la plus proche de son seuil est : {decided}."
        )
    else:
        verb = "dépassent leurs seuils" if len(evidence) > 1 else "dépasse son seuil"
        findings = f"Constat principal : {decided} {verb}."
    if others:
        other_evidence = "; ".join(_cite(*e) for p in others for e in deciding_evidence(profile, p))
        findings += f" Autre signal au-dessus du seuil : {other_evidence}."
    v = _report_variant(profile, 12)  # 3 layouts x 2 mechanisms x 2 advice texts
    mechanism = _MECHANISM[pathology][(v // 3) % 2]
    advice = _ADVICE[pathology][(v // 6) % 2]
    context = _runner_context(profile)

    layout = v % 3
    if layout == 0:
        return (
            f"{context}\n{findings}\nPathologie probable : {pathology} (confiance {confiance}).\n"
            f"Pourquoi : {mechanism}\nConseils : {advice}\n"
            "Ce rapport ne remplace pas un examen clinique."
        )
    if layout == 1:
        return (
            f"Bilan biomécanique. {findings} Ces mesures orientent vers : {pathology}, "
            f"avec une confiance {confiance}. {mechanism}\nÀ faire : {advice}\n{context}\n"
            "À confirmer par un clinicien."
        )
    return (
        f"Pathologie probable : {pathology} (confiance {confiance}).\nConstats : {findings}\n"
        f"Mécanisme : {mechanism}\nRecommandations : {advice}\nProfil : {context}\n"
        "Un avis médical reste nécessaire si la douleur persiste."
    )
