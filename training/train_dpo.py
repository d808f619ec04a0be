"""DPO (QLoRA NF4) on top of the merged aria-ft-sft, then a bf16 merge as aria-ft-dpo.

    python -m training.train_dpo                     # make train-dpo (recipe of ARIA_PROFILE)
    python -m training.train_dpo --config training/recipes/tiny/dpo.yaml --max_steps 4

aria-ft-sft is loaded in 4-bit NF4 and a fresh LoRA adapter is trained with TRL's DPOTrainer on
dpo.jsonl (prompt, chosen, rejected); the reference model is the same network with the adapter
disabled, so only one copy of the weights is in memory. Checkpoints go to
data/checkpoints/<profile>/dpo and a re-run resumes from the last one. The adapter is merged into
the bf16 aria-ft-sft (parity checked) and published atomically to data/models/<profile>/aria-ft-dpo,
the production model, with training_metrics.json, loss.png, the TensorBoard runs and the exact
match of a greedy quick eval.
"""

from __future__ import annotations

import time
from pathlib import Path

from aria.logs import setup_logging
from aria.settings import Settings, get_settings
from training.config import DPOScriptArguments, parse_dpo_args
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

DPO_FIELDS = ("prompt", "chosen", "rejected")


def dpo_record(record: dict) -> dict:
    """Keep only the conversational prompt, chosen and rejected answers."""
    for key in DPO_FIELDS:
        messages = record.get(key)
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"'{key}' must be a non-empty list of chat messages")
    if record["chosen"] == record["rejected"]:
        raise ValueError("'chosen' and 'rejected' are identical")
    return {key: record[key] for key in DPO_FIELDS}


def plot_title(model_args) -> str:
    """The loss plot's title: the method and the adapter rank."""
    return f"ARIA DPO (QLoRA NF4, r={model_args.lora_r})"


def main(script_args: DPOScriptArguments, training_args, model_args, settings: Settings) -> dict:
    """Train DPO, merge (parity checked), quick-eval and publish; returns the metrics. `settings`
    are the ones the arguments were parsed with (the profile, the running servers)."""
    from trl import DPOTrainer

    from training.preflight import refuse_when_vllm_holds_gpu, require_dataset

    sft_model = training_base(model_args.model_name_or_path, "aria-ft-sft", settings, model_args)
    dpo_path = require_dataset(Path(script_args.dpo_path))
    refuse_when_vllm_holds_gpu(settings)
    output_dir = Path(training_args.output_dir)
    started = time.perf_counter()

    # Data: the DPO triplets less a seeded held-out slice.
    train_set, eval_set = training_splits(
        dpo_path, dpo_record, script_args.eval_size, training_args
    )
    # Resume only checkpoints of the same data, SFT model and recipe.
    fingerprint = run_fingerprint(dpo_path, sft_model, training_args, model_args)
    resume_from = resume_point(output_dir, script_args.resume, fingerprint, training_args)

    # Model and trainer: aria-ft-sft in 4 bits with a fresh LoRA adapter.
    run = train_and_free(
        lambda tokenizer: DPOTrainer,
        load_for_training(sft_model, model_args, settings),
        (train_set, eval_set),
        (training_args, model_args),
        resume_from,
        started,
        ref_model=None,  # with a peft_config: the reference is this model with the adapter off
    )
    if run is None:
        return other_rank_result("aria-ft-dpo", training_args)

    # Merge into the bf16 aria-ft-sft, complete the folder and publish it as aria-ft-dpo (rank 0).
    metrics = stage_metrics(
        "aria-ft-dpo",
        sft_model,
        run,
        len(train_set),
        eval_reward_accuracy=run.eval_metrics.get("eval_rewards/accuracies"),
        beta=training_args.beta,
    )
    splits, title = (train_set, eval_set), plot_title(model_args)
    return publish_merged(
        sft_model, output_dir, splits, metrics, run, script_args, title, settings, model_args
    )


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    main(*parse_dpo_args(settings=settings), settings)
