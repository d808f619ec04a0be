"""Which CUDA builds an NVIDIA driver runs, read from `nvidia-smi` (standard library only).

    >>> from scripts.cuda_driver import driver_version, wheel_set_for
    >>> wheel_set_for(driver_version(open("nvidia-smi.txt").read())).name
    'cu13'

torch 2.13.0 and vllm 0.32.0 from PyPI are CUDA 13 builds: they need driver >= 580.65.06. On an
older driver torch sees no GPU at all, and everything downstream fails in confusing ways (a CPU
conversion in fp32, "needs a GPU with bf16", a vLLM that does not start). PyTorch publishes 2.13.0
for CUDA 12.6 too, but vLLM has no CUDA 12 build that pairs with torch 2.13 (its CUDA 12 wheels
are +cu129, and torch 2.13 has no cu129 build), so the install refuses such a driver with the
fixes rather than installing engines that cannot run. `scripts/install.py` and
`scripts/check_gpu.py` both read this table.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

Version = tuple[int, ...]


@dataclass(frozen=True)
class WheelSet:
    """A set of engine builds and the oldest driver that runs it."""

    name: str
    cuda: str
    min_driver: Version
    installable: bool  # a torch + vLLM pair of this CUDA exists at the pinned versions


# NVIDIA's CUDA toolkit release notes (Linux x86_64): CUDA 13.0 needs 580.65.06; every CUDA 12.x
# build runs on 525.60.13 and newer through minor-version compatibility.
CUDA_13 = WheelSet("cu13", "13.0", (580, 65, 6), installable=True)
CUDA_12 = WheelSet("cu12", "12.x", (525, 60, 13), installable=False)
WHEEL_SETS = (CUDA_13, CUDA_12)  # newest first


def driver_version(nvidia_smi_output: str) -> Version | None:
    """The driver version in `nvidia-smi`'s header ("Driver Version: 550.54.15"), or None."""
    match = re.search(r"Driver Version:\s*([\d.]+)", nvidia_smi_output)
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


def show(version: Version) -> str:
    """550.54.15, as nvidia-smi writes it."""
    return ".".join(f"{p:02d}" if i == 2 else str(p) for i, p in enumerate(version))


def wheel_set_for(driver: Version) -> WheelSet | None:
    """The newest wheel set this driver runs; None when it runs none."""
    return next((w for w in WHEEL_SETS if driver >= w.min_driver), None)


def required_driver(torch_cuda: str | None) -> Version | None:
    """The oldest driver that runs a torch built for `torch_cuda` ("13.0", "12.6")."""
    if not torch_cuda:
        return None
    major = torch_cuda.split(".")[0]
    return next((w.min_driver for w in WHEEL_SETS if w.cuda.split(".")[0] == major), None)


def refusal(driver: Version) -> str:
    """Why the install stops on this driver, and the ways forward."""
    need = show(CUDA_13.min_driver)
    return (
        f"NVIDIA driver {show(driver)} runs CUDA {'12.x' if wheel_set_for(driver) else '< 12'} "
        f"builds only; torch 2.13.0 and vllm 0.32.0 are CUDA 13 builds and need driver >= {need} "
        "(there is no CUDA 12 vLLM build for torch 2.13). Fix one of:\n"
        f"  - upgrade the driver to >= {need} (e.g. apt install nvidia-driver-580, or your cloud's "
        "CUDA 13 image), then run `make install` again;\n"
        "  - on a data-center GPU (A10G, L4, A100, H100), install NVIDIA's CUDA forward "
        "compatibility package (cuda-compat-13-0) and put /usr/local/cuda-13.0/compat on "
        "LD_LIBRARY_PATH, then force the GPU profile: `ENGINE=gpu make install`;\n"
        "  - or train and serve the tiny profile on the CPU: `ENGINE=cpu make install`."
    )


def read_driver() -> Version | None:
    """This machine's driver version from `nvidia-smi`, or None (no NVIDIA driver)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        probe = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return driver_version(probe.stdout) if probe.returncode == 0 else None
