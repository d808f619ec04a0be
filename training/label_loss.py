"""More weight on the pathology's tokens in the SFT loss (the recipe's `label_loss_weight`).

In the seed's field order (DOMAIN.md) the answer starts with the pathology: the model picks it in
one forward pass, with no reasoning before it. That choice is two or three tokens of a ~35-token
answer whose other tokens (keys, punctuation, the justification's wording, the threshold) are
learned early, so the label is one decision among several in the loss. `label_loss_weight` w
multiplies the loss of the tokens inside the `pathologie` string by w; every other completion token
keeps 1, and the sum is divided by the number of completion tokens, as TRL's own loss is. The
weights apply to the per-token log-probabilities of TRL's fused LM head, so no full-vocabulary
logits are built and the knob is safe at any vocabulary: a general option, tested at MedGemma's
262,208 tokens (tests/test_training.py) as on the tiny model's 2,048. w = 1 leaves TRL's trainer
itself in place.

The label's tokens are found in the token ids: after the tokens that spell the key and its opening
quote (`pathologie":"`), up to the first token holding a `"`. `label_markers` reads both from the
tokenizer, and refuses a tokenizer on which the marker is not one stable token sequence. The report
names the pathology first too, on the line after `Pathologie probable :` (`aria.references`), in
the same tokens: `report_label_markers` finds those, up to the first token holding a `(`, so that
the report's choice weighs as the diagnostic's does.

`confidence_loss_weight` does the same for the confidence band, the second decision of the seed's
order: the tokens inside the `confiance` string, and in the report those after `(confiance`, up to
the first token holding a `)`.
"""

from __future__ import annotations

from collections.abc import Sequence

from aria.domain import EXAMPLE_MEASUREMENTS
from aria.references import (
    REPORT_CONFIDENCE_LEAD,
    REPORT_PATHOLOGY_LEAD,
    reference_diagnostic,
    reference_report,
)
from aria.schema import FIELD_ORDERS

LABEL_KEY = "pathologie"
CONFIDENCE_KEY = "confiance"
# The recipe knob that weighs each key's tokens, named in the errors.
KNOB_BY_KEY = {LABEL_KEY: "label_loss_weight", CONFIDENCE_KEY: "confidence_loss_weight"}


def _span_ids(tokenizer, text: str, start: int, end: int) -> list[int] | None:
    """The ids of the tokens that spell exactly text[start:end], or None when a token crosses
    either edge (the tokenizer merges the span with its neighbours)."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, spans = encoded["input_ids"], encoded["offset_mapping"]
    inside = [i for i, (a, b) in enumerate(spans) if a >= start and b <= end]
    if not inside or spans[inside[0]][0] != start or spans[inside[-1]][1] != end:
        return None
    return [ids[i] for i in inside]


def _ids_holding(tokenizer, char: str) -> frozenset[int]:
    """The ids of every token whose text holds `char`."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return frozenset(i for i, token in enumerate(vocab) if token and char in token)


def label_markers(tokenizer, key: str = LABEL_KEY) -> tuple[list[int], frozenset[int]]:
    """(ids spelling `<key>":"` just before the key's value, ids of every token holding a `"`);
    `key` is the pathology's (default) or the confidence's.

    Raises ValueError, naming the fix, when the tokenizer merges the marker with what precedes or
    follows it, or spells it differently in another field order.
    """
    answer = reference_diagnostic(EXAMPLE_MEASUREMENTS)
    knob = KNOB_BY_KEY[key]
    markers = set()
    for order in FIELD_ORDERS:
        text = answer.to_json(order)
        key_start = text.index(f'"{key}":"') + 1
        found = _span_ids(tokenizer, text, key_start, key_start + len(f'{key}":"'))
        if found is None:
            raise ValueError(
                f"the tokenizer merges '{key}\":\"' with its neighbours in {text!r}: "
                f"{knob} cannot find the tokens of '{key}'; set it to 1 in the recipe"
            )
        markers.add(tuple(found))
    if len(markers) != 1:
        raise ValueError(
            f"the tokenizer spells '{key}\":\"' differently across field orders {markers}: "
            f"{knob} cannot find the tokens of '{key}'; set it to 1 in the recipe"
        )
    return list(markers.pop()), _ids_holding(tokenizer, '"')


def report_label_markers(tokenizer) -> tuple[list[int], frozenset[int]]:
    """(ids spelling `Pathologie probable :` and the newline before the report's pathology, ids of
    every token holding a `(`, which closes it). Raises ValueError, naming the fix, when the
    tokenizer merges the lead with the pathology."""
    text = reference_report(EXAMPLE_MEASUREMENTS)
    start = text.index(REPORT_PATHOLOGY_LEAD)
    found = _span_ids(tokenizer, text, start, start + len(REPORT_PATHOLOGY_LEAD) + 1)
    if found is None:
        raise ValueError(
            f"the tokenizer merges '{REPORT_PATHOLOGY_LEAD}' and its newline with their neighbours "
            f"in {text[:60]!r}: label_loss_weight cannot find the report's pathology; set it to 1 "
            "in the recipe"
        )
    return found, _ids_holding(tokenizer, "(")


