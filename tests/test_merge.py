"""The merge's guards: device placement, the relative parity check, the adapter-key check, the
re-merge CLI (`make merge-sft`) and the refusal on GPUs without bf16.

Which test fails when a guard is removed:
- device placement: test_compute_device_is_cuda_only_with_bf16,
  test_merge_and_quick_eval_load_on_the_compute_device;
- parity check: test_parity_is_relative_to_the_logits_scale, test_merge_that_drifts_is_refused;
- adapter-key check: test_adapter_whose_keys_do_not_load_is_refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from training.merge import DEFAULT_PARITY_TOLERANCE, parity_numbers


def _logits(rows: list[list[list[float]]]):
    import torch

    return torch.tensor(rows, dtype=torch.float32)


def test_parity_is_relative_to_the_logits_scale():
    import torch

    adapter = _logits([[[20.0, 1.0, 0.0], [0.0, 10.0, 9.9], [5.0, 0.0, 0.0]]])
    mask = torch.ones(1, 3, dtype=torch.long)
    same = parity_numbers(adapter, adapter.clone(), mask, 1, DEFAULT_PARITY_TOLERANCE)
    assert same["passed"] and same["logit_scale"] == 20.0 and same["relative_logit_diff"] == 0

    # A near-tie flips (margin 0.1 < 5 % of 20): allowed, and the drift is 1 % of the scale.
    near_tie = adapter.clone()
    near_tie[0, 1, 2] = 10.2
    numbers = parity_numbers(adapter, near_tie, mask, 1, DEFAULT_PARITY_TOLERANCE)
    assert numbers["passed"] and numbers["near_tie_flips"] == 1 and numbers["decisive_flips"] == 0

    # The same absolute drift (0.3) is 1.5 % of a scale of 20 but 30 % of a scale of 1.
    small = adapter / 20
    assert not parity_numbers(small, small + 0.3 * (small == small.max()), mask, 1, 0.05)["passed"]

    # A decisive flip (margin 19 of 20) fails even though the rest agrees.
    flipped = adapter.clone()
    flipped[0, 0, 1] = 20.5
    numbers = parity_numbers(adapter, flipped, mask, 1, 1.0)
    assert numbers["decisive_flips"] == 0  # a tolerance of 100 % of the scale allows anything
    numbers = parity_numbers(adapter, flipped, mask, 1, DEFAULT_PARITY_TOLERANCE)
    assert not numbers["passed"] and numbers["decisive_flips"] == 1


def test_one_default_tolerance_for_recipes_and_the_merge():
    from training.config import DPOScriptArguments, SFTScriptArguments
    from training.merge import merge_adapter

    assert merge_adapter.__defaults__[0] == DEFAULT_PARITY_TOLERANCE
    assert SFTScriptArguments().parity_tolerance == DEFAULT_PARITY_TOLERANCE
    assert DPOScriptArguments().parity_tolerance == DEFAULT_PARITY_TOLERANCE
    for recipe in Path("training/recipes/medgemma").glob("*.yaml"):
        assert "parity_tolerance" not in recipe.read_text(), f"{recipe} restates the default"


def test_compute_device_is_cuda_only_with_bf16(monkeypatch):
    import torch

    from training.model_files import compute_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert compute_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert compute_device() == "cpu"  # T4/V100: the CPU merges exactly, bf16 is emulated there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert compute_device() == "cpu"


def test_gpu_without_bf16_is_told_the_fp32_fix(monkeypatch):
    import torch

    from training.config import no_bf16_message

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    message = no_bf16_message("training/recipes/medgemma/sft.yaml")
    assert "Tesla T4" in message and "--bf16 false --dtype float32" in message


def _spy_device_map(monkeypatch) -> list:
    """Record the device_map every model load asks for, and load on the CPU regardless."""
    from transformers import AutoModelForCausalLM

    seen: list = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("device_map"))
        kwargs["device_map"] = "cpu"
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    return seen


@pytest.mark.engine
def test_merge_and_quick_eval_load_on_the_compute_device(
    tiny_sft_run, dataset_dir: Path, tmp_path: Path, monkeypatch
):
    from aria.files import read_jsonl
    from training import merge
    from training.quick_eval import quick_eval

    monkeypatch.setattr(merge, "compute_device", lambda: "cuda")
    monkeypatch.setattr("training.quick_eval.compute_device", lambda: "cuda")
    seen = _spy_device_map(monkeypatch)
    probes = [r["prompt"] for r in read_jsonl(dataset_dir / "training" / "sft.jsonl")[:2]]
    report = merge.merge_adapter(
        str(tiny_sft_run.base), tiny_sft_run.checkpoints, tmp_path / "m", probes
    )
    assert seen == ["cuda"] and report["device"] == "cuda"
    quick_eval(tmp_path / "m", dataset_dir / "eval" / "eval.jsonl", limit=1, max_new_tokens=4)
    assert seen == ["cuda", "cuda"]


@pytest.mark.engine
def test_adapter_whose_keys_do_not_load_is_refused(tiny_sft_run, dataset_dir: Path, tmp_path):
    """An adapter saved for other module names (here: layer 0 renamed) loads nothing there;
    without the check, parity would compare the base with itself and pass."""
    from safetensors.torch import load_file, save_file

    from aria.files import read_jsonl
    from training.merge import AdapterKeyError, merge_adapter

    adapter = tmp_path / "adapter"
    shutil.copytree(
        tiny_sft_run.checkpoints, adapter, ignore=shutil.ignore_patterns("checkpoint-*")
    )
    weights = load_file(adapter / "adapter_model.safetensors")
    renamed = {k.replace("layers.0.", "layers.90."): v for k, v in weights.items()}
    save_file(renamed, adapter / "adapter_model.safetensors")
    probes = [r["prompt"] for r in read_jsonl(dataset_dir / "training" / "sft.jsonl")[:1]]
    with pytest.raises(AdapterKeyError, match=str(adapter)) as error:
        merge_adapter(str(tiny_sft_run.base), adapter, tmp_path / "m", probes)
    assert "missing keys" in str(error.value) and "unexpected keys" in str(error.value)
    assert not (tmp_path / "m").exists()


@pytest.mark.engine
def test_merge_that_drifts_is_refused(tiny_sft_run, dataset_dir: Path, tmp_path, monkeypatch):
    """Tied embeddings scaled by 1.1 after merging: greedy tokens may all agree, yet the logits
    move ~10 % of their scale, which the relative bound refuses."""
    from peft.tuners.lora import LoraModel

    from aria.files import read_jsonl
    from training.merge import MergeParityError, merge_adapter

    real_merge = LoraModel.merge_and_unload

    def drifting_merge(self, *args, **kwargs):
        merged = real_merge(self, *args, **kwargs)
        weight = merged.get_input_embeddings().weight
        weight.data *= 1.1
        return merged

    monkeypatch.setattr(LoraModel, "merge_and_unload", drifting_merge)
    probes = [r["prompt"] for r in read_jsonl(dataset_dir / "training" / "sft.jsonl")[:1]]
    with pytest.raises(MergeParityError, match="of the logits' scale"):
        merge_adapter(str(tiny_sft_run.base), tiny_sft_run.checkpoints, tmp_path / "m", probes)
    assert not (tmp_path / "m").exists()


def _merge(argv: list[str]) -> dict:
    """`python -m training.merge_sft ARGV` in this process: its parse, then its main."""
    from aria.settings import get_settings
    from training.merge_sft import main, parse_args

    settings = get_settings()
    return main(*parse_args(argv, settings=settings), settings)


def _merge_argv(run, dataset_dir: Path, merged: Path) -> list[str]:
    from tests.fixtures_training import TINY_SFT_RECIPE

    return [
        "--config", str(TINY_SFT_RECIPE),
        "--model_name_or_path", str(run.base),
        "--sft_path", str(dataset_dir / "training" / "sft.jsonl"),
        "--output_dir", str(run.checkpoints),
        "--merged_dir", str(merged),
        "--eval_size", "8",
    ]  # fmt: skip


@pytest.mark.engine
def test_merge_cli_keeps_the_training_files(tiny_sft_run, dataset_dir: Path, tmp_path: Path):
    """make merge-sft republishes aria-ft-sft with its metrics, loss plot, runs and card, the
    recipe's tolerance and the eval split's probes (the ones train-sft used)."""
    merged = tmp_path / "aria-ft-sft"
    shutil.copytree(tiny_sft_run.merged, merged)
    (merged / "README.md").write_text("# card\n")
    before = json.loads((merged / "merge_parity.json").read_text())
    report = _merge(_merge_argv(tiny_sft_run, dataset_dir, merged))
    for name in ("training_metrics.json", "loss.png", "runs", "README.md", "model.safetensors"):
        assert (merged / name).exists(), name
    metrics = json.loads((merged / "training_metrics.json").read_text())
    assert metrics["merge_parity"] == report and metrics["log_history"]
    assert report["tolerance"] == before["tolerance"]  # the recipe's value
    assert report == json.loads((merged / "merge_parity.json").read_text())
    assert report["max_abs_logit_diff"] == before["max_abs_logit_diff"]  # same probes as train-sft


@pytest.mark.engine
def test_merge_cli_refuses_a_4bit_base(tiny_sft_run, dataset_dir: Path, tmp_path: Path):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantized = tmp_path / "base-4bit"
    AutoModelForCausalLM.from_pretrained(
        tiny_sft_run.base,
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32
        ),
    ).save_pretrained(quantized)
    shutil.copy(tiny_sft_run.base / "tokenizer.json", quantized)
    argv = _merge_argv(tiny_sft_run, dataset_dir, tmp_path / "m")
    argv[argv.index("--model_name_or_path") + 1] = str(quantized)
    with pytest.raises(SystemExit, match="quantized"):
        _merge(argv)
    assert not (tmp_path / "m").exists()


@pytest.mark.gpu
def test_merge_runs_on_the_gpu(tiny_sft_run, dataset_dir: Path, tmp_path: Path):
    import torch

    from aria.files import read_jsonl
    from training.merge import merge_adapter

    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU")
    probes = [r["prompt"] for r in read_jsonl(dataset_dir / "training" / "sft.jsonl")[:2]]
    report = merge_adapter(str(tiny_sft_run.base), tiny_sft_run.checkpoints, tmp_path / "m", probes)
    assert report["device"] == "cuda" and report["passed"]
