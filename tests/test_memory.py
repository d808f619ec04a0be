"""Serving memory: the process-tree reader on real child processes, and the gate's check on it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from aria.summary import Gate
from evaluation import gate
from serve import memory
from serve.process import pid_path
from tests.test_serving import make_settings

ROOT = Path(__file__).resolve().parents[1]
MB = 2**20
# A parent holding 64 MiB that starts a child holding 96 MiB; both print "ready" and sleep.
# The trailing argument puts "vllm" in the command line, as is_vllm_process expects.
HOLDER = """
import subprocess, sys, time
block = bytearray({size}) ; block[::4096] = b"x" * len(block[::4096])
if {spawn}:
    child = subprocess.Popen([sys.executable, "-c", {child!r}], stdout=subprocess.PIPE)
    child.stdout.readline()
print("ready", flush=True)
time.sleep(60)
"""


def holder_source(size: int, child_size: int | None) -> str:
    child = HOLDER.format(size=child_size, spawn=False, child="") if child_size else ""
    return HOLDER.format(size=size, spawn=bool(child_size), child=child)


@pytest.fixture
def server_tree():
    """A real two-process tree: 64 MiB in the parent, 96 MiB in its child."""
    process = subprocess.Popen(
        [sys.executable, "-c", holder_source(64 * MB, 96 * MB), "fake-vllm"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout.readline().strip() == b"ready"
    yield process
    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    process.kill()
    process.wait()


def test_the_figure_covers_the_whole_process_tree(server_tree):
    figure = memory.serving_memory(server_tree.pid)
    assert figure["source"] == "cpu_rss"  # no NVML here
    assert figure["processes"] == 2
    root_only = psutil.Process(server_tree.pid).memory_info().rss
    assert figure["gb"] * 1e9 > root_only + 90 * MB  # the child's 96 MiB are counted
    assert 0.16 < figure["gb"] < 1.0


def test_a_gone_process_has_no_figure():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert memory.serving_memory(process.pid) is None


def test_the_gate_checks_the_seeds_10_gb_wherever_a_figure_exists():
    thresholds = gate.serving_thresholds(
        yaml.safe_load((ROOT / "configs" / "release_gate.yaml").read_text())
    )
    assert [(t["metric"], t["op"], t["target"]) for t in thresholds] == [
        ("serving_memory_gb", "<", 10)
    ]
    small = {"gb": 1.4, "source": "cpu_rss", "pid": 1, "processes": 3}
    big = {"gb": 12.5, "source": "gpu_nvml", "pid": 1, "processes": 2}
    assert gate.evaluate_serving_gate(small, thresholds)["passed"] is True
    failed = gate.evaluate_serving_gate(big, thresholds)
    assert failed["passed"] is False
    assert "serving_memory_gb = 12.5 misses < 10" in failed["failures"][0]["message"]
    unmeasured = gate.evaluate_serving_gate(None, thresholds)
    assert unmeasured["passed"] is None and "not measured" in unmeasured["note"]


def test_the_local_server_is_found_through_its_pid_file(tmp_path, server_tree):
    settings = make_settings(tmp_path)
    path = pid_path(settings, 8123)
    path.parent.mkdir(parents=True)
    path.write_text(f"{server_tree.pid}\n")
    assert memory.local_server_pid(settings, "http://127.0.0.1:8123/v1") == server_tree.pid
    assert memory.local_server_pid(settings, "http://10.1.2.3:8123/v1") is None  # remote
    assert memory.local_server_pid(settings, "http://127.0.0.1:8124/v1") is None  # no pid file
    gate_file = ROOT / "configs" / "release_gate.yaml"
    result = gate.serving_gate(settings, "http://127.0.0.1:8123/v1", gate_file)
    assert result["passed"] is True and result["memory"]["processes"] == 2


def test_the_summary_schema_reads_the_gate_with_serving_memory():
    base = {
        "model": "aria-ft",
        "role": "dpo",
        "config": "configs/release_gate.yaml",
        "profile": "tiny",
        "bodies": ["seed"],
        "overridden": [],
        "passed": True,
        "by_body": {"seed": True},
        "checked": [],
        "failures": [],
    }
    figure = {"gb": 1.5, "source": "cpu_rss", "pid": 4, "processes": 3}
    read = Gate.from_dict({**base, "serving_memory": figure, "serving_note": "cpu_rss of pid 4"})
    assert read.to_dict()["serving_memory"] == figure
    assert "serving_memory" not in Gate.from_dict(base).to_dict()  # older summaries still read


def test_rss_of_exited_processes_counts_zero():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    handle = psutil.Process(process.pid)
    process.kill()
    process.wait()
    time.sleep(0.1)
    assert memory.tree_rss_bytes([handle]) == 0


def test_on_a_gpu_the_figure_is_nvmls_per_process_memory_of_the_tree(server_tree, monkeypatch):
    """NVML's branch, with a stand-in pynvml: two GPUs, the tree's processes on both, others not."""
    import types

    child = psutil.Process(server_tree.pid).children()[0].pid
    running = {
        0: [(server_tree.pid, 3 * 10**9), (999_999, 50 * 10**9)],  # another job's process
        1: [(child, 2 * 10**9)],
    }
    fake = types.SimpleNamespace(
        NVMLError=RuntimeError,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [
            types.SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in running[h]
        ],
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    figure = memory.serving_memory(server_tree.pid)
    assert figure["source"] == "gpu_nvml"
    assert figure["gb"] == 5.0


def fake_nvml(running: dict[int, list[tuple[int, int]]], used: dict[int, int]):
    """A stand-in pynvml: per-GPU compute processes (pid, bytes) and used memory per GPU."""
    import types

    return types.SimpleNamespace(
        NVMLError=RuntimeError,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: len(used),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [
            types.SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in running.get(h, [])
        ],
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=used[h]),
    )


def test_a_gpu_server_nvml_cannot_attribute_is_measured_on_the_card_never_on_the_cpu(
    server_tree, monkeypatch
):
    """In a container NVML lists the host's pids, not ours: the figure is the card's used memory
    (an upper bound), not the tree's RSS."""
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml({0: [(999_999, 9 * 10**9)]}, {0: 8.4e9}))
    figure = memory.serving_memory(server_tree.pid, engine="gpu")
    assert figure["source"] == "gpu_device_used" and figure["gb"] == 8.4
    # A CPU engine with the same NVML keeps its RSS figure.
    assert memory.serving_memory(server_tree.pid, engine="cpu")["source"] == "cpu_rss"


def test_a_gpu_server_without_nvml_fails_the_gate_with_the_reason(server_tree, monkeypatch):
    from evaluation.gate import unmeasured_serving_gate

    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    with pytest.raises(memory.GpuMemoryUnmeasured, match="NVML") as caught:
        memory.serving_memory(server_tree.pid, engine="gpu")
    thresholds = [{"metric": "serving_memory_gb", "op": "<", "target": 10, "why": "seed"}]
    gate = unmeasured_serving_gate(str(caught.value), thresholds)
    assert gate["passed"] is False
    assert "was not measured" in gate["failures"][0]["message"]
    assert "NVML" in gate["failures"][0]["message"] and "CPU figure" in gate["note"]
