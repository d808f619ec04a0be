"""The steps SFT and DPO share, as plain functions: data, resume, model, train, merge, summary.

    >>> from training.stages import training_splits, run_fingerprint, resume_point
    >>> train_set, eval_set = training_splits(path, sft_record, 100, training_args)

training/train_sft.py and train_dpo.py call them in the order of TRL's example scripts: load the
data (a seeded held-out slice), decide whether the checkpoints in output_dir can be resumed (the
fingerprint of the data, base and recipe), load the base in 4 bits, train and save the adapter,
then, on rank 0 only, merge it into the bf16 base (parity checked), complete the merged folder
(training_metrics.json, loss.png, the TensorBoard runs, the quick eval) and log the summary, then
print its JSON line, the stage's result on stdout.
Under several processes (training/distributed.py) the checkpoint folder is decided by rank 0 first
and the other ranks stop after saving the adapter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aria.files import DataError, atomic_write_json, read_jsonl
from training.config import PublishArguments, compute_dtype, lora_config, quantization_config
from training.merge import merge_adapter, parity_probes
from training.model_files import is_multimodal, release_memory
from training.preflight import hub_access, hub_token, local_model, require_model
from training.quick_eval import quick_eval

log = logging.getLogger(__name__)

RUN_FINGERPRINT = "aria_run.json"  # what the checkpoints in output_dir were trained on
# The recipe's knobs a checkpoint must match to be resumed (with the data, base and LoRA rank).
FINGERPRINT_KNOBS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "seed",
    "train_sampling_strategy",
)


# --- data


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


def training_splits(path: Path, parse: Callable[[dict], dict], eval_size: int, training_args):
    """`load_splits` with the recipe's seed; evaluation is switched off when nothing is held out."""
    train_set, eval_set = load_splits(path, parse, eval_size, training_args.seed)
    if eval_set is None:
        training_args.eval_strategy = "no"
    return train_set, eval_set


# --- fingerprint and resume


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


def run_fingerprint(data_path: Path, base: str, training_args, model_args, **extra: Any) -> dict:
    """What a checkpoint must match to be resumed: the data, the base and the recipe's knobs,
    then the stage's own `extra` knobs (SFT: the loss weights), in that order."""
    return {
        "data_sha256": hashlib.sha256(Path(data_path).read_bytes()).hexdigest()[:16],
        "base": str(base),
        "base_files": model_files_signature(base),
        "lora_r": model_args.lora_r,
        **{k: getattr(training_args, k) for k in FINGERPRINT_KNOBS},
        **extra,
    }


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
        log.warning(
            "not resuming from %s: the data, base or recipe changed; starting over", checkpoint
        )
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True)
    atomic_write_json(stamp, fingerprint)
    return None


def resume_point(output_dir: Path, resume: bool, fingerprint: dict, training_args) -> str | None:
    """`last_checkpoint`, decided by rank 0 before the other ranks read the folder."""
    with training_args.main_process_first(local=False, desc="the checkpoint folder"):
        return last_checkpoint(output_dir, resume, fingerprint)


# --- model


def load_quantized(name_or_path: str, model_args, token: str | None):
    """The base in 4 bits (the recipe's quant type), prepared for k-bit training.

    Under several processes (training/distributed.py): DDP puts it on each rank's own GPU;
    FSDP and ZeRO-3 get it with the quant storage in the compute dtype and unprepared, to shard.
    """
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from training.distributed import rank_device_map, sharded_training

    dtype = compute_dtype(model_args)
    sharded = sharded_training()
    multimodal = is_multimodal(name_or_path, token)
    auto = AutoModelForImageTextToText if multimodal else AutoModelForCausalLM
    model = auto.from_pretrained(
        name_or_path,
        revision=model_args.model_revision,
        quantization_config=quantization_config(model_args, dtype, dtype if sharded else None),
        dtype=dtype,
        attn_implementation=model_args.attn_implementation or "eager",
        token=token,
        device_map=rank_device_map(torch.cuda.is_available()),
    )
    if sharded:
        return model
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def training_base(name_or_path: str, stage: str, settings, model_args) -> str:
    """The model a stage trains on, as a local folder: checked (require_model, naming the make
    target), and downloaded with the settings' token when it is a Hub repo id."""
    checked = require_model(name_or_path, stage, settings)
    return local_model(checked, settings, model_args.model_revision)


