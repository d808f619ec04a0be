"""Reference answers derived from the rule: what a perfect model says for a profile.

Datasets teach these texts and the benchmark scores against them. The justification cites only the
deciding measured value(s) and their threshold(s), in the ASCII alphabet the schema allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aria.domain import deciding_evidence, fired_rules, label
from aria.schema import Diagnostic


def reference_justification(profile: Mapping[str, Any], pathology: str | None = None) -> str:
    """Cite each signal of `pathology` (default: the labelled one) against its threshold."""
    pathology = pathology or label(dict(profile))[0]
    clauses = [
        f"{key} {value} {'>' if float(value) > float(threshold) else '<='} {threshold}"
        for key, value, threshold in deciding_evidence(profile, pathology)
    ]
    text = " et ".join(clauses)
    fired = fired_rules(profile)
    if not fired:
        text += " ; aucun seuil franchi"
    elif len(fired) > 1:
        text += " ; autres signaux presents"
    return text


def reference_diagnostic(profile: Mapping[str, Any]) -> Diagnostic:
    """The diagnostic a perfect model returns: the rule's label and confidence, and its evidence."""
    pathology, confiance = label(dict(profile))
    return Diagnostic(
        pathologie=pathology,
        confiance=confiance,
        justification=reference_justification(profile, pathology),
    )
