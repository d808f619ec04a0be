"""The label and confidence loss weights (training/label_loss.py): the spans they find, and the
weighted loss through TRL's own trainer, on the tiny model and at MedGemma's 262,208-token
vocabulary (where full-vocabulary logits would not fit a batch: none is built).
"""

from __future__ import annotations

from pathlib import Path

import pytest


def loss_trainer(cls, model, tokenizer, out: Path, **flags):
    """A trainer of `cls` (SFTTrainer or a subclass) on `model`, built to call its compute_loss:
    CPU, fp32, no logging, SFTConfig `flags`; one tiny row as its required training set."""
    from datasets import Dataset
    from trl import SFTConfig

    row = {
        "prompt": [{"role": "user", "content": "Recopie."}],
        "completion": [{"role": "assistant", "content": "Valeurs."}],
    }
    args = SFTConfig(output_dir=str(out), report_to="none", use_cpu=True, bf16=False, **flags)
    return cls(
        model=model, args=args, train_dataset=Dataset.from_list([row]), processing_class=tokenizer
    )


# --- the spans (pure)


def test_label_positions_cover_each_pathologie_string_and_nothing_else():
    from training.label_loss import label_positions

    marker, quotes = [7, 8], frozenset({8, 9})  # 7 = `pathologie`, 8 = `":"`, 9 = `","`
    ids = [1, 7, 8, 40, 41, 9, 5, 8, 42, 9, 7, 8, 43, 9]
    assert label_positions(ids, marker, quotes) == [3, 4, 12]
    assert label_positions([7, 8], marker, quotes) == []  # cut right after the marker
    assert label_positions([5, 8, 40, 9], marker, quotes) == []  # another key's value


# --- the weighted loss through TRL's trainer (engine)


@pytest.mark.engine
def test_label_weighted_loss_weighs_the_label_tokens_only(tiny_base_model: Path, tmp_path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from aria.domain import EXAMPLE_MEASUREMENTS
    from aria.references import reference_diagnostic
    from training.label_loss import label_markers, label_positions, label_weighted_trainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    marker, quotes = label_markers(tokenizer)
    assert tokenizer.decode(marker) == 'pathologie":"'
    answer = reference_diagnostic(EXAMPLE_MEASUREMENTS)
    ids = tokenizer(answer.to_json(), add_special_tokens=False)["input_ids"]
    label_ids = [ids[i] for i in label_positions(ids, marker, quotes)]
    assert tokenizer.decode(label_ids) == answer.pathologie

    model = AutoModelForCausalLM.from_pretrained(tiny_base_model, dtype=torch.float32)
    batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids))}
    batch["labels"] = batch["input_ids"].clone()

    def loss(weight: float) -> float:
        cls = label_weighted_trainer(SFTTrainer, [(marker, quotes, weight)])
        trainer = loss_trainer(cls, model, tokenizer, tmp_path / str(weight))
        with torch.no_grad():
            return float(trainer.compute_loss(trainer.model, dict(batch)))

    with torch.no_grad():
        plain = float(model(**batch).loss)  # transformers' mean cross-entropy
    assert loss(1.0) == pytest.approx(plain, rel=1e-4)
    # Weight w adds (w - 1) x the label tokens' share of the summed loss, nothing else.
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0, :-1]
        per_token = torch.nn.functional.cross_entropy(
            logits, batch["input_ids"][0, 1:], reduction="none"
        )
    on_label = sum(float(per_token[i - 1]) for i in label_positions(ids, marker, quotes))
    assert loss(5.0) == pytest.approx(plain + 4 * on_label / (len(ids) - 1), rel=1e-4)