def load_for_training(name_or_path: str, model_args, settings):
    """(tokenizer, 4-bit model) with the settings' Hub token; a refused download names HF_TOKEN."""
    with hub_access(name_or_path, settings):
        return load_tokenizer_and_model(name_or_path, model_args, hub_token(settings))


def load_tokenizer_and_model(name_or_path: str, model_args, token: str | None):
    """(tokenizer, 4-bit model) of the model a stage trains on."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        name_or_path, revision=model_args.model_revision, token=token
    )
    return tokenizer, load_quantized(name_or_path, model_args, token)


def adapter_in_compute_dtype(model, model_args) -> None:
    """Keep the LoRA weights in the recipe's 4-bit compute dtype when that is float32.

    TRL's trainers cast the trainable weights of a quantized model to bf16 (the QLoRA paper's
    choice, right on a GPU). On a CPU without native bf16 (AVX2 only) every LoRA matmul is then
    emulated: measured 3.43 s per tiny SFT step against 0.89 s in fp32. General, not the tiny
    profile's: it acts for any recipe whose compute dtype is float32, on any model, and leaves
    a bf16 or fp16 recipe (medgemma) with TRL's cast.
    """
    import torch

    if compute_dtype(model_args) != torch.float32:
        return
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


# --- train


@dataclass
class TrainedRun:
    """What rank 0 keeps of a finished training for the merge and the summary."""

    train_loss: float | None
    eval_metrics: dict
    log_history: list[dict]
    resumed_from: str | None
    seconds: float  # from `started` (data loading included) to the saved adapter


def train_and_free(
    trainer_for: Callable[[Any], Any],
    loaded: tuple[Any, Any],
    splits: tuple[Any, Any],
    recipe: tuple[Any, Any],
    resume_from: str | None,
    started: float,
    **trainer_kwargs: Any,
) -> TrainedRun | None:
    """Train a fresh LoRA adapter of the recipe on the loaded (tokenizer, 4-bit model) with the
    trainer class `trainer_for(tokenizer)` gives (SFTTrainer, DPOTrainer...), save it in
    output_dir, then free the trainer and the model before the merge loads the bf16 base.
    `loaded` comes straight from load_for_training, so that no caller keeps a reference to the
    model; `recipe` is (training_args, model_args)."""
    tokenizer, model = loaded
    del loaded
    (train_set, eval_set), (training_args, model_args) = splits, recipe
    trainer = trainer_for(tokenizer)(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=lora_config(model_args),
        **trainer_kwargs,
    )
    del model
    output_dir = Path(training_args.output_dir)
    run = train(trainer, model_args, resume_from, output_dir, started)
    del trainer
    release_memory()
    return run


def train(
    trainer, model_args, resume_from: str | None, output_dir: Path, started: float
) -> TrainedRun | None:
    """Train (resuming from `resume_from`), evaluate on the held-out slice, save the adapter in
    `output_dir`; rank 0 also writes log_history.json there. None on the other ranks."""
    adapter_in_compute_dtype(trainer.model, model_args)
    if resume_from:
        log.info("resuming from %s", resume_from)
    train_result = trainer.train(resume_from_checkpoint=resume_from)
    eval_metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    trainer.save_model(str(output_dir))  # the final adapter, merged by rank 0
    if not trainer.is_world_process_zero():
        return None
    log_history = trainer.state.log_history
    atomic_write_json(output_dir / "log_history.json", log_history)
    return TrainedRun(
        train_loss=train_result.metrics.get("train_loss"),
        eval_metrics=eval_metrics,
        log_history=log_history,
        resumed_from=resume_from,
        seconds=time.perf_counter() - started,
    )


def other_rank_result(stage: str, training_args) -> dict:
    """What a rank other than 0 returns: it trained and saved, rank 0 merges and publishes."""
    return {"stage": stage, "rank": training_args.process_index}


def stage_metrics(
    stage: str, base: str, run: TrainedRun, train_examples: int, **extra: Any
) -> dict:
    """training_metrics.json's figures of a run; the stage's `extra` ones follow the eval loss."""
    return {
        "stage": stage,
        "base": base,
        "global_step": run.log_history[-1].get("step") if run.log_history else 0,
        "train_loss": run.train_loss,
        "eval_loss": run.eval_metrics.get("eval_loss"),
        **extra,
        "train_examples": train_examples,
        "resumed_from": run.resumed_from,
        "train_seconds": round(run.seconds, 1),
    }


# --- merge and summary


def publish_merged(
    base: str,
    output_dir: Path,
    splits: tuple[Any, Any],
    metrics: dict,
    run: TrainedRun,
    script_args: PublishArguments,
    title: str,
    settings,
    model_args,
) -> dict:
    """`merge_and_publish` of a stage with the settings' Hub token and the recipe's revision; a
    refused download names HF_TOKEN."""
    train_set, eval_set = splits
    with hub_access(base, settings):
        return merge_and_publish(
            base,
            output_dir,
            train_set,
            eval_set,
            metrics,
            run,
            script_args,
            title,
            hub_token(settings),
            model_args.model_revision,
        )


def merge_and_publish(
    base: str,
    output_dir: Path,
    train_set,
    eval_set,
    metrics: dict,
    run: TrainedRun,
    script_args: PublishArguments,
    title: str,
    token: str | None = None,
    revision: str = "main",
) -> dict:
    """Merge the adapter of `output_dir` into the bf16 `base` (parity checked on prompts of the
    held-out slice, or of the training set when none is held out), complete and publish
    script_args.merged_dir, report the summary; returns `metrics` with the parity and quick eval."""
    from training.curves import METRICS_FILE

    merged_dir = Path(script_args.merged_dir)

    def finish(tmp: Path, parity: dict) -> None:
        complete_merged_folder(
            tmp, parity, metrics, run.log_history, output_dir, script_args, title
        )

    probes = parity_probes(eval_set if eval_set is not None else train_set)
    merge_adapter(
        base, output_dir, merged_dir, probes, script_args.parity_tolerance, finish, token, revision
    )
    report_summary(metrics, merged_dir / METRICS_FILE)
    return metrics


def complete_merged_folder(
    tmp: Path,
    parity: dict,
    metrics: dict,
    log_history: list[dict],
    output_dir: Path,
    script_args: PublishArguments,
    title: str,
) -> None:
    """Fill a merged model's folder before it is published (SFT and DPO alike).

    Adds the parity result and, unless `quick_eval_size` is 0, the greedy quick eval to `metrics`;
    copies the TensorBoard runs; writes training_metrics.json and loss.png.
    """
    from training.curves import write_training_report

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


def report_summary(metrics: dict, metrics_path: Path) -> None:
    """One screen logged: where the model is, losses, parity, exact match; then the JSON line of
    the metrics on stdout, the stage's result."""
    parity = metrics.get("merge_parity", {})
    quick = metrics.get("quick_eval", {})
    log.info("%s published: %s", metrics["stage"], metrics_path.parent)
    log.info("  steps %s  train loss %s", metrics["global_step"], metrics["train_loss"])
    log.info("  eval loss %s  train time %s s", metrics["eval_loss"], metrics["train_seconds"])
    log.info(
        "  merge parity: greedy token agreement %s, decisive flips %s, max |logit diff| %s = %s "
        "of the logits' scale (tolerance %s)",
        parity.get("greedy_token_agreement"),
        parity.get("decisive_flips"),
        parity.get("max_abs_logit_diff"),
        parity.get("relative_logit_diff"),
        parity.get("tolerance"),
    )
    if quick:
        log.info(
            "  quick eval (%s greedy): exact match %.1f%%, JSON valid %.1f%%, confiance %.1f%%",
            quick["n"],
            100 * quick["exact_match"],
            100 * quick["json_valid"],
            100 * quick["exact_match_confiance"],
        )
        by_slice = quick.get("exact_match_by_slice", {})
        if by_slice:
            log.info(
                "  exact match by slice: %s", ", ".join(f"{k} {v:.1%}" for k, v in by_slice.items())
            )
    log.info("  metrics: %s", metrics_path)
    summary = {k: v for k, v in metrics.items() if k not in ("quick_eval", "merge_parity")}
    print(json.dumps(summary, ensure_ascii=False, default=str))
