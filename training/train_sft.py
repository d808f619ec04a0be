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

import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from aria.files import DataError, atomic_write_json, read_jsonl
from training.config import (
    SFTScriptArguments,
    compute_dtype,
    lora_config,
    parse_sft_args,
    quantization_config,
)

SFT_FIELDS = ("prompt", "completion")
RUN_FINGERPRINT = "aria_run.json"  # what the checkpoints in output_dir were trained on


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


def load_splits(path: Path, parse: Callable[[dict], dict], eval_size: int, seed: int):
    """(train, eval) datasets of a JSONL file whose lines `parse` validates and trims, with a
    seeded held-out slice of `eval_size` records for evaluation (None when eval_size <= 0)."""
    from datasets import Dataset

    records = read_jsonl(path, parse)
    if len(records) <= eval_size:
        raise DataError(f"{path}: {len(records)} records, fewer than eval_size={eval_size} + 1")
    dataset = Dataset.from_list(records)
    if eval_size <= 0:
        return dataset, None
    split = dataset.train_test_split(test_size=eval_size, seed=seed)
    return split["train"], split["test"]


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


def run_fingerprint(data_path: Path, base: str, training_args, model_args) -> dict:
    """What a checkpoint must match to be resumed: the data, the base and the recipe's knobs."""
    knobs = (
        "learning_rate",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "seed",
        "train_sampling_strategy",
    )
    return {
        "data_sha256": hashlib.sha256(Path(data_path).read_bytes()).hexdigest()[:16],
        "base": str(base),
        "base_files": model_files_signature(base),
        "lora_r": model_args.lora_r,
        **{k: getattr(training_args, k) for k in knobs},
    }


