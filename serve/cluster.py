"""One vLLM server over several nodes, joined by Ray as vLLM documents it.

    python -m serve.cluster head                      # make ray-head    (on the head node)
    python -m serve.cluster worker --address 10.0.0.1 # make ray-worker HEAD=10.0.0.1 (each other node)
    python -m serve.cluster serve --stage aria-ft-dpo # make serve-cluster (on the head node)
    python -m serve.cluster stop                      # make ray-stop    (on every node)

vLLM's multi-node recipe (docs: serving/parallelism_scaling, examples multi-node-serving.sh): start
a Ray head on one node, join every other node to it with `ray start --address`, then start the
server on the head with `--distributed-executor-backend ray`, VLLM_TENSOR_PARALLEL_SIZE set to the
GPUs per node and VLLM_PIPELINE_PARALLEL_SIZE to the number of nodes. `serve` checks that the
cluster has that many GPUs before it starts, and otherwise runs `make serve`'s launcher on a copy
of the settings with the ray backend forced (os.environ is left as it is). Every node needs the
same model folder at the same path (or a Hub id) and the same Python environment, with `ray`
installed (`pip install ray`; not in the CPU profile).

The commands are built by pure functions and unit-tested; Ray itself is not run by the tests.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
from dataclasses import dataclass

from aria.logs import setup_logging
from aria.settings import STAGES, Settings, get_settings
from serve.command import shell_quote
from serve.vllm_server import ServeConfig
from serve.vllm_server import main as serve_main

RAY_MISSING = (
    "the `ray` command is not on PATH: install Ray on every node (`.venv/bin/pip install ray`), "
    "the same version everywhere"
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayCommand:
    """A `ray` invocation (no secret in it)."""

    argv: list[str]

    def display(self) -> str:
        """The command as a shell line."""
        return " ".join(shell_quote(a) for a in self.argv)


def head_command(settings: Settings, block: bool = False) -> RayCommand:
    """`ray start --head` on RAY_PORT, listening on every interface so the workers can join."""
    argv = ["ray", "start", "--head", f"--port={settings.ray_port}", "--node-ip-address=0.0.0.0"]
    return RayCommand([*argv, "--block"] if block else argv)


def worker_command(settings: Settings, head_address: str) -> RayCommand:
    """`ray start --address=<head>:RAY_PORT --block`: join this node to the head and stay up."""
    if not head_address or head_address.count(":") == 1:  # empty, or host:port
        raise ValueError(
            f"--address {head_address!r}: give the head node's IP or host name without a port "
            "(the port is RAY_PORT)"
        )
    return RayCommand(["ray", "start", f"--address={head_address}:{settings.ray_port}", "--block"])


def stop_command() -> RayCommand:
    """`ray stop`: leave the cluster (on a worker) or end it (on the head)."""
    return RayCommand(["ray", "stop"])


def gpus_needed(settings: Settings) -> int:
    """GPUs one multi-node server takes: tensor × pipeline × data parallel sizes."""
    return (
        settings.vllm_tensor_parallel_size
        * settings.vllm_pipeline_parallel_size
        * settings.vllm_data_parallel_size
    )


def check_cluster_gpus(settings: Settings, cluster_gpus: float) -> None:
    """Raise ValueError naming the variables when the Ray cluster has fewer GPUs than needed."""
    need = gpus_needed(settings)
    if cluster_gpus < need:
        raise ValueError(
            f"the Ray cluster has {cluster_gpus:g} GPU(s) and the server needs {need} "
            f"(VLLM_TENSOR_PARALLEL_SIZE={settings.vllm_tensor_parallel_size} × "
            f"VLLM_PIPELINE_PARALLEL_SIZE={settings.vllm_pipeline_parallel_size} × "
            f"VLLM_DATA_PARALLEL_SIZE={settings.vllm_data_parallel_size}): join more nodes with "
            "`make ray-worker HEAD=<head ip>` or lower those sizes"
        )


def cluster_gpu_count(settings: Settings) -> float:
    """GPUs the running Ray cluster offers (ray.cluster_resources()); imports ray lazily."""
    import ray

    ray.init(address=f"127.0.0.1:{settings.ray_port}", logging_level="ERROR")
    try:
        return float(ray.cluster_resources().get("GPU", 0))
    finally:
        ray.shutdown()


@dataclass
class ClusterConfig:
    """What `python -m serve.cluster` does."""

    action: str
    address: str | None = None
    stage: str = "aria-ft-dpo"


def _run(command: RayCommand) -> int:
    log.info("%s", command.display())
    return subprocess.call(command.argv)


def main(cfg: ClusterConfig, settings: Settings) -> int:
    """Run the action on `settings`; returns its exit code (2 when Ray or an argument is
    missing)."""
    if shutil.which("ray") is None:
        log.error("%s", RAY_MISSING)
        return 2
    if cfg.action == "head":
        return _run(head_command(settings))
    if cfg.action == "stop":
        return _run(stop_command())
    if cfg.action == "worker":
        try:
            return _run(worker_command(settings, cfg.address or ""))
        except ValueError as error:
            log.error("%s", error)
            return 2
    try:
        check_cluster_gpus(settings, cluster_gpu_count(settings))
    except ValueError as error:
        log.error("%s", error)
        return 2
    # A copy with the ray backend: the server gets `--distributed-executor-backend ray`.
    ray_settings = settings.model_copy(update={"vllm_distributed_executor_backend": "ray"})
    return serve_main(ServeConfig(stage=cfg.stage), ray_settings)


def make_parser() -> argparse.ArgumentParser:
    """The command line of `python -m serve.cluster`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("head", "worker", "serve", "stop"))
    parser.add_argument("--address", help="the head node's IP or host name (worker)")
    parser.add_argument("--stage", choices=STAGES, default=ClusterConfig.stage)
    return parser


def parse_args(argv: list[str] | None = None) -> ClusterConfig:
    """Command-line flags → ClusterConfig."""
    return ClusterConfig(**vars(make_parser().parse_args(argv)))


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    raise SystemExit(main(parse_args(), settings))
