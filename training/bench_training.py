"""Tokens/s, seconds per step and peak memory of the SFT step (QLoRA NF4) for a profile.

    python -m training.bench_training                         # make bench-training (ARIA_PROFILE)
    python -m training.bench_training --steps 20 --batch-size 16 --seq-len 192
    python -m training.bench_training --config-only --profile medgemma   # GPU: MedGemma 4B text dims

It runs the profile's SFT recipe (4-bit base, LoRA, completion-only loss) on synthetic
pre-tokenised sequences of a fixed length, so the numbers measure the engine and not the data.
After `--warmup` steps it times `--steps` steps and reports tokens/s, s/step and peak memory
(CPU: the process's peak RSS; GPU: torch.cuda.max_memory_allocated). `--config-only` builds a
randomly initialised model with Gemma 3 4B's text dimensions from a config (no download), for GPU
machines without a Hub token. It prints a table, then one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aria.logs import setup_logging
from aria.settings import Settings, get_settings

log = logging.getLogger(__name__)

# MedGemma 4B's language model (Gemma 3 4B): the dims --config-only builds from a config.
GEMMA3_4B_TEXT = {
    "hidden_size": 2560,
    "intermediate_size": 10240,
    "num_hidden_layers": 34,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "vocab_size": 262208,
    "sliding_window": 1024,
    "max_position_embeddings": 131072,
}


@dataclass
class BenchConfig:
    """What to measure: profile recipe, steps, batch shape, and where the model comes from."""

    profile: str | None = None  # default: ARIA_PROFILE
    steps: int = 10
    warmup: int = 2
    batch_size: int | None = None  # default: the recipe's per_device_train_batch_size
    seq_len: int = 192  # tokens per sequence (our SFT examples average ~190)
    completion_len: int = 40  # tokens with a loss (a diagnostic JSON is ~40)
    config_only: bool = False
    threads: int | None = None  # CPU threads for torch (default: torch's choice)


def gemma3_4b_text_config(pad_id: int = 0, eos_id: int = 1, bos_id: int = 2):
    """A Gemma3TextConfig with MedGemma 4B's language-model dimensions."""
    from transformers import Gemma3TextConfig

    layer_types = [
        "full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
        for i in range(GEMMA3_4B_TEXT["num_hidden_layers"])
    ]
    return Gemma3TextConfig(
        **GEMMA3_4B_TEXT,
        layer_types=layer_types,
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=bos_id,
        dtype="bfloat16",
    )


def build_config_only_model(out_dir: Path) -> Path:
    """Save a random-init Gemma 3 4B text model (bf16) and a stand-in tokenizer into `out_dir`."""
    import torch
    from transformers import Gemma3ForCausalLM

    from tiny.tokenizer import train_tokenizer  # the one seam into tiny/ (tiny/__init__.py)

    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Gemma3ForCausalLM(gemma3_4b_text_config()).to(torch.bfloat16)
    model.save_pretrained(out_dir, safe_serialization=True)
    train_tokenizer(["stand-in tokenizer for the benchmark"], vocab_size=300).save_pretrained(
        out_dir
    )
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out_dir


def synthetic_dataset(n: int, seq_len: int, completion_len: int, vocab_size: int, seed: int = 0):
    """Pre-tokenised prompt-completion rows (input_ids + completion_mask) of one fixed length."""
    import random

    from datasets import Dataset

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        ids = [rng.randrange(10, vocab_size) for _ in range(seq_len)]
        rows.append(
            {
                "input_ids": ids,
                "completion_mask": [0] * (seq_len - completion_len) + [1] * completion_len,
            }
        )
    return Dataset.from_list(rows)


def peak_memory_gib() -> tuple[str, float]:
    """('gpu', max allocated GiB) on CUDA, else ('cpu', peak RSS GiB of this process)."""
    import torch

    if torch.cuda.is_available():
        return "gpu", torch.cuda.max_memory_allocated() / 2**30
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return "cpu", rss_kib / 2**20


