"""Prompts and request bodies of the two calls downstream services make.

    >>> from aria.prompts import diagnostic_messages
    >>> diagnostic_messages(measurements)[0]["role"]
    'user'

Gemma's chat template has no system role, so each call is a single user turn, as in the seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aria.domain import (
    MEASUREMENT_BY_KEY,
    MEASUREMENTS,
    format_value,
    keys_by_exceedance,
    percent_of_threshold,
    validate_measurements,
)
from aria.schema import FIELD_ORDER, diagnostic_response_format, seed_response_format

DIAGNOSTIC_TEMPERATURE = 0.1
DIAGNOSTIC_MAX_TOKENS = 256
REPORT_TEMPERATURE = 0.3
REPORT_MAX_TOKENS = 2048

# The diagnostic shows the measurements only: the rule never reads the context (age, pace,
# pain...), and on the tiny model leaving it out measured 25 % fewer tokens and better exact
# match (docs/training.md, "What the answers teach"). The report, written for a person, keeps it.
DIAGNOSTIC_TEMPLATE = (
    "Mesures biomécaniques d'un coureur :\n{measurements}\n"
    "Diagnostic en JSON (pathologie, confiance, justification)."
)
# The report's prompt ends as the diagnostic's does: the table, then a closing line of as many
# tokens (`Diagnostic en ...`, on the tiny tokenizer), and its answer names the pathology
# first, on a line of its own, in the same tokens as the diagnostic's `pathologie` string. The
# table then sits as far from the pathology in both calls, and the choice the diagnostic learns
# is the one the report makes (docs/training.md, "What the answers teach").
REPORT_TEMPLATE = (
    "Rédige en français un rapport pour le coureur et son clinicien : pathologie probable, "
    "constats, ce qui la provoque, conseils. Ne cite que les valeurs mesurées ci-dessous.\n"
    "{context}Mesures biomécaniques d'un coureur :\n{measurements}\n"
    "Diagnostic en français (pathologie, constats, conseils)."
)

_SEXE_FR = {"F": "femme", "M": "homme"}


def render_measurements(measurements: Mapping[str, Any], *, ranked: bool = True) -> str:
    """One line per measurement: `key : value unit (ratio % du seuil)`, the largest ratio first.

    The ratio to the measurement's threshold is what the rule ranks, in one scale for every unit
    (above 100 % the signal fires), the way a gait-lab report shows a value against its norm.
    It is in whole percent (`aria.domain.percent_of_threshold`). The lines come as such a report
    lists its findings, the most deviant first (`aria.domain.keys_by_exceedance`; ties in the
    table's order), so the measurement that decides is read on the first lines, not found by
    comparing seven numbers (docs/training.md, "What the answers teach"). `ranked=False` keeps the
    table's order (the tiny base's pretraining tasks, `tiny.copy_probe`).
    """
    values = validate_measurements(measurements)
    keys = keys_by_exceedance(values) if ranked else [m.key for m in MEASUREMENTS]
    lines = []
    for key in keys:
        unit = MEASUREMENT_BY_KEY[key].unit
        value = format_value(key, values[key])
        ratio = percent_of_threshold(key, values[key])
        lines.append(f"- {key} : {value}{' ' + unit if unit else ''} ({ratio} % du seuil)")
    return "\n".join(lines)


def render_context(measurements: Mapping[str, Any]) -> str:
    """The optional context as one line ending with a newline, or an empty string."""
    parts = []
    if "age" in measurements:
        parts.append(f"{measurements['age']} ans")
    if "sexe" in measurements:
        parts.append(_SEXE_FR.get(str(measurements["sexe"]), str(measurements["sexe"])))
    if "distance_hebdo_km" in measurements:
        parts.append(f"{measurements['distance_hebdo_km']} km/semaine")
    if "vitesse_kmh" in measurements:
        parts.append(f"{measurements['vitesse_kmh']} km/h")
    if "cadence_pas_min" in measurements:
        parts.append(f"cadence {measurements['cadence_pas_min']} pas/min")
    if "localisation_douleur" in measurements:
        parts.append(f"douleur : {measurements['localisation_douleur']}")
    return f"Contexte : {', '.join(parts)}.\n" if parts else ""


def render_prompt(measurements: Mapping[str, Any], template: str = DIAGNOSTIC_TEMPLATE) -> str:
    """Fill a prompt template's `{measurements}` and `{context}` fields from a runner's measurements.

    A template without `{context}` (the diagnostic's) leaves the context out.
    """
    return template.format(
        measurements=render_measurements(measurements), context=render_context(measurements)
    )


def diagnostic_messages(measurements: dict, template: str = DIAGNOSTIC_TEMPLATE) -> list[dict]:
    """OpenAI chat messages of the guided-JSON diagnostic call."""
    return [{"role": "user", "content": render_prompt(measurements, template)}]


def report_messages(measurements: dict, template: str = REPORT_TEMPLATE) -> list[dict]:
    """OpenAI chat messages of the free-text report call."""
    return [{"role": "user", "content": render_prompt(measurements, template)}]


# The two diagnostic bodies of DOMAIN.md: the seed's, sent verbatim by ARIA's middle service (a
# free-string `pathologie`), and the project's stricter schema S (the enum, a bounded reason).
DIAGNOSTIC_BODIES: tuple[str, ...] = ("seed", "project")


def diagnostic_request(
    measurements: dict,
    model: str,
    template: str = DIAGNOSTIC_TEMPLATE,
    body: str = "project",
    order: tuple[str, ...] = FIELD_ORDER,
) -> dict:
    """The full body of the diagnostic call: the seed's parameters with a guided JSON schema.

    `body="seed"` is the seed README's body verbatim (its own schema and field order);
    `body="project"` asks for the project's schema S with its properties in `order`.
    """
    if body == "seed":
        response_format = seed_response_format()
    elif body == "project":
        response_format = diagnostic_response_format(order)
    else:
        raise ValueError(f"body {body!r} is not one of {', '.join(DIAGNOSTIC_BODIES)}")
    return {
        "model": model,
        "messages": diagnostic_messages(measurements, template),
        "temperature": DIAGNOSTIC_TEMPERATURE,
        "max_tokens": DIAGNOSTIC_MAX_TOKENS,
        "response_format": response_format,
    }


def report_request(measurements: dict, model: str, template: str = REPORT_TEMPLATE) -> dict:
    """The full body of the report call: free text, no response_format."""
    return {
        "model": model,
        "messages": report_messages(measurements, template),
        "temperature": REPORT_TEMPERATURE,
        "max_tokens": REPORT_MAX_TOKENS,
    }