def model_files_signature(name_or_path: str) -> str:
    """A digest of a local model's config and weight files (a rebuilt tiny base changes it)."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return "hub"
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.json")) + sorted(folder.glob("*.safetensors")):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        if path.suffix == ".json":
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def last_checkpoint(output_dir: Path, resume: bool, fingerprint: dict) -> str | None:
    """The checkpoint to resume from, or None (a fresh start clears the old run).

    A run resumes only when its data, base and recipe match `fingerprint`; `resume=False` or a
    mismatch (new datasets, another recipe) starts over. max_steps/epochs may grow on resume.
    """
    from transformers.trainer_utils import get_last_checkpoint

    stamp = output_dir / RUN_FINGERPRINT
    previous = json.loads(stamp.read_text()) if stamp.exists() else None
    checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.exists() else None
    if checkpoint and resume and previous == fingerprint:
        return checkpoint
    if checkpoint is None and previous == fingerprint:
        return None  # a fresh start already prepared (by rank 0, when several processes train)
    if checkpoint and resume:
        print(f"not resuming from {checkpoint}: the data, base or recipe changed; starting over")
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True)
    atomic_write_json(stamp, fingerprint)
    return None


def load_quantized(name_or_path: str, model_args, token: str | None):
    """The base in 4 bits (the recipe's quant type), prepared for k-bit training.

    Under several processes (training/distributed.py): DDP puts it on each rank's own GPU;
    FSDP and ZeRO-3 get it with the quant storage in the compute dtype and unprepared, to shard.
    """
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from training.distributed import rank_device_map, sharded_training
    from training.merge import is_multimodal

    dtype = compute_dtype(model_args)
    sharded = sharded_training()
    auto = AutoModelForImageTextToText if is_multimodal(name_or_path) else AutoModelForCausalLM
    model = auto.from_pretrained(
        name_or_path,
        quantization_config=quantization_config(model_args, dtype, dtype if sharded else None),
        dtype=dtype,
        attn_implementation=model_args.attn_implementation or "eager",
        token=token,
        device_map=rank_device_map(torch.cuda.is_available()),
    )
    if sharded:
        return model
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def adapter_in_compute_dtype(model, model_args) -> None:
    """Keep the LoRA weights in the recipe's 4-bit compute dtype when that is float32.

    TRL's trainers cast the trainable weights of a quantized model to bf16 (the QLoRA paper's
    choice, right on a GPU). On a CPU without native bf16 (AVX2 only) every LoRA matmul is then
    emulated: measured 3.43 s per tiny SFT step against 0.89 s in fp32. A bf16 recipe (medgemma)
    keeps TRL's cast.
    """
    import torch

    from training.config import compute_dtype

    if compute_dtype(model_args) != torch.float32:
        return
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def main(script_args: SFTScriptArguments, training_args, model_args) -> dict:
    """Train, merge (parity checked), quick-eval and publish; returns the metrics."""
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    from training.curves import METRICS_FILE
    from training.merge import merge_adapter, parity_probes
    from training.preflight import (
        hub_token,
        refuse_when_vllm_holds_gpu,
        require_dataset,
        require_model,
    )

    base = require_model(model_args.model_name_or_path, "base")
    sft_path = Path(script_args.sft_path)
    if not sft_path.exists() and sft_path.name == "sft_extended.jsonl":
        # Imported datasets (make copy-datasets) have no extended set: say how to train without it.
        raise SystemExit(
            f"{sft_path} does not exist: run `make datasets` to generate it, or train on your "
            'sft.jsonl with make train-sft ARGS="--sft_file sft.jsonl"'
        )
    sft_path = require_dataset(sft_path)
    refuse_when_vllm_holds_gpu()
    token = hub_token()
    output_dir = Path(training_args.output_dir)
    merged_dir = Path(script_args.merged_dir)

    started = time.perf_counter()
    train_set, eval_set = load_splits(
        sft_path, sft_record, script_args.eval_size, training_args.seed
    )
    if eval_set is None:
        training_args.eval_strategy = "no"
    if script_args.batch_by_kind:
        kinds = [is_report(row) for row in train_set]
        order = batches_by_kind(
            kinds, training_args.per_device_train_batch_size, training_args.seed
        )
        train_set = train_set.select(order)
        training_args.train_sampling_strategy = "sequential"
    fingerprint = run_fingerprint(sft_path, base, training_args, model_args)
    fingerprint["label_loss_weight"] = script_args.label_loss_weight
    with training_args.main_process_first(local=False, desc="the checkpoint folder"):
        resume_from = last_checkpoint(output_dir, script_args.resume, fingerprint)
    tokenizer = AutoTokenizer.from_pretrained(base, token=token)
    model = load_quantized(base, model_args, token)
    trainer_class = SFTTrainer
    if script_args.label_loss_weight != 1.0:
        from training.label_loss import label_markers, label_weighted_trainer

        marker, quotes = label_markers(tokenizer)
        trainer_class = label_weighted_trainer(
            SFTTrainer, script_args.label_loss_weight, marker, quotes
        )
    trainer = trainer_class(
        model=model,
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
    trainer.save_model(str(output_dir))  # the final adapter, merged below
    if not trainer.is_world_process_zero():
        return {"stage": "aria-ft-sft", "rank": training_args.process_index}  # rank 0 merges
    log_history = trainer.state.log_history
    atomic_write_json(output_dir / "log_history.json", log_history)
    train_seconds = time.perf_counter() - started
    del trainer, model

    probes = parity_probes(eval_set if eval_set is not None else train_set)
    metrics = {
        "stage": "aria-ft-sft",
        "base": base,
        "global_step": log_history[-1].get("step") if log_history else 0,
        "train_loss": train_result.metrics.get("train_loss"),
        "eval_loss": eval_metrics.get("eval_loss"),
        "train_examples": len(train_set),
        "resumed_from": resume_from,
        "train_seconds": round(train_seconds, 1),
    }

    def finish(tmp: Path, parity: dict) -> None:
        complete_merged_folder(
            tmp, parity, metrics, log_history, output_dir, script_args, "ARIA SFT (QLoRA NF4)"
        )

    merge_adapter(base, output_dir, merged_dir, probes, script_args.parity_tolerance, finish, token)
    print_summary(metrics, merged_dir / METRICS_FILE)
    return metrics


def complete_merged_folder(
    tmp: Path,
    parity: dict,
    metrics: dict,
    log_history: list[dict],
    output_dir: Path,
    script_args,
    title: str,
) -> None:
    """Fill a merged model's folder before it is published (SFT and DPO alike).

    Adds the parity result and, unless `quick_eval_size` is 0, the greedy quick eval to `metrics`;
    copies the TensorBoard runs; writes training_metrics.json and loss.png.
    """
    from training.curves import write_training_report
    from training.quick_eval import quick_eval

    metrics["merge_parity"] = parity
    if script_args.quick_eval_size != 0:  # -1: the whole eval set
        metrics["quick_eval"] = quick_eval(
            tmp, Path(script_args.eval_path), limit=max(script_args.quick_eval_size, 0)
        )
        metrics["exact_match"] = metrics["quick_eval"]["exact_match"]
    runs = output_dir / "runs"
    if runs.exists():
        shutil.copytree(runs, tmp / "runs")
    write_training_report(log_history, tmp, metrics, title)


def print_summary(metrics: dict, metrics_path: Path) -> None:
    """One screen: where the model is, losses, parity, exact match, and the JSON line."""
    parity = metrics.get("merge_parity", {})
    quick = metrics.get("quick_eval", {})
    print(f"\n{metrics['stage']} published: {metrics_path.parent}")
    print(f"  steps {metrics['global_step']}  train loss {metrics['train_loss']}")
    print(f"  eval loss {metrics['eval_loss']}  train time {metrics['train_seconds']} s")
    print(
        f"  merge parity: greedy token agreement {parity.get('greedy_token_agreement')}, "
        f"decisive flips {parity.get('decisive_flips')}, "
        f"max |logit diff| {parity.get('max_abs_logit_diff')} = {parity.get('relative_logit_diff')} "
        f"of the logits' scale (tolerance {parity.get('tolerance')})"
    )
    if quick:
        print(
            f"  quick eval ({quick['n']} greedy): exact match {quick['exact_match']:.1%}, "
            f"JSON valid {quick['json_valid']:.1%}, confiance {quick['exact_match_confiance']:.1%}"
        )
        by_slice = quick.get("exact_match_by_slice", {})
        if by_slice:
            print(
                "  exact match by slice: " + ", ".join(f"{k} {v:.1%}" for k, v in by_slice.items())
            )
    print(f"  metrics: {metrics_path}")
    summary = {k: v for k, v in metrics.items() if k not in ("quick_eval", "merge_parity")}
    print(json.dumps(summary, ensure_ascii=False, default=str))


if __name__ == "__main__":
    main(*parse_sft_args())
