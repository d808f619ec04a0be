"""Session fixtures: the tiny base model (built once) and one short real SFT run + merge.

Register them with `pytest_plugins = ["tests.fixtures_training"]` in tests/conftest.py; they use
the `dataset_dir` fixture of tests/fixtures_data.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

TINY_SFT_RECIPE = Path(__file__).resolve().parents[1] / "training" / "recipes" / "tiny" / "sft.yaml"
TINY_DPO_RECIPE = TINY_SFT_RECIPE.with_name("dpo.yaml")
SHORT_SFT_STEPS = 4


@dataclass(frozen=True)
class SFTRun:
    """What the short SFT run produced."""

    base: Path
    checkpoints: Path  # output_dir: checkpoint-2, checkpoint-4 and the final adapter
    merged: Path  # the published bf16 aria-ft-sft
    metrics: dict


def short_sft_argv(
    base: Path, data_dir: Path, out: Path, merged: Path, max_steps: int
) -> list[str]:
    """Flags of a few-step SFT on the tiny recipe, everything written under tmp folders."""
    return [
        "--config", str(TINY_SFT_RECIPE),
        "--model_name_or_path", str(base),
        "--sft_path", str(data_dir / "training" / "sft.jsonl"),
        "--eval_path", str(data_dir / "eval" / "eval.jsonl"),
        "--output_dir", str(out),
        "--merged_dir", str(merged),
        "--max_steps", str(max_steps),
        "--per_device_train_batch_size", "4",
        "--eval_size", "8",
        "--per_device_eval_batch_size", "8",
        "--eval_steps", "2",
        "--save_steps", "2",
        "--logging_steps", "1",
        "--quick_eval_size", "0",
        "--disable_tqdm", "true",
    ]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_base_model(dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Gemma 3 base (bf16, tokenizer trained on the session's sft.jsonl), built once."""
    from tiny.build import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-model") / "base"
    return build_tiny_model(out, dataset_dir / "training" / "sft.jsonl", seed=0)


@pytest.fixture(scope="session")
def tiny_sft_run(
    tiny_base_model: Path, dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> SFTRun:
    """A real 4-step QLoRA SFT of the tiny base, merged (parity checked) into a tmp aria-ft-sft."""
    from aria.settings import get_settings
    from training.config import parse_sft_args
    from training.train_sft import main

    root = tmp_path_factory.mktemp("tiny-sft")
    out, merged = root / "checkpoints", root / "aria-ft-sft"
    argv = short_sft_argv(tiny_base_model, dataset_dir, out, merged, SHORT_SFT_STEPS)
    settings = get_settings()
    metrics = main(*parse_sft_args(argv, settings=settings), settings)
    return SFTRun(tiny_base_model, out, merged, metrics)