def report_confidence_markers(tokenizer) -> tuple[list[int], frozenset[int]]:
    """(ids spelling ` (confiance` before the report's confidence band, ids of every token holding
    a `)`, which closes it). Raises ValueError, naming the fix, when the tokenizer merges the lead
    with its neighbours."""
    text = reference_report(EXAMPLE_MEASUREMENTS)
    lead = f" {REPORT_CONFIDENCE_LEAD}"  # after the pathology's name, with the space before it
    start = text.index(lead)
    found = _span_ids(tokenizer, text, start, start + len(lead))
    if found is None:
        raise ValueError(
            f"the tokenizer merges '{REPORT_CONFIDENCE_LEAD}' with its neighbours in "
            f"{text[:60]!r}: confidence_loss_weight cannot find the report's confidence; set it "
            "to 1 in the recipe"
        )
    return found, _ids_holding(tokenizer, ")")


def label_positions(ids: Sequence[int], marker: Sequence[int], quotes: frozenset[int]) -> list[int]:
    """Positions of the tokens inside every `pathologie` string of one token sequence."""
    positions: list[int] = []
    n = len(marker)
    i = 0
    while i + n <= len(ids):
        if list(ids[i : i + n]) == list(marker):
            j = i + n
            while j < len(ids) and ids[j] not in quotes:
                positions.append(j)
                j += 1
            i = j
        else:
            i += 1
    return positions


def span_weights(input_ids, spans: Sequence[tuple[Sequence[int], frozenset[int], float]]):
    """(batch, seq - 1) weights of the next-token log-probabilities of `input_ids`: column j
    predicts token j + 1, which weighs its span's weight when it lies inside one, else 1."""
    import torch

    weights = torch.ones(input_ids.shape[0], input_ids.shape[1] - 1, device=input_ids.device)
    for row, ids in enumerate(input_ids.tolist()):
        for marker, closers, weight in spans:
            for pos in label_positions(ids, marker, closers):
                if pos >= 1:  # the log-probability at pos - 1 predicts the token at pos
                    weights[row, pos - 1] = weight
    return weights


def label_weighted_trainer(
    base_class, spans: Sequence[tuple[Sequence[int], frozenset[int], float]]
):
    """A subclass of TRL's `base_class` (SFTTrainer) whose loss weighs the tokens of each span:
    the mean over completion tokens of weight x cross-entropy, where `spans` holds (marker, closing
    ids, weight) triples (`label_positions` finds each span's tokens) and other tokens weigh 1.

    It keeps TRL's loss path whole (fused LM head, token count, metrics) and multiplies the
    per-token log-probabilities that path's forward returns by the weights, through a forward hook
    held for one `compute_loss` call; the logits are never built. A loss that does not sum those
    log-probabilities (`loss_type` other than nll, label smoothing, a `compute_loss_func`) is
    refused."""
    spans = tuple(spans)

    class LabelWeightedSFTTrainer(base_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if (
                self.args.loss_type != "nll"
                or self.label_smoother is not None
                or self.compute_loss_func is not None
            ):
                raise ValueError(
                    "label_loss_weight and confidence_loss_weight weigh the nll loss's per-token "
                    f"log-probabilities (loss_type {self.args.loss_type!r}, label smoothing "
                    f"{self.args.label_smoothing_factor}): set both weights to 1 in the recipe, or "
                    "loss_type to nll and label_smoothing_factor to 0"
                )

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = span_weights(inputs["input_ids"], spans)
            weighed = []

            def weigh(module, args, outputs):
                log_probs = getattr(outputs, "log_probs", None)
                if log_probs is None:  # a forward for the logits (return_outputs): no loss here
                    return outputs
                if log_probs.shape != weights.shape:
                    raise ValueError(
                        f"per-token log-probabilities of shape {tuple(log_probs.shape)} for input "
                        f"ids of shape {tuple(inputs['input_ids'].shape)}: the label weights "
                        "follow the input ids (no prompt tuning, no context parallelism)"
                    )
                outputs.log_probs = log_probs * weights.to(log_probs.device, log_probs.dtype)
                weighed.append(True)
                return outputs

            handle = model.register_forward_hook(weigh)
            try:
                loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                handle.remove()
            if not weighed:  # never a silently unweighted loss
                raise RuntimeError(
                    f"{base_class.__name__}.compute_loss ran no forward that returns per-token "
                    "log-probabilities (TRL's fused LM head): the label weights cannot apply; "
                    "set label_loss_weight and confidence_loss_weight to 1 in the recipe"
                )
            return loss

    return LabelWeightedSFTTrainer
