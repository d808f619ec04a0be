"""The GPU check: every stage of the medgemma path on one GPU, timed, with its peak GPU memory.

    python -m scripts.gpu_check                   # make gpu-check (one H100: about 10 minutes)
    python -m scripts.gpu_check --dry-run         # the stages and their commands, nothing run
    python -m scripts.gpu_check --out-dir /tmp/c  # keep the scratch folder and the JSON there

Needs no network and no Hub token: the data are generated, the models built locally.

1. MedGemma's CPU twin (tiny/twin.py) through `convert-base`, SFT and DPO with the
   medgemma recipes, shrunk to a few steps: the chain on CUDA, bf16 included.
2. A random-init model with MedGemma 4B's text dimensions (7.8 GB of bf16 weights, the 262k
   vocabulary) as the medgemma base, through SFT (the recipe's batch, `--sft-steps` steps), its
   merge, parity check and quick eval, DPO and its merge, then served by vLLM with the memory plan
   and benchmarked on a few requests (a random model writes until max_tokens: the latency is the
   engine's, not the product's).

Each stage runs as its own process, the command a user types; a sampler reads the GPU's used
memory through NVML every 0.1 s (on a CPU: the process tree's RSS). The table goes to stdout with
the SFT tokens/s, and the last line is JSON (also written to gpu_check.json in the out folder).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from aria.logs import setup_logging

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TINY_BASE = ROOT / "tiny" / "base"  # committed: the twin's language model, the tokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
SAMPLE_S = 0.1
# The medgemma recipes shrunk to a handful of steps (the twin) or to `steps` (MedGemma's dims).
TWIN_ARGS = [
    *("--max_steps", "2", "--per_device_train_batch_size", "1"),
    *(
        "--gradient_accumulation_steps",
        "1",
        "--eval_size",
        "2",
        "--per_device_eval_batch_size",
        "2",
    ),
    *("--eval_steps", "2", "--save_steps", "2", "--quick_eval_size", "2", "--disable_tqdm", "true"),
]


def big_args(steps: int, quick_eval: int) -> list[str]:
    """The recipe's batch and sequence length, `steps` steps, a small held-out slice."""
    return [
        *("--max_steps", str(steps), "--eval_size", "8", "--eval_steps", str(steps)),
        *("--save_steps", str(steps), "--logging_steps", "5"),
        *("--quick_eval_size", str(quick_eval), "--disable_tqdm", "true"),
    ]


