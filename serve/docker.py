"""Serve with Docker, on the official vLLM OpenAI image (NVIDIA GPU hosts).

    python -m serve.docker --stage aria-ft-dpo up     # make docker-serve-ft
    python -m serve.docker --stage base up            # make docker-serve
    python -m serve.docker stop                       # make docker-stop
    python -m serve.docker logs                       # make docker-logs
    python -m serve.docker --replicas 2 compose-up    # make docker-replicas REPLICAS=2
    python -m serve.docker compose-down               # make docker-replicas-stop

`up` builds serve/Dockerfile (FROM vllm/vllm-openai:v<the pinned vLLM version>) and runs it
detached, with the same server flags as `make serve` (built by serve.command.build_command):
data/models mounted read-only at /models, the Hugging Face cache mounted for Hub models, the
container's port 8000 published on VLLM_HOST:VLLM_PORT, and HF_TOKEN / VLLM_API_KEY passed by name
(`-e NAME`), so their values never appear on a command line or in a log.

`compose-up` writes data/run/compose/{compose.yaml,nginx.conf}: N replicas of that server, each
on its own GPUs (VLLM_TENSOR_PARALLEL_SIZE × VLLM_PIPELINE_PARALLEL_SIZE × VLLM_DATA_PARALLEL_SIZE
cards by device id), behind one nginx on VLLM_HOST:VLLM_PORT (least connections).

The commands are built by pure functions and unit-tested; Docker itself is not run by the tests
(the CI and development machines have no Docker daemon and no GPU).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from aria.logs import setup_logging
from aria.settings import STAGES, Settings, get_settings
from serve.command import ServeError, build_command, is_hub_id, shell_quote

log = logging.getLogger(__name__)

# The vLLM version pinned in pyproject.toml (extra `gpu`); the image tag is v<version>.
VLLM_VERSION = "0.32.0"
IMAGE = f"aria-vllm:v{VLLM_VERSION}"
CONTAINER = "aria-vllm"
CONTAINER_PORT = 8000
CONTAINER_MODELS = "/models"
CONTAINER_HF_CACHE = "/root/.cache/huggingface"
NGINX_IMAGE = "nginx:1.27-alpine"
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


@dataclass(frozen=True)
class ContainerServer:
    """The server inside a container: its arguments, volumes and forwarded variable names."""

    args: list[str]
    volumes: list[str]
    forwarded: list[str]


def container_server(settings: Settings, stage: str, gpu: bool) -> ContainerServer:
    """The image's arguments for a stage (the flags of `make serve`), its volumes, its env names.

    Raises ModelMissingError (naming the make target) when the stage's folder is missing.
    """
    # The container listens on 0.0.0.0:8000; the host side is published on VLLM_HOST:VLLM_PORT.
    inner = settings.model_copy(
        update={"vllm_host": "0.0.0.0", "vllm_port": CONTAINER_PORT, "vllm_api_key": None}
    )
    server = build_command(inner, stage, "gpu" if gpu else "cpu")
    args = server.argv[3:]  # drop `python -m vllm.entrypoints.openai.api_server`
    model_at = args.index("--model") + 1
    args[model_at], volumes = container_model(settings, args[model_at])
    hf_cache = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    forwarded = ["HF_TOKEN", *server.env]
    if settings.vllm_api_key:
        forwarded.append("VLLM_API_KEY")  # vLLM reads it when --api-key is absent
    return ContainerServer(args, [*volumes, "-v", f"{hf_cache}:{CONTAINER_HF_CACHE}"], forwarded)


def build_run_command(settings: Settings, stage: str, gpus: str | None = "all") -> DockerCommand:
    """`docker run` of the image on a stage, with the server flags of `make serve`.

    Raises ModelMissingError (naming the make target) when the stage's folder is missing.
    """
    server = container_server(settings, stage, bool(gpus))
    args, volumes, forwarded = server.args, server.volumes, server.forwarded
    argv = ["docker", "run", "-d", "--rm", "--name", CONTAINER]
    if gpus:
        argv += ["--gpus", gpus, "--ipc=host"]
    argv += ["-p", f"{settings.vllm_host}:{settings.vllm_port}:{CONTAINER_PORT}"]
    argv += volumes
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


def gpus_per_replica(settings: Settings) -> int:
    """GPUs one replica takes: tensor × pipeline × data parallel sizes."""
    return (
        settings.vllm_tensor_parallel_size
        * settings.vllm_pipeline_parallel_size
        * settings.vllm_data_parallel_size
    )


def _volume_specs(flags: list[str]) -> list[str]:
    """`-v a:b -v c:d` → [a:b, c:d] (compose's volume list)."""
    return [flags[i + 1] for i in range(0, len(flags), 2) if flags[i] == "-v"]


def render_compose(settings: Settings, stage: str, replicas: int) -> dict:
    """A compose document: `replicas` vLLM servers (each on its own GPUs) behind one nginx.

    Replica i gets GPUs i·g … i·g+g-1 (g = gpus_per_replica) by device id, so no two replicas
    share a card; nginx publishes VLLM_HOST:VLLM_PORT and spreads calls by least connections.
    """
    if replicas < 1:
        raise ValueError(f"REPLICAS={replicas}: give at least 1 replica")
    server = container_server(settings, stage, gpu=True)
    per = gpus_per_replica(settings)
    services: dict[str, dict] = {}
    for i in range(replicas):
        devices = [str(d) for d in range(i * per, (i + 1) * per)]
        services[f"vllm-{i}"] = {
            "image": IMAGE,
            "command": server.args,
            "ipc": "host",
            "volumes": _volume_specs(server.volumes),
            "environment": list(server.forwarded),  # names only: values come from the host
            "deploy": {
                "resources": {
                    "reservations": {
                        "devices": [
                            {"driver": "nvidia", "device_ids": devices, "capabilities": ["gpu"]}
                        ]
                    }
                }
            },
            "restart": "unless-stopped",
        }
    services["balancer"] = {
        "image": NGINX_IMAGE,
        "ports": [f"{settings.vllm_host}:{settings.vllm_port}:80"],
        "volumes": ["./nginx.conf:/etc/nginx/conf.d/default.conf:ro"],
        "depends_on": [f"vllm-{i}" for i in range(replicas)],
        "restart": "unless-stopped",
    }
    return {"name": "aria-vllm", "services": services}


def render_nginx_conf(replicas: int) -> str:
    """nginx in front of the replicas: least connections, no buffering (streamed answers)."""
    upstreams = "\n".join(f"    server vllm-{i}:{CONTAINER_PORT};" for i in range(replicas))
    return (
        "# Written by `python -m serve.docker compose`: one upstream per vLLM replica.\n"
        "upstream vllm {\n    least_conn;\n"
        f"{upstreams}\n"
        "    keepalive 32;\n}\n"
        "server {\n    listen 80;\n"
        "    location / {\n"
        "        proxy_pass http://vllm;\n"
        "        proxy_http_version 1.1;\n"
        '        proxy_set_header Connection "";\n'
        "        proxy_set_header Authorization $http_authorization;\n"
        "        proxy_buffering off;\n"
        "        proxy_read_timeout 300s;\n"
        "    }\n}\n"
    )


def write_compose(settings: Settings, stage: str, replicas: int) -> Path:
    """Write compose.yaml and nginx.conf under data/run/compose/; return the compose file."""
    import yaml

    from aria.files import atomic_write_text

    folder = settings.aria_data_dir / "run" / "compose"
    document = render_compose(settings, stage, replicas)
    atomic_write_text(folder / "nginx.conf", render_nginx_conf(replicas))
    path = folder / "compose.yaml"
    atomic_write_text(path, yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return path


def compose_command(path: Path, action: str) -> DockerCommand:
    """`docker compose -f <path> up -d` or `down`."""
    tail = ["up", "-d"] if action == "up" else ["down"]
    return DockerCommand(["docker", "compose", "-f", str(path), *tail])


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
    replicas: int = 2


def _run(command: DockerCommand, env: dict[str, str] | None = None) -> int:
    log.info("%s", command.display())
    return subprocess.call(command.argv, env=env)


def main(cfg: DockerConfig, settings: Settings) -> int:
    """Run the action on `settings`; returns docker's exit code (2 when docker or the model is
    missing). What it does is logged; docker's own output is docker's."""
    if shutil.which("docker") is None:
        log.error("the docker CLI is not on PATH; install Docker or use `make serve-ft`")
        return 2
    if cfg.action == "stop":
        return _run(stop_command())
    if cfg.action == "logs":
        return _run(logs_command())
    if cfg.action in ("compose-up", "compose-down"):
        path = settings.aria_data_dir / "run" / "compose" / "compose.yaml"
        if cfg.action == "compose-down":
            return _run(compose_command(path, "down"))
        try:
            path = write_compose(settings, cfg.stage, cfg.replicas)
        except (ServeError, ValueError) as error:
            log.error("%s", error)
            return 2
        code = _run(build_image_command())
        if code != 0:
            return code
        # compose fills each `environment` name from the CLI's own environment.
        env = forwarded_env(settings, build_run_command(settings, cfg.stage))
        code = _run(compose_command(path, "up"), env=env)
        if code == 0:
            log.info("%s replicas behind %s (nginx, %s)", cfg.replicas, settings.base_url, path)
        return code
    try:
        run = build_run_command(settings, cfg.stage, cfg.gpus or None)
    except ServeError as error:
        log.error("%s", error)
        return 2
    code = _run(build_image_command())
    if code != 0:
        return code
    code = _run(run, env=forwarded_env(settings, run))
    if code == 0:
        log.info(
            "started %s: %s (`make docker-logs`, `make docker-stop`; `make health` once the "
            "model is loaded)",
            CONTAINER,
            settings.base_url,
        )
    return code


def parse_args(argv: list[str] | None = None) -> DockerConfig:
    """Command-line flags → DockerConfig."""
    parser = argparse.ArgumentParser(description="vLLM in Docker (official image, NVIDIA GPU)")
    parser.add_argument("action", choices=("up", "stop", "logs", "compose-up", "compose-down"))
    parser.add_argument("--replicas", type=int, default=DockerConfig.replicas)
    parser.add_argument("--stage", choices=STAGES, default=DockerConfig.stage)
    parser.add_argument(
        "--gpus", default=DockerConfig.gpus, help="docker --gpus value; '' for none"
    )
    return DockerConfig(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    raise SystemExit(main(parse_args(), settings))
