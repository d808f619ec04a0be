"""Serve with Docker, on the official vLLM OpenAI image (NVIDIA GPU hosts).

    python -m serve.docker --stage aria-ft-dpo up     # make docker-serve-ft
    python -m serve.docker --stage base up            # make docker-serve
    python -m serve.docker stop                       # make docker-stop
    python -m serve.docker logs                       # make docker-logs

`up` builds serve/Dockerfile (FROM vllm/vllm-openai:v<the pinned vLLM version>) and runs it
detached, with the same server flags as `make serve` (built by serve.vllm_server.build_command):
data/models mounted read-only at /models, the Hugging Face cache mounted for Hub models, the
container's port 8000 published on VLLM_HOST:VLLM_PORT, and HF_TOKEN / VLLM_API_KEY passed by name
(`-e NAME`), so their values never appear on a command line or in a log.

The commands are built by pure functions and unit-tested; Docker itself is not run by the tests
(the CI and development machines have no Docker daemon and no GPU).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from aria.settings import STAGES, Settings, get_settings
from serve.vllm_server import ServeError, build_command, is_hub_id, shell_quote

# The vLLM version pinned in pyproject.toml (extra `gpu`); the image tag is v<version>.
VLLM_VERSION = "0.32.0"
IMAGE = f"aria-vllm:v{VLLM_VERSION}"
CONTAINER = "aria-vllm"
CONTAINER_PORT = 8000
CONTAINER_MODELS = "/models"
CONTAINER_HF_CACHE = "/root/.cache/huggingface"
DOCKERFILE = Path(__file__).with_name("Dockerfile")


@dataclass(frozen=True)
class DockerCommand:
    """A docker invocation and the environment variables it forwards by name."""

    argv: list[str]
    forwarded: tuple[str, ...] = ()

    def display(self) -> str:
        """The command as a shell line (secrets are passed by name, so nothing to mask)."""
        return " ".join(shell_quote(a) for a in self.argv)


def build_image_command() -> DockerCommand:
    """`docker build` of serve/Dockerfile, tagged with the pinned vLLM version."""
    return DockerCommand(
        [
            "docker",
            "build",
            "--build-arg",
            f"VLLM_VERSION=v{VLLM_VERSION}",
            "-t",
            IMAGE,
            "-f",
            str(DOCKERFILE),
            str(DOCKERFILE.parent),
        ]
    )


def container_model(settings: Settings, model: str) -> tuple[str, list[str]]:
    """The model path inside the container and the volume flags that make it visible there."""
    if is_hub_id(model):
        return model, []
    local = Path(model).resolve()
    models_root = (settings.aria_data_dir / "models").resolve()
    if local.is_relative_to(models_root):
        inside = f"{CONTAINER_MODELS}/{local.relative_to(models_root).as_posix()}"
        return inside, ["-v", f"{models_root}:{CONTAINER_MODELS}:ro"]
    return f"{CONTAINER_MODELS}/model", ["-v", f"{local}:{CONTAINER_MODELS}/model:ro"]


def build_run_command(settings: Settings, stage: str, gpus: str | None = "all") -> DockerCommand:
    """`docker run` of the image on a stage, with the server flags of `make serve`.

    Raises ModelMissingError (naming the make target) when the stage's folder is missing.
    """
    # The container listens on 0.0.0.0:8000; the host side is published on VLLM_HOST:VLLM_PORT.
    inner = settings.model_copy(
        update={"vllm_host": "0.0.0.0", "vllm_port": CONTAINER_PORT, "vllm_api_key": None}
    )
    server = build_command(inner, stage, "gpu" if gpus else "cpu")
    args = server.argv[3:]  # drop `python -m vllm.entrypoints.openai.api_server`
    model_at = args.index("--model") + 1
    args[model_at], volumes = container_model(settings, args[model_at])
    hf_cache = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    forwarded = ["HF_TOKEN", *server.env]
    if settings.vllm_api_key:
        forwarded.append("VLLM_API_KEY")  # vLLM reads it when --api-key is absent
    argv = ["docker", "run", "-d", "--rm", "--name", CONTAINER]
    if gpus:
        argv += ["--gpus", gpus, "--ipc=host"]
    argv += ["-p", f"{settings.vllm_host}:{settings.vllm_port}:{CONTAINER_PORT}"]
    argv += [*volumes, "-v", f"{hf_cache}:{CONTAINER_HF_CACHE}"]
    for name in forwarded:
        argv += ["-e", name]
    return DockerCommand([*argv, IMAGE, *args], forwarded=tuple(forwarded))


def forwarded_env(settings: Settings, command: DockerCommand) -> dict[str, str]:
    """The docker CLI's environment: ours plus the values of the variables it forwards by name."""
    values = {
        "HF_TOKEN": settings.hf_token.get_secret_value() if settings.hf_token else "",
        "VLLM_API_KEY": settings.api_key_value() if settings.vllm_api_key else "",
        "VLLM_CPU_KVCACHE_SPACE": str(settings.vllm_cpu_kvcache_space),
    }
    env = dict(os.environ)
    env.update({k: v for k, v in values.items() if k in command.forwarded and v})
    return env


def stop_command() -> DockerCommand:
    """`docker stop` of the container (run with --rm, so it is removed too)."""
    return DockerCommand(["docker", "stop", CONTAINER])


def logs_command() -> DockerCommand:
    """`docker logs -f` of the container."""
    return DockerCommand(["docker", "logs", "-f", CONTAINER])


@dataclass
class DockerConfig:
    """What `python -m serve.docker` does."""

    action: str = "up"
    stage: str = "aria-ft-dpo"
    gpus: str = "all"


def _run(command: DockerCommand, env: dict[str, str] | None = None) -> int:
    print(command.display(), flush=True)
    return subprocess.call(command.argv, env=env)


def main(cfg: DockerConfig) -> int:
    """Run the action; returns docker's exit code (2 when docker or the model is missing)."""
    if shutil.which("docker") is None:
        print(
            "error: the docker CLI is not on PATH; install Docker or use `make serve-ft`",
            file=sys.stderr,
        )
        return 2
    if cfg.action == "stop":
        return _run(stop_command())
    if cfg.action == "logs":
        return _run(logs_command())
    settings = get_settings()
    try:
        run = build_run_command(settings, cfg.stage, cfg.gpus or None)
    except ServeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    code = _run(build_image_command())
    if code != 0:
        return code
    code = _run(run, env=forwarded_env(settings, run))
    if code == 0:
        print(
            f"started {CONTAINER}: {settings.base_url} (`make docker-logs`, `make docker-stop`; "
            "`make health` once the model is loaded)"
        )
    return code


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="vLLM in Docker (official image, NVIDIA GPU)")
    parser.add_argument("action", choices=("up", "stop", "logs"))
    parser.add_argument("--stage", choices=STAGES, default=DockerConfig.stage)
    parser.add_argument(
        "--gpus", default=DockerConfig.gpus, help="docker --gpus value; '' for none"
    )
    raise SystemExit(main(DockerConfig(**vars(parser.parse_args()))))
