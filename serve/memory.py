"""Memory of a serving process tree: GPU memory through NVML where there is a GPU, else RSS.

    >>> from serve.memory import serving_memory
    >>> serving_memory(pid)          # the vLLM API server's pid (data/run/vllm-<port>.pid)
    {'gb': 1.53, 'source': 'cpu_rss', 'pid': 4242, 'processes': 3}

vLLM's API server starts its EngineCore (and, with tensor parallel, its workers) as children, so
the figure covers the whole tree. On a GPU it is the sum of NVML's per-process used GPU memory
over the tree (what the model, its KV cache and CUDA graphs hold); where NVML lists no process of
the tree (a container without the host's pid namespace) it is the memory used on the cards, an
upper bound (`gpu_device_used`); a GPU engine never falls back to a CPU figure: without NVML the
figure is missing and the gate fails, saying why. On a CPU it is the resident memory (RSS) of the
tree. The seed's "serving VRAM < 10 GB" is checked on this figure by the benchmark's gate
(evaluation.gate, `serving` in configs/release_gate.yaml). GB here are 10^9 bytes, as in the seed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import urlsplit

import psutil

from aria.settings import Settings

Source = Literal["gpu_nvml", "gpu_device_used", "cpu_rss"]
GB = 1e9
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its live descendants; raises psutil.NoSuchProcess if `pid` is gone."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_rss_bytes(processes: Iterable[psutil.Process]) -> int:
    """Sum of the resident memory of `processes` (those that exited meanwhile count 0)."""
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


@contextmanager
def nvml_gpus() -> Iterator[tuple[Any, list[Any]] | None]:
    """(pynvml, a handle per GPU) while NVML is initialised; None without NVML or a driver."""
    try:
        import pynvml
    except ImportError:
        yield None
        return
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        yield None
        return
    try:
        count = pynvml.nvmlDeviceGetCount()
        yield pynvml, [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    finally:
        pynvml.nvmlShutdown()


def nvml_process_bytes(pids: set[int]) -> int | None:
    """GPU memory NVML reports for `pids` over every GPU; None without NVML or a GPU, or when
    NVML lists none of them."""
    with nvml_gpus() as gpus:
        if gpus is None:
            return None
        nvml, handles = gpus
        used = [
            proc.usedGpuMemory
            for handle in handles
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            if proc.pid in pids and proc.usedGpuMemory is not None
        ]
        return sum(used) if used else None


class GpuMemoryUnmeasured(RuntimeError):
    """A GPU server whose memory NVML cannot report; the message says why and what to do."""


def nvml_device_used_bytes() -> int | None:
    """Memory used on every GPU, all processes together; None without NVML or a GPU."""
    with nvml_gpus() as gpus:
        if gpus is None or not gpus[1]:
            return None
        nvml, handles = gpus
        return sum(nvml.nvmlDeviceGetMemoryInfo(h).used for h in handles)


def serving_memory(pid: int, engine: str = "cpu") -> dict[str, Any] | None:
    """{gb, source, pid, processes} for the server whose API process is `pid`; None if gone.

    GPU memory when NVML sees any process of the tree on a GPU; on a GPU engine otherwise the
    cards' used memory (an upper bound), or GpuMemoryUnmeasured; on a CPU engine the tree's RSS.
    """
    try:
        processes = process_tree(pid)
    except psutil.NoSuchProcess:
        return None
    pids = {p.pid for p in processes}
    used = nvml_process_bytes(pids)
    source: Source = "gpu_nvml"
    if used is None and engine == "gpu":
        used, source = nvml_device_used_bytes(), "gpu_device_used"
        if used is None:
            raise GpuMemoryUnmeasured(
                "the server runs on a GPU but NVML answers nothing (no nvidia-ml-py, or no "
                "driver access from this process): install nvidia-ml-py or run the benchmark "
                "where nvidia-smi works; a CPU figure would say nothing about the GPU"
            )
    elif used is None:
        used, source = tree_rss_bytes(processes), "cpu_rss"
    return {"gb": round(used / GB, 3), "source": source, "pid": pid, "processes": len(pids)}


def local_server_pid(settings: Settings, base_url: str) -> int | None:
    """The pid of our vLLM server behind `base_url` (its data/run/vllm-<port>.pid), when that
    URL is on this machine and the process runs; None otherwise."""
    from serve.process import is_vllm_process, pid_alive, pid_path, read_pid

    url = urlsplit(base_url)
    if url.hostname not in LOOPBACK or url.port is None:
        return None
    pid = read_pid(pid_path(settings, url.port))
    if pid is None or not pid_alive(pid) or not is_vllm_process(pid):
        return None
    return pid