@pytest.mark.engine
def test_confidence_weight_weighs_the_confidence_tokens_as_the_recipe_says(
    tiny_base_model: Path, tmp_path: Path
):
    """`confidence_loss_weight` (through train_sft's own trainer class) adds (w - 1) x the
    confidence tokens' share of the loss, in the diagnostic's JSON of every field order and in the
    report; with both weights, each span keeps its own weight."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from aria.domain import EXAMPLE_MEASUREMENTS
    from aria.references import reference_diagnostic, reference_report
    from aria.schema import FIELD_ORDERS
    from training.label_loss import (
        CONFIDENCE_KEY,
        label_markers,
        label_positions,
        report_confidence_markers,
    )
    from training.train_sft import sft_trainer_class

    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    assert sft_trainer_class(1.0, tokenizer, 1.0) is SFTTrainer
    marker, quotes = label_markers(tokenizer, CONFIDENCE_KEY)
    label, label_quotes = label_markers(tokenizer)
    report_marker, closing = report_confidence_markers(tokenizer)
    answer = reference_diagnostic(EXAMPLE_MEASUREMENTS)
    for order in FIELD_ORDERS:
        ids = tokenizer(answer.to_json(order), add_special_tokens=False)["input_ids"]
        assert tokenizer.decode([ids[i] for i in label_positions(ids, marker, quotes)]) == (
            answer.confiance
        )
    report = tokenizer(reference_report(EXAMPLE_MEASUREMENTS), add_special_tokens=False)
    found = [
        report["input_ids"][i]
        for i in label_positions(report["input_ids"], *(report_marker, closing))
    ]
    assert tokenizer.decode(found).strip() == answer.confiance

    model = AutoModelForCausalLM.from_pretrained(tiny_base_model, dtype=torch.float32)
    for text, spans in (
        (answer.to_json(), ((marker, quotes), (label, label_quotes))),
        (reference_report(EXAMPLE_MEASUREMENTS), ((report_marker, closing),)),
    ):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids))}
        batch["labels"] = batch["input_ids"].clone()
        with torch.no_grad():
            plain = float(model(**batch).loss)
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0, :-1]
            per_token = torch.nn.functional.cross_entropy(
                logits, batch["input_ids"][0, 1:], reduction="none"
            )
        shares = [
            sum(float(per_token[i - 1]) for i in label_positions(ids, *span)) / (len(ids) - 1)
            for span in spans
        ]
        assert shares[0] > 0

        def loss(label_weight: float, confidence_weight: float, batch=batch) -> float:
            cls = sft_trainer_class(label_weight, tokenizer, confidence_weight)
            out = tmp_path / f"{label_weight}-{confidence_weight}"
            trainer = loss_trainer(cls, model, tokenizer, out)
            with torch.no_grad():
                return float(trainer.compute_loss(trainer.model, dict(batch)))

        assert loss(1.0, 5.0) == pytest.approx(plain + 4 * shares[0], rel=1e-4)
        if len(shares) == 2:  # the diagnostic: the label keeps its own weight beside it
            assert loss(3.0, 5.0) == pytest.approx(plain + 4 * shares[0] + 2 * shares[1], rel=1e-4)


@pytest.mark.engine
def test_report_pathology_is_weighed_in_the_diagnostic_label_tokens(tiny_base_model: Path):
    """The report names the pathology on its own line, so its tokens are the ones the diagnostic's
    `pathologie` string uses, and the label loss finds them in both."""
    import random

    from transformers import AutoTokenizer

    from aria.domain import label
    from aria.population import balanced_plan, sample_measurements
    from aria.references import reference_diagnostic, reference_report
    from training.label_loss import label_markers, label_positions, report_label_markers

    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    marker, quotes = label_markers(tokenizer)
    report_marker, opening = report_label_markers(tokenizer)
    assert tokenizer.decode(report_marker) == "Pathologie probable :\n"
    seen = set()
    rng = random.Random(5)
    for target, slice_name in balanced_plan(120):
        measurements = sample_measurements(rng, target, slice_name)
        pathology = label(measurements)[0]
        report = tokenizer(reference_report(measurements), add_special_tokens=False)["input_ids"]
        in_report = [report[i] for i in label_positions(report, report_marker, opening)]
        answer = reference_diagnostic(measurements).to_json()
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        assert in_report == [ids[i] for i in label_positions(ids, marker, quotes)]
        assert tokenizer.decode(in_report) == pathology
        # The diagnostic's marker is not in a report, nor the report's in a diagnostic.
        assert label_positions(report, marker, quotes) == []
        assert label_positions(ids, report_marker, opening) == []
        seen.add(pathology)
    assert len(seen) == 6
    # Both prompts close with a line of as many tokens after the table (aria.prompts).
    from aria.prompts import DIAGNOSTIC_TEMPLATE, REPORT_TEMPLATE

    closing = [t.rsplit("\n", 1)[1] for t in (DIAGNOSTIC_TEMPLATE, REPORT_TEMPLATE)]
    lengths = {len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in closing}
    assert len(lengths) == 1, closing


def test_label_markers_refuse_a_tokenizer_that_merges_them():
    """A tokenizer whose tokens cross the marker's edges gets a ValueError naming the fix (set
    label_loss_weight to 1), not a silently unweighted label."""
    from training.label_loss import (
        CONFIDENCE_KEY,
        label_markers,
        report_confidence_markers,
        report_label_markers,
    )

    class WholeTextTokenizer:  # one token per text: every marker is merged with its neighbours
        def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
            return {"input_ids": [0], "offset_mapping": [(0, len(text))]}

        def __len__(self):
            return 1

        def convert_ids_to_tokens(self, ids):
            return ["x" for _ in ids]

    for find in (label_markers, report_label_markers):
        with pytest.raises(ValueError, match=r"label_loss_weight .*set it to 1 in the recipe"):
            find(WholeTextTokenizer())
    for find in (lambda t: label_markers(t, CONFIDENCE_KEY), report_confidence_markers):
        with pytest.raises(ValueError, match=r"confidence_loss_weight .*set it to 1 in the recipe"):
            find(WholeTextTokenizer())


@pytest.mark.engine
def test_weighted_loss_at_medgemmas_vocabulary_builds_no_logits(tmp_path: Path):
    """On a small random Gemma 3 with MedGemma's 262,208-token vocabulary and the tiny tokenizer
    (scripts/gpu_check.py's `build_4b`): weight 1 gives TRL's own loss, weight 5 adds 4 x the
    label tokens' share of it, the backward runs, and the LM head never projects a whole
    sequence (TRL's fused head scores the tokens in tiles)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from aria.domain import EXAMPLE_MEASUREMENTS
    from aria.references import reference_diagnostic
    from scripts.gpu_check import SMALL_DIMS, build_4b
    from training.label_loss import label_markers, label_positions, label_weighted_trainer

    folder = build_4b(str(tmp_path / "medgemma-vocabulary"), SMALL_DIMS)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert model.config.vocab_size == 262_208
    marker, quotes = label_markers(tokenizer)
    ids = tokenizer(reference_diagnostic(EXAMPLE_MEASUREMENTS).to_json(), add_special_tokens=False)
    ids = ids["input_ids"]
    positions = label_positions(ids, marker, quotes)
    assert positions
    batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids))}
    batch["labels"] = batch["input_ids"].clone()

    def trainer(weight: float | None):
        cls = (
            SFTTrainer
            if weight is None
            else label_weighted_trainer(SFTTrainer, [(marker, quotes, weight)])
        )
        return loss_trainer(cls, model, tokenizer, tmp_path / f"trainer-{weight}")

    trainers = {w: trainer(w) for w in (None, 1.0, 5.0)}
    projected = []  # shapes the LM head module is called on: a full projection would show here
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, args, out: projected.append(tuple(out.shape))
    )
    with torch.no_grad():
        plain = float(trainers[None].compute_loss(model, dict(batch)))
        at_one = float(trainers[1.0].compute_loss(model, dict(batch)))
    at_five = trainers[5.0].compute_loss(model, dict(batch))
    at_five.backward()
    hook.remove()
    assert projected == []
    assert at_one == pytest.approx(plain, rel=1e-6)
    grad = model.get_input_embeddings().weight.grad
    assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
    with torch.no_grad():  # the reference, once, from the full logits of this one short row
        logits = model(input_ids=batch["input_ids"]).logits[0, :-1]
        per_token = torch.nn.functional.cross_entropy(
            logits, batch["input_ids"][0, 1:], reduction="none"
        )
    on_label = sum(float(per_token[i - 1]) for i in positions)
    assert plain == pytest.approx(float(per_token.mean()), rel=1e-4)
    assert float(at_five.detach()) == pytest.approx(plain + 4 * on_label / (len(ids) - 1), rel=1e-4)


@pytest.mark.engine
def test_a_loss_that_sums_no_log_probabilities_is_refused(tiny_base_model: Path, tmp_path: Path):
    """DFT and label smoothing do not sum TRL's per-token log-probabilities: weighing them would
    be silently wrong, so the weighted trainer refuses them and names the fix."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from training.label_loss import label_markers, label_weighted_trainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_base_model, dtype=torch.float32)
    cls = label_weighted_trainer(SFTTrainer, [(*label_markers(tokenizer), 5.0)])
    for flags in ({"loss_type": "dft"}, {"label_smoothing_factor": 0.1}):
        with pytest.raises(ValueError, match=r"set both weights to 1 in the recipe"):
            loss_trainer(cls, model, tokenizer, tmp_path / "out", **flags)
