"""The publish step never holds two models: the merge frees its copy before the quick eval loads
the published one (on a 24 GB card a second bf16 MedGemma is an out-of-memory)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine


def live_models() -> int:
    """PreTrainedModel / PeftModel objects still reachable after a garbage collection."""
    from peft import PeftModel
    from transformers import PreTrainedModel

    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, PreTrainedModel | PeftModel))


def test_the_merge_frees_its_models_before_the_quick_eval_loads_the_published_one(
    tiny_sft_run, dataset_dir: Path, tmp_path: Path
):
    from training.merge import merge_adapter, parity_probes
    from training.stages import load_splits
    from training.train_sft import sft_record

    _, eval_set = load_splits(dataset_dir / "training" / "sft.jsonl", sft_record, 8, 42)
    before = live_models()
    seen = {}

    def quick_eval_stand_in(tmp: Path, report: dict) -> None:
        # Where complete_merged_folder loads the published copy for the quick eval.
        seen["models_alive"] = live_models() - before

    merge_adapter(
        str(tiny_sft_run.base),
        tiny_sft_run.checkpoints,
        tmp_path / "merged",
        parity_probes(eval_set),
        before_publish=quick_eval_stand_in,
    )
    assert seen["models_alive"] == 0, "the merge still holds a model while the quick eval loads"
    assert (tmp_path / "merged" / "config.json").exists()
