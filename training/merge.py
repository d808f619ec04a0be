"""Merge a LoRA adapter into its bf16 base, check parity, and publish the model atomically.

    >>> from training.merge import merge_adapter
    >>> report = merge_adapter("data/models/tiny/base", Path("data/checkpoints/tiny/sft"),
    ...                        Path("data/models/tiny/aria-ft-sft"), probes)

The base is loaded in bf16, never in 4 bits: merging into a quantized base rounds the adapter
into NF4 and ruins it, so a quantized base is refused. Before anything is published, the adapter
model (base + unmerged LoRA) and the merged model score the same sequences (probe prompts plus
the adapter model's greedy answers); the merge is published only if the greedy tokens agree
(no flip where the adapter model's top-1 margin exceeds tolerance x scale) AND the max |logit
difference| is at most tolerance x scale, where scale is the largest |logit| of the adapter model
on those positions. A relative bound means the same on the tiny model and on MedGemma's 262k
vocabulary (an absolute one grows with the logits' size). Both parts are needed: on a barely
trained model every position is a near-tie, so token agreement alone would pass any drift.
The adapter's keys must all load into the base (a missing or unexpected key is an error: the
check would otherwise compare the base with itself and pass). The merge, the parity check and
the quick eval run on CUDA when the GPU has bf16, on CPU otherwise (`compute_device`, in
training/model_files.py). The numbers are written next to the model (merge_parity.json).
`make merge-sft` (training/merge_sft.py) merges the last SFT adapter again with this library.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from aria.files import atomic_dir, atomic_write_json
from training.model_files import (
    compute_device,
    eos_ids_with_end_of_turn,
    is_multimodal,
    load_bf16,
    refuse_quantized_base,
    release_memory,
    serving_generation_config,
)

PARITY_FILE = "merge_parity.json"
PARITY_NEW_TOKENS = 64
PARITY_PROBES = 4
# What a re-merge (make merge-sft) carries over from the folder it replaces.
KEPT_ON_REMERGE = ("training_metrics.json", "loss.png", "runs", "README.md")
# max |logit diff| / max |logit| allowed; the one default of every recipe and of `make merge-sft`.
DEFAULT_PARITY_TOLERANCE = 0.05


class MergeParityError(RuntimeError):
    """The merged model does not answer like the adapter model; nothing was published."""


class AdapterKeyError(RuntimeError):
    """The adapter's weights do not match the base's LoRA layers; nothing was merged."""


def check_adapter_keys(model, adapter_dir: Path) -> int:
    """The number of LoRA tensors loaded; AdapterKeyError when the adapter file and the model's
    LoRA layers do not hold the same keys (a base other than the one trained on, renamed layers)."""
    from peft import get_peft_model_state_dict
    from safetensors import safe_open

    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if not weights.exists():
        raise AdapterKeyError(
            f"{adapter_dir} has no adapter_model.safetensors: retrain the adapter"
        )
    with safe_open(str(weights), "pt") as f:
        stored = set(f.keys())
    expected = set(get_peft_model_state_dict(model).keys())
    missing, unexpected = sorted(expected - stored), sorted(stored - expected)
    if missing or unexpected:
        raise AdapterKeyError(
            f"the LoRA adapter in {adapter_dir} does not fit its base: {len(missing)} missing keys "
            f"{missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}. Merge it into the "
            "base it was trained on (adapter_config.json's base_model_name_or_path)"
        )
    return len(stored)


def probe_inputs(tokenizer, probes: list[list[dict]]):
    """Left-padded chat prompts (generation prompt added) as one batch of tensors."""
    texts = [
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for messages in probes
    ]
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def greedy_continuations(model, inputs, eos_ids: list[int], pad_id: int):
    """Prompt + greedy continuation (PARITY_NEW_TOKENS at most) and its attention mask."""
    import torch

    with torch.no_grad():
        out = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=PARITY_NEW_TOKENS,
            eos_token_id=eos_ids,
            pad_token_id=pad_id,
        )
    new = out[:, inputs["input_ids"].shape[1] :]
    mask = torch.cat([inputs["attention_mask"], (new != pad_id).long()], dim=1)
    return out, mask


def teacher_forced_logits(model, input_ids, attention_mask):
    """Float32 logits of `model` on fixed token sequences (no compounding of earlier choices)."""
    import torch

    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask).logits.float()


def parity_numbers(adapter_logits, merged_logits, mask, prompt_len: int, tolerance: float) -> dict:
    """Compare two models' logits on the probes and the adapter's greedy continuations.

    scale is the adapter model's largest |logit| on the compared positions; the bounds are
    relative to it. The greedy next token is compared at every position (prompt included, so the
    check is never vacuous when a continuation is empty). A flip counts against the merge only
    where the adapter's own top-1/top-2 margin exceeds `tolerance` x scale; flips at near-ties are
    reported but allowed (bf16 rounding decides them). `passed` also needs max |logit diff| <=
    `tolerance` x scale. `prompt_len` splits the counts for the report.
    """
    valid = mask.bool()
    max_diff = float((adapter_logits - merged_logits).abs()[valid].max())
    scale = max(float(adapter_logits[valid].abs().max()), 1e-6)
    gen = valid.clone()
    gen[:, -1] = False  # the last position predicts past the sequence
    a_top = adapter_logits.topk(2, dim=-1)
    flips = (a_top.indices[..., 0] != merged_logits.argmax(-1)) & gen
    margin = a_top.values[..., 0] - a_top.values[..., 1]
    decisive = flips & (margin > tolerance * scale)
    n_gen = int(gen.sum())
    return {
        "max_abs_logit_diff": round(max_diff, 6),
        "logit_scale": round(scale, 6),
        "relative_logit_diff": round(max_diff / scale, 6),
        "continuation_tokens": int(gen[:, prompt_len:].sum()),
        "greedy_tokens_compared": n_gen,
        "greedy_token_agreement": round(1 - int(flips.sum()) / max(n_gen, 1), 6),
        "near_tie_flips": int((flips & ~decisive).sum()),
        "decisive_flips": int(decisive.sum()),
        "passed": max_diff <= tolerance * scale and int(decisive.sum()) == 0,
    }


def merge_adapter(
    base: str,
    adapter_dir: Path,
    out_dir: Path,
    probes: list[list[dict]],
    tolerance: float = DEFAULT_PARITY_TOLERANCE,
    before_publish: Callable[[Path, dict], None] | None = None,
    token: str | None = None,
    revision: str = "main",
) -> dict:
    """Merge `adapter_dir` into the bf16 `base` and publish it at `out_dir` if parity holds.

    Returns the parity report. Raises AdapterKeyError when the adapter's keys do not load into
    the base, MergeParityError (and leaves `out_dir` untouched) when a probe's greedy answer
    changes where the adapter model was decisive, or the max logit difference exceeds
    `tolerance` x the logits' scale (see `parity_numbers`).
    `before_publish(tmp_dir, report)` may add files (metrics, quick eval) before the rename.
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    adapter_dir = Path(adapter_dir)
    refuse_unmergeable(base, adapter_dir, token)
    device = compute_device()
    tokenizer = AutoTokenizer.from_pretrained(base, token=token, revision=revision)
    model = PeftModel.from_pretrained(load_bf16(base, token, device, revision), str(adapter_dir))
    model.eval()
    lora_tensors = check_adapter_keys(model, adapter_dir)
    generation_config = base_generation_config(base, model.config, token, revision)
    eos_ids = eos_ids_with_end_of_turn(tokenizer, generation_config)
    inputs = probe_inputs(tokenizer, probes).to(model.device)

    sequences, seq_mask = greedy_continuations(model, inputs, eos_ids, tokenizer.pad_token_id)
    adapter_logits = teacher_forced_logits(model, sequences, seq_mask)
    merged = model.merge_and_unload()
    merged_logits = teacher_forced_logits(merged, sequences, seq_mask)
    numbers = parity_numbers(
        adapter_logits, merged_logits, seq_mask, inputs["input_ids"].shape[1], tolerance
    )
    report = merge_report(base, adapter_dir, lora_tensors, device, len(probes), numbers, tolerance)
    refuse_failed_parity(numbers, out_dir, tolerance)

    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        # The quick eval (before_publish) loads the saved copy: never hold two bf16 models.
        del model, merged, adapter_logits, merged_logits, sequences, seq_mask, inputs
        release_memory()
        save_serving_files(tmp, base, tokenizer, generation_config, token)
        atomic_write_json(tmp / PARITY_FILE, report)
        if before_publish is not None:
            before_publish(tmp, report)
    return report


