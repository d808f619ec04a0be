"""The tiny base's pretraining stages: full-parameter runs of `tiny.copy_probe`'s tasks.

`make tiny-pretrain` (`python -m tiny.build --pretrain`) builds the committed base from random
weights, then runs PRETRAIN_STAGES in turn: copying a measured value asked by its key, then also
ranking the measurements by percent of threshold and describing them in sentences (no label, no
rule). Each stage is a `python -m tiny.copy_probe` command (docs/training.md, "The tiny
profile's base").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tiny.copy_probe import PROBES, RANK_PROBES, pretrain, probe, probe_rank

PRETRAIN_COPY_STEPS = 1000


@dataclass(frozen=True)
class PretrainStage:
    """One run of `tiny.copy_probe`'s pretraining: its steps, seed and task mix (the shares
    of descriptions, then of ranking among the rest; the others copy). Each stage reloads the
    bf16 weights the previous one saved, as `python -m tiny.copy_probe` does."""

    steps: int
    seed: int
    rank_share: float = 0.0
    describe_share: float = 0.0


# `make tiny-pretrain`: copying alone (the seed is the build's), then ranking, then ranking and
# descriptions; each stage is a `python -m tiny.copy_probe` command (docs/training.md, "The tiny
# profile's base").
PRETRAIN_STAGES = (
    PretrainStage(PRETRAIN_COPY_STEPS, seed=0),
    PretrainStage(800, seed=1, rank_share=0.5),
    PretrainStage(1000, seed=1, rank_share=0.7),
    PretrainStage(400, seed=3, rank_share=0.7, describe_share=0.4),
)


def pretrain_stage(folder: Path, tokenizer, stage: PretrainStage) -> dict:
    """Pretrain the base saved in `folder` for one stage, in place, and return what to record.

    It loads the saved bf16 weights in fp32, as `python -m tiny.copy_probe` does, so that both
    train the same numbers: converting the model in memory instead leaves its rotary frequencies
    rounded to bf16, and that draw had not learnt to copy by step 750 (loss 0.54 against 0.27)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        folder,
        dtype=torch.float32,
        attn_implementation="eager",  # Gemma 3 trains with eager
    )
    started = time.perf_counter()
    losses = pretrain(
        model,
        tokenizer,
        stage.steps,
        seed=stage.seed,
        rank_share=stage.rank_share,
        describe_share=stage.describe_share,
    )
    record = {
        "steps": stage.steps,
        "seed": stage.seed,
        "rank_share": stage.rank_share,
        "describe_share": stage.describe_share,
        "seconds": round(time.perf_counter() - started),
        "loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
        "copy_exact": probe(model, tokenizer, PROBES, stage.seed),
    }
    if stage.rank_share:
        record["rank_first"] = probe_rank(model, tokenizer, RANK_PROBES, stage.seed)
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    return record
