"""Training on several processes: the launch commands, the sharding switches, and a real 2-process
DDP run (gloo, CPU) of the tiny SFT that is killed after a checkpoint and resumes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.fixtures_training import short_sft_argv
from training import distributed

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"


def test_one_process_runs_the_stage_module_itself():
    argv, env = distributed.launch_command("sft", ["--max_steps", "3"])
    assert argv == [sys.executable, "-m", "training.train_sft", "--max_steps", "3"]
    assert env == {}
    assert distributed.launch_command("dpo", [], gpus=1)[0][2] == "training.train_dpo"


def test_several_gpus_go_through_accelerate_launch_with_the_ddp_config():
    argv, _ = distributed.launch_command("sft", ["--max_steps", "3"], gpus=4)
    assert argv[1:3] == ["-m", "accelerate.commands.launch"]
    assert argv[argv.index("--config_file") + 1] == str(CONFIGS / "ddp.yaml")
    assert argv[argv.index("--num_processes") + 1] == "4"
    assert argv[-4:] == ["-m", "training.train_sft", "--max_steps", "3"]


def test_a_chosen_config_and_node_flags_are_passed():
    config = str(CONFIGS / "fsdp_qlora.yaml")
    nodes = ["--num_machines", "2", "--machine_rank", "1", "--main_process_ip", "10.0.0.1"]
    argv, _ = distributed.launch_command(
        "dpo", [], gpus=8, accelerate_config=config, accelerate_args=nodes
    )
    assert argv[argv.index("--config_file") + 1] == config
    assert argv[argv.index("--main_process_ip") + 1] == "10.0.0.1"
    assert argv.index("--machine_rank") < argv.index("training.train_dpo")


def test_a_missing_config_names_the_available_ones():
    with pytest.raises(ValueError, match=r"ddp\.yaml, deepspeed_zero3\.yaml, fsdp_qlora\.yaml"):
        distributed.launch_command("sft", [], gpus=2, accelerate_config="nope.yaml")


def test_cpu_processes_run_under_torchrun_with_gloo():
    argv, env = distributed.launch_command("sft", ["--max_steps", "2"], cpu_processes=2)
    assert argv[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    assert env == {"ACCELERATE_USE_CPU": "true"}  # the Trainer then joins a gloo group


def test_the_launcher_splits_its_flags_from_the_stages():
    assert distributed.split_argv(["sft", "--gpus", "2", "--", "--max_steps", "3"]) == (
        ["sft", "--gpus", "2"],
        ["--max_steps", "3"],
    )


@pytest.mark.parametrize(
    ("env", "sharded"),
    [
        ({}, False),
        ({"ACCELERATE_USE_FSDP": "true"}, True),
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, True),
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, False),
    ],
)
def test_fsdp_and_zero3_are_sharded_training(monkeypatch, env, sharded):
    for name in (
        "ACCELERATE_USE_FSDP",
        "ACCELERATE_USE_DEEPSPEED",
        "ACCELERATE_DEEPSPEED_ZERO_STAGE",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed.sharded_training() is sharded


def test_ddp_ranks_load_on_their_own_gpu(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.rank_device_map(cuda_available=True) == {"": 3}
    assert distributed.rank_device_map(cuda_available=False) is None
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert distributed.rank_device_map(cuda_available=True) is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    assert distributed.rank_device_map(cuda_available=True) is None


@pytest.mark.parametrize("name", ["ddp.yaml", "fsdp_qlora.yaml", "deepspeed_zero3.yaml"])
def test_accelerate_configs_load_with_accelerates_own_classes(name):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(CONFIGS / name)
    expected = {
        "ddp.yaml": "MULTI_GPU",
        "fsdp_qlora.yaml": "FSDP",
        "deepspeed_zero3.yaml": "DEEPSPEED",
    }
    assert str(config.distributed_type).endswith(expected[name])
    doc = yaml.safe_load((CONFIGS / name).read_text())
    if name == "deepspeed_zero3.yaml":
        assert doc["deepspeed_config"]["zero_stage"] == 3


def test_quant_storage_follows_the_compute_dtype_only_when_asked():
    import torch

    from aria.settings import get_settings
    from training.config import parse_sft_args, quantization_config

    _, _, model_args = parse_sft_args(["--max_steps", "1"], settings=get_settings())
    assert quantization_config(model_args, torch.bfloat16).bnb_4bit_quant_storage == torch.uint8
    sharded = quantization_config(model_args, torch.bfloat16, torch.bfloat16)
    assert sharded.bnb_4bit_quant_storage == torch.bfloat16


# --- the real thing: 2 processes, gloo, the tiny SFT, a kill, a resume


def _run_ddp(argv: list[str], log: Path, kill_at: Path | None = None) -> int:
    """Run the 2-process SFT; with `kill_at`, SIGKILL its whole group once that file exists."""
    command, env = distributed.launch_command("sft", argv, cpu_processes=2)
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env, "OMP_NUM_THREADS": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 600
        while process.poll() is None and time.monotonic() < deadline:
            if kill_at is not None and kill_at.exists():
                _kill_tree(process)
                return -9
            time.sleep(0.2)
        if process.poll() is None:
            _kill_tree(process)
            pytest.fail(f"the 2-process SFT did not finish in 600 s; see {log}")
    return process.returncode


def _kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the launcher and every rank: torchrun starts its workers in their own sessions,
    so killing its process group alone leaves them training (seen: they finished and published)."""
    import psutil

    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    process.wait()
    psutil.wait_procs(tree, timeout=30)


@pytest.mark.engine
def test_two_process_ddp_sft_resumes_after_a_kill_and_rank_0_alone_publishes(
    tiny_base_model, dataset_dir, tmp_path
):
    out, merged = tmp_path / "checkpoints", tmp_path / "aria-ft-sft"
    argv = short_sft_argv(tiny_base_model, dataset_dir, out, merged, max_steps=8)
    argv += ["--eval_steps", "100", "--report_to", "none"]  # one evaluation, at the end
    first = tmp_path / "first.log"
    # trainer_state.json is written last in a checkpoint: kill once checkpoint-2 is complete.
    code = _run_ddp(argv, first, kill_at=out / "checkpoint-2" / "trainer_state.json")
    assert code == -9, first.read_text()[-3000:]
    assert not merged.exists()

    second = tmp_path / "second.log"
    assert _run_ddp(argv, second) == 0, second.read_text()[-3000:]
    text = second.read_text()
    assert f"resuming from {out / 'checkpoint-2'}" in text
    assert text.count("aria-ft-sft published") == 1  # rank 0 alone merges and publishes
    metrics = json.loads((merged / "training_metrics.json").read_text())
    assert metrics["global_step"] == 8
    assert metrics["resumed_from"] == str(out / "checkpoint-2")
    # Two ranks of 4 examples per step: an epoch's share is twice one process's.
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    examples = metrics["train_examples"]
    assert state["epoch"] == pytest.approx(8 * 4 * 2 / examples, rel=0.05)