def refuse_unmergeable(base: str, adapter_dir: Path, token: str | None) -> None:
    """SystemExit when there is no adapter, the base is quantized, or the adapter has
    modules_to_save (which vLLM cannot serve)."""
    from peft import PeftConfig

    if not (adapter_dir / "adapter_config.json").exists():
        raise SystemExit(f"no LoRA adapter in {adapter_dir}: run `make train-sft` first")
    refuse_quantized_base(base, token)
    adapter_config = PeftConfig.from_pretrained(str(adapter_dir))
    if getattr(adapter_config, "modules_to_save", None):
        raise SystemExit(
            f"{adapter_dir} has modules_to_save={adapter_config.modules_to_save}: vLLM cannot serve "
            "it; retrain without lora_modules_to_save"
        )


def base_generation_config(base: str, model_config, token: str | None, revision: str):
    """The base's generation_config.json, or one derived from the model's config without it."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(base, token=token, revision=revision)
    except OSError:  # a base without generation_config.json
        return GenerationConfig.from_model_config(model_config)


def merge_report(
    base: str,
    adapter_dir: Path,
    lora_tensors: int,
    device: str,
    probes: int,
    numbers: dict,
    tolerance: float,
) -> dict:
    """merge_parity.json: what was merged, where, on how many probes, and `parity_numbers`."""
    return {
        "base": str(base),
        "adapter": str(adapter_dir),
        "lora_tensors_loaded": lora_tensors,
        "device": device,
        "probes": probes,
        **numbers,
        "tolerance": tolerance,
        "new_tokens": PARITY_NEW_TOKENS,
    }


def refuse_failed_parity(numbers: dict, out_dir: Path, tolerance: float) -> None:
    """MergeParityError (nothing is published) when `parity_numbers` did not pass."""
    if not numbers["passed"]:
        raise MergeParityError(
            f"merge parity failed, nothing published to {out_dir}: max |logit diff| "
            f"{numbers['max_abs_logit_diff']:.4f} = {numbers['relative_logit_diff']:.2%} of the "
            f"logits' scale {numbers['logit_scale']:.2f} (tolerance {tolerance:.2%}), greedy token "
            f"agreement {numbers['greedy_token_agreement']:.2%} with {numbers['decisive_flips']} "
            "flips where the adapter model's top-1 margin exceeds tolerance x scale"
        )


def save_serving_files(
    tmp: Path, base: str, tokenizer, generation_config, token: str | None
) -> None:
    """Write what vLLM reads beside the weights: the tokenizer, the serving generation config
    and, for a multimodal base, its processor."""
    tokenizer.save_pretrained(tmp)
    serving_generation_config(tokenizer, generation_config).save_pretrained(tmp)
    if is_multimodal(base, token):
        from transformers import AutoProcessor

        AutoProcessor.from_pretrained(base, token=token).save_pretrained(tmp)


def parity_probes(rows) -> list[list[dict]]:
    """The parity check's probe prompts: the first PARITY_PROBES `prompt`s of dataset rows."""
    return [rows[i]["prompt"] for i in range(min(PARITY_PROBES, len(rows)))]


def keep_training_files(previous: Path) -> Callable[[Path, dict], None]:
    """A `before_publish` that carries KEPT_ON_REMERGE over from the `previous` merged folder,
    with the new parity report in its training_metrics.json."""
    from training.curves import METRICS_FILE

    def carry(tmp: Path, report: dict) -> None:
        for name in KEPT_ON_REMERGE:
            source = Path(previous) / name
            if source.is_dir():
                shutil.copytree(source, tmp / name)
            elif source.exists():
                shutil.copy2(source, tmp / name)
        metrics_path = tmp / METRICS_FILE
        if metrics_path.exists():
            metrics = json.loads(metrics_path.read_text())
            metrics["merge_parity"] = report
            atomic_write_json(metrics_path, metrics)

    return carry
