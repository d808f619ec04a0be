"""The install and check-gpu against recorded `nvidia-smi` outputs of drivers 535, 550, 570, 580."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.check_gpu import driver_check
from scripts.cuda_driver import CUDA_13, driver_version, required_driver, wheel_set_for
from scripts.install import engine_for_driver

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "tests" / "fixtures" / "nvidia_smi"
DRIVERS = sorted(p.stem for p in RECORDED.glob("*.txt"))


def fake_nvidia_smi(folder: Path, driver: str) -> dict[str, str]:
    """An `nvidia-smi` on PATH that prints the recorded output of `driver` (and `-L`'s list)."""
    script = folder / "nvidia-smi"
    recorded = RECORDED / f"{driver}.txt"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-L" ]; then echo "GPU 0: NVIDIA L4 (UUID: GPU-0)"; exit 0; fi\n'
        f"cat {recorded}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if k != "ENGINE"}
    return env | {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def test_every_recorded_driver_is_read():
    assert DRIVERS == ["535.183.01", "550.54.15", "570.124.06", "580.65.06"]
    for name in DRIVERS:
        version = driver_version((RECORDED / f"{name}.txt").read_text())
        assert version == tuple(int(p) for p in name.split("."))


@pytest.mark.parametrize("name", ["535.183.01", "550.54.15", "570.124.06"])
def test_a_cuda_12_driver_is_refused_with_the_driver_needed_and_the_fixes(name):
    driver = driver_version((RECORDED / f"{name}.txt").read_text())
    assert wheel_set_for(driver).cuda == "12.x"
    with pytest.raises(SystemExit) as stopped:
        engine_for_driver(driver)
    message = str(stopped.value)
    assert name in message and ">= 580.65.06" in message
    assert "cuda-compat-13-0" in message and "ENGINE=cpu make install" in message


def test_a_580_driver_gets_the_cuda_13_wheels():
    driver = driver_version((RECORDED / "580.65.06.txt").read_text())
    assert wheel_set_for(driver) is CUDA_13 and engine_for_driver(driver) == "gpu"


def test_check_gpu_says_whether_the_driver_runs_torchs_build():
    old, new = (550, 54, 15), (580, 65, 6)
    assert required_driver("13.0") == (580, 65, 6) and required_driver("12.6") == (525, 60, 13)
    assert not driver_check(old, "13.0").ok and "cuda-compat" in driver_check(old, "13.0").fix
    assert driver_check(new, "13.0").ok and driver_check(old, "12.6").ok
    assert not driver_check(new, None).ok  # a CPU torch beside a GPU: reinstall
    assert driver_check(None, "13.0") is None  # no NVIDIA driver: nothing to say


@pytest.mark.parametrize(("name", "code"), [("550.54.15", 1), ("580.65.06", 0)])
def test_the_install_reads_the_machines_nvidia_smi(tmp_path, name, code):
    env = fake_nvidia_smi(tmp_path, name)
    probe = "from scripts.install import detect_engine; print(detect_engine())"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == code, out.stderr
    if code:
        assert "need driver >= 580.65.06" in out.stderr and "Traceback" not in out.stderr
    else:
        assert out.stdout.strip().splitlines()[-1] == "gpu"


def test_check_gpu_prints_the_driver_and_the_torch_build(tmp_path):
    env = fake_nvidia_smi(tmp_path, "550.54.15")
    out = subprocess.run(
        [sys.executable, "-m", "scripts.check_gpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Driver   NVIDIA 550.54.15" in out.stdout
    assert "torch built for CUDA" in out.stdout  # a CPU build here: the check says to reinstall