def run_bench(cfg: BenchConfig, settings: Settings) -> dict:
    """Time the SFT step of the profile's recipe (cfg.profile, else the settings'); returns the
    measured figures."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    profile = cfg.profile or settings.aria_profile
    with tempfile.TemporaryDirectory(prefix="aria-bench-") as tmp:
        # --config-only writes a 4B model (~8 GB) there: gone when the bench ends, even on error.
        return _bench_in(cfg, profile, Path(tmp), settings)


def _bench_in(cfg: BenchConfig, profile: str, tmp: Path, settings: Settings) -> dict:
    """run_bench's body, with its scratch folder `tmp` (checkpoint dir, config-only model)."""
    import torch
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTTrainer

    from training.config import lora_config, parse_sft_args, recipe_path
    from training.preflight import require_model
    from training.stages import adapter_in_compute_dtype, load_quantized

    argv = ["--config", str(recipe_path("sft", profile)), "--output_dir", str(tmp / "out")]
    argv += ["--max_steps", str(cfg.warmup + cfg.steps), "--eval_strategy", "no"]
    argv += ["--save_strategy", "no", "--report_to", "none", "--logging_steps", "1000"]
    argv += ["--train_sampling_strategy", "random", "--disable_tqdm", "true"]
    if cfg.batch_size:
        argv += ["--per_device_train_batch_size", str(cfg.batch_size)]
    _, training_args, model_args = parse_sft_args(argv, settings=settings)

    if cfg.config_only:
        if not torch.cuda.is_available():
            log.warning("--config-only builds a 4B model; it is meant for a GPU machine")
        base = str(build_config_only_model(tmp / "model"))
    elif profile == "tiny":
        base = require_model(str(settings.models_dir.parent / "tiny" / "base"), "base", settings)
    else:
        base = require_model(model_args.model_name_or_path, "base", settings)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = load_quantized(base, model_args, None)
    batch = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    n_rows = batch * (cfg.warmup + cfg.steps)
    vocab = model.config.get_text_config().vocab_size
    data = synthetic_dataset(n_rows, cfg.seq_len, cfg.completion_len, vocab)

    step_ends: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            step_ends.append(time.perf_counter())

    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora_config(model_args),
        callbacks=[StepTimer()],
    )
    adapter_in_compute_dtype(trainer.model, model_args)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = step_ends[cfg.warmup :]
    seconds = timed[-1] - step_ends[cfg.warmup - 1] if cfg.warmup else timed[-1] - timed[0]
    n_steps = len(timed) if cfg.warmup else len(timed) - 1
    device, peak = peak_memory_gib()
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {
        "profile": profile,
        "model": "gemma-3-4b text (config only)" if cfg.config_only else base,
        "device": torch.cuda.get_device_name()
        if device == "gpu"
        else f"cpu x{torch.get_num_threads()}",
        "quantization": f"{model_args.bnb_4bit_quant_type} 4-bit, compute {model_args.dtype}",
        "lora_r": model_args.lora_r,
        "trainable_params": trainable,
        "batch_size": batch,
        "seq_len": cfg.seq_len,
        "steps_timed": n_steps,
        "s_per_step": seconds / n_steps,
        "tokens_per_s": batch * cfg.seq_len * n_steps / seconds,
        "peak_memory_gib": peak,
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device == "gpu" else "peak RSS",
    }


def main(cfg: BenchConfig, settings: Settings) -> dict:
    """Measure, print the table, then the JSON line; returns the measured figures."""
    result = run_bench(cfg, settings)
    rows = [
        ("profile", result["profile"]),
        ("model", result["model"]),
        ("device", result["device"]),
        ("quantization", result["quantization"]),
        ("LoRA r / trainable", f"{result['lora_r']} / {result['trainable_params'] / 1e6:.2f}M"),
        ("batch x seq_len", f"{result['batch_size']} x {result['seq_len']}"),
        ("steps timed", result["steps_timed"]),
        ("s / step", f"{result['s_per_step']:.3f}"),
        ("tokens / s", f"{result['tokens_per_s']:.0f}"),
        (f"peak memory ({result['peak_memory_kind']})", f"{result['peak_memory_gib']:.2f} GiB"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result))
    return result


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    """Command-line flags → BenchConfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("tiny", "medgemma"), default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=192)
    parser.add_argument("--completion-len", type=int, default=40)
    parser.add_argument("--config-only", action="store_true", help="random-init 4B text model")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return BenchConfig(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    main(parse_args(), settings)
