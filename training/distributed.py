"""Training on several processes (GPUs, nodes, or CPU processes in CI) with accelerate or torchrun.

    python -m training.distributed sft -- --max_steps 6               # = python -m training.train_sft --max_steps 6
    python -m training.distributed sft --gpus 4                       # make train-sft GPUS=4 (DDP)
    python -m training.distributed dpo --gpus 8 --accelerate-config configs/accelerate/fsdp_qlora.yaml
    python -m training.distributed sft --cpu-processes 2 -- --max_steps 4   # gloo DDP on a CPU

One process (no --gpus, or 1, and no config) runs the stage's module as before. Several GPUs go
through `accelerate launch` with configs/accelerate/ddp.yaml (or ACCELERATE_CONFIG: FSDP + QLoRA
or DeepSpeed ZeRO-3, as in the alignment-handbook); several nodes add accelerate's own
--num_machines/--machine_rank/--main_process_ip after `--accelerate-args`. CPU processes run
under torchrun with ACCELERATE_USE_CPU=true, so the Trainer joins a gloo process group.

What the stages do differently under several processes (training/stages.py, for both stages):
the checkpoint folder is decided by rank 0 first; the 4-bit base goes on each rank's own GPU
(DDP) or is left to FSDP/ZeRO-3 to shard, with the quant storage in the compute dtype and no
`prepare_model_for_kbit_training` (it would upcast and pin the weights each rank must shard);
rank 0 alone merges, checks parity, quick-evaluates and publishes; a re-run resumes every rank
from the last checkpoint (same number of processes, as the Trainer's per-rank RNG states require).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from aria.logs import setup_logging

log = logging.getLogger(__name__)

ACCELERATE_DIR = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
DEFAULT_CONFIG = ACCELERATE_DIR / "ddp.yaml"
STAGE_MODULES = {"sft": "training.train_sft", "dpo": "training.train_dpo"}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def sharded_training() -> bool:
    """True under FSDP or DeepSpeed ZeRO-3 (accelerate launch sets these variables): every rank
    holds a shard of the base, so the 4-bit weights must not be prepared for k-bit training."""
    if _env_true("ACCELERATE_USE_FSDP"):
        return True
    return (
        _env_true("ACCELERATE_USE_DEEPSPEED")
        and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    )


def world_size() -> int:
    """Processes of this training run (WORLD_SIZE, set by accelerate launch and torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_device_map(cuda_available: bool) -> dict[str, int] | None:
    """Under DDP on GPUs, each rank loads the 4-bit base on its own GPU (LOCAL_RANK): without
    it every rank quantizes onto cuda:0. None on a CPU, for one process, or when sharded."""
    if not cuda_available or world_size() == 1 or sharded_training():
        return None
    return {"": int(os.environ.get("LOCAL_RANK", "0"))}


def launch_command(
    stage: str,
    args: list[str],
    gpus: int | None = None,
    accelerate_config: str | None = None,
    cpu_processes: int | None = None,
    accelerate_args: list[str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment that run `stage` on one or several processes."""
    if stage not in STAGE_MODULES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGE_MODULES)}")
    module = STAGE_MODULES[stage]
    if cpu_processes and cpu_processes > 1:
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        argv += ["--nproc_per_node", str(cpu_processes), "-m", module, *args]
        return argv, {"ACCELERATE_USE_CPU": "true"}
    if not accelerate_config and (gpus is None or gpus <= 1):
        return [sys.executable, "-m", module, *args], {}
    config = Path(accelerate_config) if accelerate_config else DEFAULT_CONFIG
    if not config.is_file():
        raise ValueError(
            f"ACCELERATE_CONFIG={config} does not exist: pick one of "
            f"{', '.join(p.name for p in sorted(ACCELERATE_DIR.glob('*.yaml')))} in {ACCELERATE_DIR}"
        )
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    if gpus:
        argv += ["--num_processes", str(gpus)]
    argv += [*(accelerate_args or []), "-m", module, *args]
    return argv, {}


@dataclass
class LaunchConfig:
    """Which stage to run, on how many processes, and the stage's own flags."""

    stage: str
    gpus: int | None = None
    accelerate_config: str | None = None  # default: configs/accelerate/ddp.yaml with --gpus
    cpu_processes: int | None = None
    accelerate_args: list[str] = field(default_factory=list)
    stage_args: list[str] = field(default_factory=list)  # the flags after `--`


def make_parser() -> argparse.ArgumentParser:
    """The command line of `python -m training.distributed` (the stage's flags come after `--`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=sorted(STAGE_MODULES))
    parser.add_argument("--gpus", type=lambda s: int(s) if s else None, default=None)
    parser.add_argument("--accelerate-config", default=None, help="configs/accelerate/*.yaml")
    parser.add_argument("--cpu-processes", type=int, default=None, help="gloo DDP on a CPU")
    parser.add_argument(
        "--accelerate-args",
        default="",
        help="more accelerate launch flags, e.g. '--num_machines 2 --machine_rank 0 "
        "--main_process_ip 10.0.0.1'",
    )
    return parser


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(this launcher's flags, the stage's flags): the stage's come after `--`."""
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1 :]
    return argv, []


def parse_args(argv: list[str] | None = None) -> LaunchConfig:
    """Command-line flags (default sys.argv) → LaunchConfig."""
    own, stage_args = split_argv(sys.argv[1:] if argv is None else argv)
    ns = make_parser().parse_args(own)
    return LaunchConfig(
        ns.stage,
        ns.gpus,
        ns.accelerate_config or None,
        ns.cpu_processes,
        ns.accelerate_args.split(),
        stage_args,
    )


def main(cfg: LaunchConfig) -> int:
    """Run the stage on the processes asked; returns its exit code. It reads no settings: the
    stage's own entry point does, in the child."""
    try:
        command, env = launch_command(
            cfg.stage,
            cfg.stage_args,
            cfg.gpus,
            cfg.accelerate_config,
            cfg.cpu_processes,
            cfg.accelerate_args,
        )
    except ValueError as error:
        log.error("%s", error)
        return 2
    if env or command[2] != STAGE_MODULES[cfg.stage]:
        log.info("launching %s", " ".join([*(f"{k}={v}" for k, v in env.items()), *command]))
    return subprocess.call(command, env={**os.environ, **env})


if __name__ == "__main__":
    setup_logging()
    raise SystemExit(main(parse_args()))