@dataclass
class Stage:
    """One command of the check, with the environment it runs in."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


# --small: the 4B stages at a few million parameters, to try the orchestration on a CPU.
SMALL_DIMS = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "head_dim": 32}


def stages(
    work: Path, sft_steps: int, dpo_steps: int, cpu: bool, serve: bool = True, small: bool = False
) -> list[Stage]:
    """The check's stages in order: the twin chain, then MedGemma 4B's dimensions (served and
    benchmarked unless `serve` is False: where vLLM is not installed)."""
    twin, big = work / "twin", work / "medgemma-dims"
    cpu_flag = ["--use_cpu", "true"] if cpu else []
    twin_env = {"ARIA_PROFILE": "medgemma", "ARIA_DATA_DIR": str(twin)}
    big_env = {"ARIA_PROFILE": "medgemma", "ARIA_DATA_DIR": str(big), "VLLM_PORT": "8091"}
    datasets = ["-m", "preparation.generate_datasets"]
    build_big = (
        "import sys; from scripts.gpu_check import SMALL_DIMS, build_4b; "
        f"build_4b(sys.argv[1], SMALL_DIMS if {small} else None)"
    )
    chain = [
        Stage("datasets", python(*datasets, "--out-dir", str(twin)), twin_env),
        Stage("datasets (4B)", python(*datasets, "--out-dir", str(big)), big_env),
        Stage(
            "twin: build",
            python(
                *("-m", "tiny.twin", "--out-dir", str(work / "medgemma-twin")),
                *("--text-base", str(TINY_BASE)),
            ),
            twin_env,
        ),
        Stage(
            "twin: convert-base",
            python("-m", "training.convert_base", "--source", str(work / "medgemma-twin")),
            twin_env,
        ),
        Stage(
            "twin: SFT + merge", python("-m", "training.train_sft", *TWIN_ARGS, *cpu_flag), twin_env
        ),
        Stage(
            "twin: DPO + merge", python("-m", "training.train_dpo", *TWIN_ARGS, *cpu_flag), twin_env
        ),
        Stage(
            "4B: random init",
            python("-c", build_big, str(big / "models" / "medgemma" / "base")),
            big_env,
        ),
        Stage(
            "4B: SFT + merge + parity + quick eval",
            python("-m", "training.train_sft", *big_args(sft_steps, 8), *cpu_flag),
            big_env,
        ),
        Stage(
            "4B: DPO + merge",
            python("-m", "training.train_dpo", *big_args(dpo_steps, 0), *cpu_flag),
            big_env,
        ),
    ]
    if not serve:
        return chain
    return [
        *chain,
        Stage(
            "4B: serve (vLLM, memory plan)",
            python("-m", "serve.vllm_server", "--stage", "aria-ft-dpo", "--background"),
            big_env,
        ),
        Stage(
            "4B: benchmark (8 requests)",
            python(
                *("-m", "scripts.benchmark", "--limit", "8", "--no-outside", "--bodies", "seed"),
                *("--report-sample", "0", "--no-plots", "--warmup", "1"),
                *("--reports-dir", str(work / "reports")),
            ),
            big_env,
        ),
        Stage("4B: serve-stop", python("-m", "serve.vllm_server", "--stop"), big_env),
    ]


def build_4b(out_dir: str, dims: dict | None = None) -> Path:
    """A random-init Gemma3ForCausalLM with MedGemma 4B's text dimensions (or `dims`) in bf16, with
    the tiny base's tokenizer and chat template (its ids fit any vocabulary), as a medgemma base."""
    import shutil

    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GenerationConfig

    from training.bench_training import gemma3_4b_text_config

    values = {**gemma3_4b_text_config(pad_id=0, eos_id=1, bos_id=2).to_dict(), **(dims or {})}
    layers = values["num_hidden_layers"]
    values["layer_types"] = [  # Gemma 3's pattern, the last layer global at any depth
        "full_attention" if (i + 1) % 6 == 0 or i == layers - 1 else "sliding_attention"
        for i in range(layers)
    ]
    config = Gemma3TextConfig(**values)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Gemma3ForCausalLM(config).to(torch.bfloat16)
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(TINY_BASE / name, out / name)
    tiny = GenerationConfig.from_pretrained(TINY_BASE)
    GenerationConfig(
        eos_token_id=tiny.eos_token_id, bos_token_id=2, pad_token_id=0
    ).save_pretrained(out)
    return out


