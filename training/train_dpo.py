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

from aria.files import atomic_write_json
from training.config import DPOScriptArguments, lora_config, parse_dpo_args
from training.train_sft import (
    adapter_in_compute_dtype,
    complete_merged_folder,
    last_checkpoint,
    load_quantized,
    load_splits,
    print_summary,
    run_fingerprint,
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


def main(script_args: DPOScriptArguments, training_args, model_args) -> dict:
    """Train DPO, merge (parity checked), quick-eval and publish; returns the metrics."""
    from transformers import AutoTokenizer
    from trl import DPOTrainer

    from training.curves import METRICS_FILE
    from training.merge import merge_adapter, parity_probes
    from training.preflight import refuse_when_vllm_holds_gpu, require_dataset, require_model

    sft_model = require_model(model_args.model_name_or_path, "aria-ft-sft")
    dpo_path = require_dataset(Path(script_args.dpo_path))
    refuse_when_vllm_holds_gpu()
    output_dir = Path(training_args.output_dir)
    merged_dir = Path(script_args.merged_dir)

    started = time.perf_counter()
    train_set, eval_set = load_splits(
        dpo_path, dpo_record, script_args.eval_size, training_args.seed
    )
    if eval_set is None:
        training_args.eval_strategy = "no"
    fingerprint = run_fingerprint(dpo_path, sft_model, training_args, model_args)
    with training_args.main_process_first(local=False, desc="the checkpoint folder"):
        resume_from = last_checkpoint(output_dir, script_args.resume, fingerprint)
    tokenizer = AutoTokenizer.from_pretrained(sft_model)
    model = load_quantized(sft_model, model_args, None)
    trainer = DPOTrainer(
        model=model,
        ref_model=None,  # with a peft_config: the reference is this model with the adapter off
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=lora_config(model_args),
    )
    adapter_in_compute_dtype(trainer.model, model_args)
    if resume_from:
        print(f"resuming from {resume_from}")
    train_result = trainer.train(resume_from_checkpoint=resume_from)
    eval_metrics = trainer.evaluate() if eval_set is not None else {}
    trainer.save_model(str(output_dir))
    if not trainer.is_world_process_zero():
        return {"stage": "aria-ft-dpo", "rank": training_args.process_index}  # rank 0 merges
    log_history = trainer.state.log_history
    atomic_write_json(output_dir / "log_history.json", log_history)
    train_seconds = time.perf_counter() - started
    del trainer, model

    probes = parity_probes(eval_set if eval_set is not None else train_set)
    metrics = {
        "stage": "aria-ft-dpo",
        "base": sft_model,
        "global_step": log_history[-1].get("step") if log_history else 0,
        "train_loss": train_result.metrics.get("train_loss"),
        "eval_loss": eval_metrics.get("eval_loss"),
        "eval_reward_accuracy": eval_metrics.get("eval_rewards/accuracies"),
        "beta": training_args.beta,
        "train_examples": len(train_set),
        "resumed_from": resume_from,
        "train_seconds": round(train_seconds, 1),
    }

    def finish(tmp: Path, parity: dict) -> None:
        complete_merged_folder(
            tmp, parity, metrics, log_history, output_dir, script_args, plot_title(model_args)
        )

    merge_adapter(sft_model, output_dir, merged_dir, probes, script_args.parity_tolerance, finish)
    print_summary(metrics, merged_dir / METRICS_FILE)
    return metrics


if __name__ == "__main__":
    main(*parse_dpo_args())
