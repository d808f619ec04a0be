"""SFT (QLoRA NF4) of the profile's base on its SFT set, then a bf16 merge as aria-ft-sft.

    python -m training.train_sft                     # make train-sft (recipe of ARIA_PROFILE)
    python -m training.train_sft --config training/recipes/tiny/sft.yaml --max_steps 6

The base is loaded in 4-bit NF4 (double quantization), prepared for k-bit training, and a LoRA
adapter is trained on every linear layer of the language model with the loss on the completion
only. The set is data/training/<sft_file> (sft.jsonl; the tiny recipe takes sft_extended.jsonl)
and a held-out slice of it is evaluated during training; checkpoints go to
data/checkpoints/<profile>/sft and a re-run resumes from the last one. The adapter is then merged
into the bf16 base (parity checked) and published atomically to data/models/<profile>/aria-ft-sft
with training_metrics.json, loss.png and the TensorBoard runs; a greedy quick eval on eval.jsonl
adds its exact match to the metrics.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from aria.logs import setup_logging
from aria.settings import Settings, get_settings
from training.config import SFTScriptArguments, parse_sft_args
from training.stages import (
    load_for_training,
    other_rank_result,
    publish_merged,
    resume_point,
    run_fingerprint,
    stage_metrics,
    train_and_free,
    training_base,
    training_splits,
)

SFT_FIELDS = ("prompt", "completion")


def sft_record(record: dict) -> dict:
    """Keep only the conversational prompt and completion; the extra fields are not trained on."""
    for key in SFT_FIELDS:
        messages = record.get(key)
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"'{key}' must be a non-empty list of chat messages")
    for message in record["prompt"] + record["completion"]:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ValueError("every chat message needs a 'content' string")
    if record["completion"][-1].get("role") != "assistant":
        raise ValueError("the completion must end with an assistant message")
    return {key: record[key] for key in SFT_FIELDS}


def is_report(row: dict) -> bool:
    """A free-text answer: the completion is not a JSON object (a diagnostic is)."""
    return not row["completion"][-1]["content"].lstrip().startswith("{")


def batches_by_kind(kinds: list[bool], batch_size: int, seed: int) -> list[int]:
    """Row indices in an order whose consecutive `batch_size` rows share one kind.

    Each kind is shuffled and cut into batches, and the full batches are shuffled together
    (seeded); the one partial batch of each kind goes last. Read sequentially, the order gives
    random batches without padding short answers to the length of a long one.
    """
    rng = random.Random(seed)
    full, partial = [], []
    for kind in sorted(set(kinds)):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        rng.shuffle(rows)
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            (full if len(batch) == batch_size else partial).append(batch)
    rng.shuffle(full)
    return [i for batch in full + partial for i in batch]


def ordered_by_kind(train_set, training_args):
    """The training set in `batches_by_kind` order, read sequentially by the Trainer."""
    kinds = [is_report(row) for row in train_set]
    order = batches_by_kind(kinds, training_args.per_device_train_batch_size, training_args.seed)
    training_args.train_sampling_strategy = "sequential"
    return train_set.select(order)


def require_sft_set(path: Path) -> Path:
    """The SFT file, or SystemExit naming the fix (imported datasets have no extended set)."""
    from training.preflight import require_dataset

    if not path.exists() and path.name == "sft_extended.jsonl":
        raise SystemExit(
            f"{path} does not exist: run `make datasets` to generate it, or train on your "
            'sft.jsonl with make train-sft ARGS="--sft_file sft.jsonl"'
        )
    return require_dataset(path)


def sft_trainer_class(label_loss_weight: float, tokenizer, confidence_loss_weight: float = 1.0):
    """TRL's SFTTrainer, or its subclass that weighs the pathology's tokens and the confidence's
    (either weight != 1), in the diagnostic's JSON and in the report alike."""
    from trl import SFTTrainer

    if label_loss_weight == 1.0 and confidence_loss_weight == 1.0:
        return SFTTrainer
    from training.label_loss import (
        CONFIDENCE_KEY,
        label_markers,
        label_weighted_trainer,
        report_confidence_markers,
        report_label_markers,
    )

    spans = []
    if label_loss_weight != 1.0:
        spans += [(*label_markers(tokenizer), label_loss_weight)]
        spans += [(*report_label_markers(tokenizer), label_loss_weight)]
    if confidence_loss_weight != 1.0:
        spans += [(*label_markers(tokenizer, CONFIDENCE_KEY), confidence_loss_weight)]
        spans += [(*report_confidence_markers(tokenizer), confidence_loss_weight)]
    return label_weighted_trainer(SFTTrainer, spans)


def main(script_args: SFTScriptArguments, training_args, model_args, settings: Settings) -> dict:
    """Train, merge (parity checked), quick-eval and publish; returns the metrics. `settings` are
    the ones the arguments were parsed with (the profile, HF_TOKEN, the running servers)."""
    from training.preflight import refuse_when_vllm_holds_gpu

    base = training_base(model_args.model_name_or_path, "base", settings, model_args)
    sft_path = require_sft_set(Path(script_args.sft_path))
    refuse_when_vllm_holds_gpu(settings)
    output_dir = Path(training_args.output_dir)
    started = time.perf_counter()

    # Data: the SFT set less a seeded held-out slice, optionally in batches of one kind.
    train_set, eval_set = training_splits(
        sft_path, sft_record, script_args.eval_size, training_args
    )
    if script_args.batch_by_kind:
        train_set = ordered_by_kind(train_set, training_args)
    # Resume only checkpoints of the same data, base and recipe.
    fingerprint = run_fingerprint(
        sft_path,
        base,
        training_args,
        model_args,
        label_loss_weight=script_args.label_loss_weight,
        confidence_loss_weight=script_args.confidence_loss_weight,
    )
    resume_from = resume_point(output_dir, script_args.resume, fingerprint, training_args)

    # Model and trainer: the 4-bit base with a fresh LoRA adapter, the loss on the completion.
    label_weight, confidence_weight = (
        script_args.label_loss_weight,
        script_args.confidence_loss_weight,
    )
    run = train_and_free(
        lambda tokenizer: sft_trainer_class(label_weight, tokenizer, confidence_weight),
        load_for_training(base, model_args, settings),
        (train_set, eval_set),
        (training_args, model_args),
        resume_from,
        started,
    )
    if run is None:
        return other_rank_result("aria-ft-sft", training_args)

    # Merge into the bf16 base, complete the folder and publish it as aria-ft-sft (rank 0).
    metrics = stage_metrics("aria-ft-sft", base, run, len(train_set))
    splits = (train_set, eval_set)
    title = "ARIA SFT (QLoRA NF4)"
    return publish_merged(
        base, output_dir, splits, metrics, run, script_args, title, settings, model_args
    )


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    main(*parse_sft_args(settings=settings), settings)