class PeakMemory:
    """Samples used GPU memory (NVML, every GPU) or, without NVML, the RSS of a process tree."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._pid: int | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml if count else None
        except Exception:  # no nvidia-ml-py, no driver: the CPU figure
            self._nvml, self._handles = None, []

    @property
    def source(self) -> str:
        return "gpu_nvml" if self._nvml else "cpu_rss"

    def read(self) -> int:
        if self._nvml:
            return sum(self._nvml.nvmlDeviceGetMemoryInfo(h).used for h in self._handles)
        if self._pid is None:
            return 0
        try:
            root = psutil.Process(self._pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for process in tree:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return total

    def watch(self, pid: int) -> threading.Thread:
        """Start sampling for the process `pid`; `stop()` ends it."""
        self._pid, self.peak = pid, self.read()
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(SAMPLE_S):
                self.peak = max(self.peak, self.read())

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return thread

    def stop(self, thread: threading.Thread) -> int:
        self._stop.set()
        thread.join()
        return self.peak


def run_stage(stage: Stage, memory: PeakMemory, log_dir: Path) -> dict:
    """Run one stage (its output to log_dir/<n>.log); its wall time, peak memory and exit code."""
    log = log_dir / (stage.name.replace(" ", "_").replace(":", "").replace("/", "") + ".log")
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            stage.argv, cwd=ROOT, env={**os.environ, **stage.env}, stdout=out, stderr=out
        )
        sampler = memory.watch(process.pid)
        code = process.wait()
        peak = memory.stop(sampler)
    return {
        "stage": stage.name,
        "seconds": round(time.monotonic() - started, 1),
        "peak_gb": round(peak / 1e9, 2),
        "memory_source": memory.source,
        "exit_code": code,
        "log": str(log),
    }


def sft_tokens_per_second(work: Path) -> float | None:
    """TRL's count of trained tokens over the train runtime of the 4B SFT run (its
    log_history.json; the runtime includes the held-out evaluation)."""
    path = work / "medgemma-dims" / "checkpoints" / "medgemma" / "sft" / "log_history.json"
    if not path.exists():
        return None
    history = json.loads(path.read_text())
    keys = ("num_tokens", "eval_num_tokens")  # eval rows carry the trained count too
    tokens = max((row.get(k, 0) for row in history for k in keys), default=0)
    runtime = next((row["train_runtime"] for row in history if "train_runtime" in row), None)
    return round(tokens / runtime, 1) if tokens and runtime else None


def table(rows: list[dict]) -> str:
    lines = [f"{'stage':<40} {'time':>9} {'peak memory':>14}  exit"]
    for r in rows:
        peak = f"{r['peak_gb']:.2f} GB"
        lines.append(f"{r['stage']:<40} {r['seconds']:>8.1f}s {peak:>14}  {r['exit_code']}")
    return "\n".join(lines)


@dataclass
class GpuCheckConfig:
    """Where the check works, how long the 4B stages train, and which stages run."""

    out_dir: Path | None = None  # default: a temporary folder
    sft_steps: int = 20
    dpo_steps: int = 8
    dry_run: bool = False
    no_serve: bool = False
    small: bool = False


def parse_args(argv: list[str] | None = None) -> GpuCheckConfig:
    """Command-line flags → GpuCheckConfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--sft-steps", type=int, default=20)
    parser.add_argument("--dpo-steps", type=int, default=8)
    parser.add_argument("--dry-run", action="store_true", help="list the stages; run nothing")
    parser.add_argument("--no-serve", action="store_true", help="skip vLLM (not installed there)")
    parser.add_argument("--small", action="store_true", help="small dims: the stages on a CPU")
    return GpuCheckConfig(**vars(parser.parse_args(argv)))


def main(cfg: GpuCheckConfig) -> int:
    """Run the stages in order, stopping at the first that fails; print the table and JSON. It
    reads no settings: each stage's command reads its own, from the environment it is given."""
    work = cfg.out_dir or Path(tempfile.mkdtemp(prefix="aria-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    memory = PeakMemory()
    cpu = memory.source == "cpu_rss"
    plan = stages(work, cfg.sft_steps, cfg.dpo_steps, cpu, not cfg.no_serve, cfg.small)
    if cfg.dry_run:
        for stage in plan:
            env = " ".join(f"{k}={v}" for k, v in sorted(stage.env.items()))
            print(f"{stage.name}: {env} {' '.join(stage.argv)}")
        return 0
    rows = []
    for stage in plan:
        rows.append(run_stage(stage, memory, work))
        log.info("%s: %s s, %s GB", rows[-1]["stage"], rows[-1]["seconds"], rows[-1]["peak_gb"])
        if rows[-1]["exit_code"] not in (0, 1) or (
            rows[-1]["exit_code"] == 1 and "benchmark" not in stage.name  # a random model's gate
        ):
            break
    result = {
        "stages": rows,
        "sft_tokens_per_second": sft_tokens_per_second(work),
        "memory_source": memory.source,
        "passed": all(r["exit_code"] == 0 or "benchmark" in r["stage"] for r in rows)
        and len(rows) == len(plan),
    }
    print(table(rows))
    print(f"SFT tokens/s (4B dims, the recipe's batch): {result['sft_tokens_per_second']}")
    (work / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    setup_logging()
    raise SystemExit(main(parse_args()))
