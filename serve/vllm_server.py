"""Serve a model of the active profile with vLLM's OpenAI-compatible server.

    python -m serve.vllm_server --stage aria-ft-dpo               # make serve-ft (foreground)
    python -m serve.vllm_server --stage base --background         # returns once /health answers
    python -m serve.vllm_server --stop                            # make serve-stop
    python -m serve.vllm_server --stage aria-ft-dpo --dry-run     # the command, nothing started

Everything comes from `aria.settings` (VLLM_* variables, `.env`): the command is
serve.command's (the stage's model, VLLM_SERVED_NAME on VLLM_HOST:VLLM_PORT with VLLM_API_KEY,
the engine's memory flags), the process serve.process's. Its pid goes to data/run/vllm-<port>.pid
and its output to data/logs/vllm-<port>.log (also shown in the terminal in the foreground).
SIGINT/SIGTERM or `--stop` end it: SIGTERM to its process group, SIGKILL after a timeout, pid
file removed. Code that starts a server itself calls serve.process.start_server.
A dry run prints its listing on stdout; what a start or a stop tells a person is logged (stderr).
"""

from __future__ import annotations

import argparse
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from aria.logs import setup_logging
from aria.settings import STAGES, Settings, get_settings
from serve.command import Engine, ServeCommand, ServeError, build_command, detect_engine
from serve.process import (
    DEFAULT_READY_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    ServerHandle,
    check_port_free,
    launch,
    log_path_for,
    pid_path,
    stop_recorded_server,
)

log = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    """What `python -m serve.vllm_server` does; the rest comes from aria.settings."""

    stage: str | None = None
    stop: bool = False
    background: bool = False
    port: int | None = None  # overrides VLLM_PORT
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S
    dry_run: bool = False  # print the command, its environment and the plan; start nothing
    engine: Engine | None = None  # default: this machine's (detect_engine)
    card_gb: float | None = None  # dry run: the GPU's memory, to say whether the plan fits


class _Terminated(Exception):
    """Raised in the main thread by the SIGTERM handler."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


def main(cfg: ServeConfig, settings: Settings) -> int:
    """Start (foreground or background) or stop the server on `settings`; returns the exit
    code. A dry run prints its listing (the command's result); the rest is logged."""
    if cfg.port is not None:
        settings = settings.model_copy(update={"vllm_port": cfg.port})
    port = settings.vllm_port
    if cfg.stop:
        log.info("%s", stop_recorded_server(settings, port, cfg.stop_timeout_s))
        return 0
    if cfg.stage is None:
        log.error("give --stage base|aria-ft-sft|aria-ft-dpo, or --stop")
        return 2
    engine = cfg.engine or detect_engine()
    try:
        command = build_command(settings, cfg.stage, engine, require_model=not cfg.dry_run)
        if cfg.dry_run:
            print("\n".join(dry_run_lines(command, engine, cfg.stage, cfg.card_gb)))
            return 0
        check_port_free(settings, settings.vllm_host, port)
    except ServeError as error:
        log.error("%s", error)
        return 1
    log_path = log_path_for(settings, port)
    log.info("engine: %s · stage: %s · log: %s", engine, cfg.stage, log_path)
    if command.plan is not None:
        log.info("%s", "\n".join(command.plan.lines()))
    log.info("%s", command.display())
    handle = launch(
        command,
        host=settings.vllm_host,
        port=port,
        served_name=settings.vllm_served_name,
        model=command.argv[command.argv.index("--model") + 1],
        log_path=log_path,
        pid_file=pid_path(settings, port),
        tee=not cfg.background,
    )
    if cfg.background:
        return wait_ready_in_background(handle, cfg)
    return serve_until_stopped(handle, cfg, log_path)


def wait_ready_in_background(handle: ServerHandle, cfg: ServeConfig) -> int:
    """Return 0 once /health answers, leaving the server running; stop it and return 1 if it
    does not get ready."""
    try:
        seconds = handle.wait_ready(cfg.ready_timeout_s)
    except ServeError as error:
        handle.stop(cfg.stop_timeout_s)
        log.error("%s", error)
        return 1
    log.info(
        "ready in %.1f s at %s (pid %s); stop it with `make serve-stop`",
        seconds,
        handle.base_url,
        handle.pid,
    )
    return 0


def serve_until_stopped(handle: ServerHandle, cfg: ServeConfig, log_path: Path) -> int:
    """Serve in the foreground until Ctrl-C, SIGTERM or `make serve-stop`; the server is stopped
    on every way out. Returns the exit code."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        seconds = handle.wait_ready(cfg.ready_timeout_s)
        log.info(">>> ready in %.1f s at %s (Ctrl-C stops)", seconds, handle.base_url)
        code = handle.process.wait()
        if code in (0, -signal.SIGTERM):  # `make serve-stop` from another terminal
            log.info("the vLLM server stopped (exit code %s)", code)
            return 0
        log.error("the vLLM server exited with code %s; see %s", code, log_path)
        return 1
    except (KeyboardInterrupt, _Terminated):
        log.info("stopping the vLLM server…")
        handle.stop(cfg.stop_timeout_s)
        return 0
    except ServeError as error:
        handle.stop(cfg.stop_timeout_s)
        log.error("%s", error)
        return 1
    finally:
        handle.stop(cfg.stop_timeout_s)


def dry_run_lines(
    command: ServeCommand, engine: Engine, stage: str, card_gb: float | None
) -> list[str]:
    """What a dry run prints: the engine, the exact command with its environment (secrets
    masked), the memory plan and, given the card's memory, whether the plan fits it."""
    lines = [f"dry run · engine: {engine} · stage: {stage} (nothing started)", command.display()]
    if command.unset:
        lines.append(f"unset in the server's environment: {', '.join(command.unset)}")
    if command.plan is None:
        lines.append(
            "memory plan: none (CPU engine, or VLLM_KV_CACHE_MEMORY_BYTES fixes the KV cache)"
        )
        return lines
    lines += command.plan.lines()
    if card_gb is not None:
        fits = command.plan.total_gb <= card_gb
        lines.append(
            f"  on a {card_gb:g} GB card: {'fits' if fits else 'does NOT fit'} "
            f"({command.plan.total_gb:.2f} GB of {card_gb:g} GB)"
        )
    return lines


def make_parser() -> argparse.ArgumentParser:
    """The command line of `python -m serve.vllm_server`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--stage", choices=STAGES, help="which model of the profile to serve")
    action.add_argument("--stop", action="store_true", help="stop the server on VLLM_PORT")
    parser.add_argument("--background", action="store_true", help="return once /health is OK")
    parser.add_argument("--port", type=int, help="override VLLM_PORT")
    parser.add_argument("--ready-timeout-s", type=float, default=DEFAULT_READY_TIMEOUT_S)
    parser.add_argument("--stop-timeout-s", type=float, default=DEFAULT_STOP_TIMEOUT_S)
    parser.add_argument(
        "--dry-run", action="store_true", help="print command, environment and plan; start nothing"
    )
    parser.add_argument("--engine", choices=("cpu", "gpu"), help="default: this machine's")
    parser.add_argument("--card-gb", type=float, help="dry run: the GPU's memory in GB")
    return parser


def parse_args(argv: list[str] | None = None) -> ServeConfig:
    """Command-line flags → ServeConfig."""
    return ServeConfig(**vars(make_parser().parse_args(argv)))


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    raise SystemExit(main(parse_args(), settings))
